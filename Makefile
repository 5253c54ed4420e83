# virtdeck — the two commands a new admin needs:
#   make demo   install what is missing, build, run on the built-in demo host
#   make test   install test dependencies (libvirt, QEMU, Chromium), build the test guests, run every test
SHELL := /bin/bash
CARGO ?= cargo
DEMO_LISTEN ?= 0.0.0.0:9443
DEMO_DATA ?= target/demo-data

.PHONY: demo build test deps test-deps assets lint fmt clean-demo bench deb rpm packages package-deps test-packages

# The package the upgrade test starts from: the last commit before packages existed
# (its database lacks the migrations added since).
PREVIOUS_PACKAGE_COMMIT ?= 5e308f9

deps:
	scripts/install-deps.sh build

test-deps:
	scripts/install-deps.sh test
	scripts/start-libvirt.sh
	scripts/build-test-guest.sh
	scripts/build-test-image.sh

# Browser code vendored from npm (noVNC, xterm.js), pinned by vendor-js/package-lock.json,
# into static/vendor/; it is embedded in the binary, so it must exist before cargo build.
assets:
	scripts/vendor-assets.sh

build: deps assets
	$(CARGO) build --release --locked

demo: build
	./target/release/virtdeck serve --demo --data-dir $(DEMO_DATA) --listen $(DEMO_LISTEN)

package-deps:
	scripts/install-deps.sh package

# Installable packages of the release binary (assets embedded): target/packages/*.deb, *.rpm
packages: deps assets package-deps
	$(CARGO) build --release --locked
	scripts/package.sh --profile release --out target/packages

deb rpm: packages

# The packages tests/real/packages.rs installs: today's (dev binary) and the previous version.
test-packages: assets
	$(CARGO) build --locked --bin virtdeck
	scripts/package.sh --profile dev --out target/test-packages
	scripts/package.sh --previous $(PREVIOUS_PACKAGE_COMMIT) --out target/test-packages

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

test: test-deps assets lint test-packages
	$(CARGO) test --locked --all-targets -- --test-threads=4

# VNC proxy vs websockify on one TCP source: throughput, latency, memory with 200 sessions;
# then virtdeck at scale (1,000-VM host under wrk, Chromium, memory, start-up). Writes
# target/bench/report.md, report.json and the results in docs/benchmarks.md.
bench: test-deps assets
	scripts/install-deps.sh bench
	$(CARGO) build --release --locked
	$(CARGO) build --release --locked --example libvirt_floor
	rm -f target/bench/console_proxy.json
	$(CARGO) bench --locked --bench console_proxy
	rm -f target/bench/upload.json
	scripts/start-libvirt.sh
	$(CARGO) bench --locked --bench upload
	rm -f target/bench/migration.json
	$(CARGO) bench --locked --bench migration
	rm -f target/bench/fleet.json
	$(CARGO) bench --locked --bench fleet
	rm -f target/bench/boot.json
	$(CARGO) bench --locked --bench boot
	rm -f target/bench/backup.json
	$(CARGO) bench --locked --bench backup
	$(CARGO) bench --locked --bench scale

fmt:
	$(CARGO) fmt

clean-demo:
	rm -rf $(DEMO_DATA)
