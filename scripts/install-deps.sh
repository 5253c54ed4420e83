#!/usr/bin/env bash
# Installs what virtdeck needs on Debian 12 (bookworm), idempotently.
#   scripts/install-deps.sh build   libvirt and OpenSSL headers (security keys), pkg-config (enough for `make demo`)
#   scripts/install-deps.sh test    + libvirtd, QEMU (backports), chromium, busybox, kernel,
#                                   OVMF, swtpm, the Debian test image's builders (mmdebstrap, GRUB),
#                                   virt-sysprep (guestfs-tools; its appliance needs a kernel in /boot),
#                                   openapi-spec-validator (PyPI, in target/pyvenv)
#   scripts/install-deps.sh bench   + wrk (HTTP load generator), virt-install (the boot comparison) for `make bench`
#   scripts/install-deps.sh package cargo-deb, cargo-generate-rpm (pinned), dpkg-dev, rpm (`make deb`,
#                                   `make rpm`; `test` installs them too: the package tests need them)
set -euo pipefail
what=${1:-build}
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive

build_pkgs=(pkg-config libvirt-dev libvirt-daemon libssl-dev gcc make genisoimage)
backports_pkgs=(qemu-system-x86 libvirt-dev libvirt-daemon-system libvirt-daemon-driver-qemu
  libvirt-daemon-driver-storage libvirt-daemon-driver-network libvirt-clients qemu-utils)
package_pkgs=(dpkg-dev rpm systemd)
# cargo subcommands that build the packages, pinned (cargo install --locked).
package_tools=(cargo-deb@3.8.0 cargo-generate-rpm@0.21.1)
test_pkgs=(chromium chromium-driver busybox-static cpio xz-utils iproute2 websockify
  python3-websockify genisoimage passwd python3-venv
  mmdebstrap e2fsprogs dosfstools mtools gdisk grub-common grub-pc-bin
  ovmf swtpm swtpm-tools
  guestfs-tools linux-image-cloud-amd64)

missing() {
  local p out=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p")
  done
  echo "${out[@]:-}"
}

ensure_backports() {
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" |
      $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
    updated=0
  fi
}

updated=${updated:-0}
apt_update() {
  if [ "$updated" = 0 ]; then
    $SUDO apt-get update -qq || $SUDO apt-get update -qq -o Acquire::Retries=3 || true
    updated=1
  fi
}

ensure_backports
need=$(missing "${backports_pkgs[@]}")
if [ "$what" = build ]; then need=$(missing "${build_pkgs[@]}" libvirt-dev); fi
if [ -n "${need// /}" ]; then
  apt_update
  $SUDO apt-get install -y -qq -t bookworm-backports --no-install-recommends $need
fi
need=$(missing "${build_pkgs[@]}")
if [ -n "${need// /}" ]; then
  apt_update
  $SUDO apt-get install -y -qq -t bookworm-backports --no-install-recommends $need
fi
# npm (for scripts/vendor-assets.sh): Debian's package, unless a Node.js install already has it.
if ! command -v npm >/dev/null; then
  apt_update
  $SUDO apt-get install -y -qq --no-install-recommends npm
fi
if [ "$what" = test ]; then
  need=$(missing "${test_pkgs[@]}")
  if [ -n "${need// /}" ]; then
    apt_update
    $SUDO apt-get install -y -qq --no-install-recommends $need
  fi
  # The OpenAPI document's validator (tests/fast/openapi.rs): bookworm has no package of
  # it, so PyPI's, pinned, in a venv under target/ (nothing is done when it is there).
  repo=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
  venv=$repo/target/pyvenv
  validator_version=0.9.0
  installed=$("$venv/bin/pip" show openapi-spec-validator 2>/dev/null || true)
  if ! grep -qx "Version: $validator_version" <<<"$installed"; then
    py=/usr/bin/python3
    [ -x "$py" ] || py=python3
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "openapi-spec-validator==$validator_version"
  fi
fi
# `make bench`: the test set (Chromium, websockify) plus the HTTP load generator.
if [ "$what" = bench ]; then
  need=$(missing "${test_pkgs[@]}" wrk virtinst openssl)
  if [ -n "${need// /}" ]; then
    apt_update
    $SUDO apt-get install -y -qq --no-install-recommends $need
  fi
fi
# Packaging: Debian tools, rpm (to read the .rpm back), and the two cargo subcommands.
if [ "$what" = test ] || [ "$what" = package ]; then
  need=$(missing "${package_pkgs[@]}")
  if [ -n "${need// /}" ]; then
    apt_update
    $SUDO apt-get install -y -qq --no-install-recommends $need
  fi
  export PATH=$HOME/.cargo/bin:$PATH
  for tool in "${package_tools[@]}"; do
    name=${tool%@*} version=${tool#*@}
    if ! "$name" --version 2>/dev/null | grep -qx "$name $version"; then
      cargo install --quiet --locked "$tool"
    fi
  done
fi
