#!/usr/bin/env bash
# Installs what virtdeck needs on Debian 12 (bookworm), idempotently.
#   scripts/install-deps.sh build   libvirt and OpenSSL headers (security keys), pkg-config (enough for `make demo`)
#   scripts/install-deps.sh test    + libvirtd, QEMU (backports), chromium, busybox, kernel
#   scripts/install-deps.sh bench   + wrk (HTTP load generator) for `make bench`
set -euo pipefail
what=${1:-build}
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive

build_pkgs=(pkg-config libvirt-dev libvirt-daemon libssl-dev gcc make genisoimage)
backports_pkgs=(qemu-system-x86 libvirt-dev libvirt-daemon-system libvirt-daemon-driver-qemu
  libvirt-daemon-driver-storage libvirt-daemon-driver-network libvirt-clients qemu-utils)
test_pkgs=(chromium chromium-driver busybox-static cpio xz-utils iproute2 websockify
  python3-websockify genisoimage passwd)

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
fi
# `make bench`: the test set (Chromium, websockify) plus the HTTP load generator.
if [ "$what" = bench ]; then
  need=$(missing "${test_pkgs[@]}" wrk)
  if [ -n "${need// /}" ]; then
    apt_update
    $SUDO apt-get install -y -qq --no-install-recommends $need
  fi
fi
