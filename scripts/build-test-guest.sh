#!/usr/bin/env bash
# Builds a tiny bootable test guest for virtdeck's integration tests.
#
#   scripts/build-test-guest.sh [OUTDIR]      (default: target/test-guest)
#
# Outputs:
#   OUTDIR/vmlinuz      kernel from Debian's linux-image-cloud-amd64 (extracted, not installed)
#   OUTDIR/initrd.img   gzip'ed newc cpio: busybox-static + /init (+ a few virtio/CD modules)
#   OUTDIR/tree/images/pxeboot/{vmlinuz,initrd.img}   same files, install-tree layout
#   OUTDIR/kernel-version, OUTDIR/cmdline            informational
#
# Boot it with direct kernel boot and cmdline "console=tty0 console=ttyS0,115200".
# The guest prints kernel messages on VGA and serial, then the exact line
#   virtdeck-test-guest ready
# on ttyS0 (and tty1), and runs a root shell on ttyS0 (and on tty1 for VNC) forever.
#
# Outputs are cached: nothing is done when they all exist and are newer than this
# script. Set FORCE=1 to rebuild. Needs: apt-get, dpkg-deb, cpio, gzip; busybox-static
# is used from the host if installed, otherwise its .deb is downloaded too.
set -euo pipefail

script=$(readlink -f "${BASH_SOURCE[0]}")
repo=$(cd "$(dirname "$script")/.." && pwd)
out=${1:-$repo/target/test-guest}
mkdir -p "$out"
out=$(cd "$out" && pwd)
pxe=$out/tree/images/pxeboot
BANNER="virtdeck-test-guest ready"
CMDLINE="console=tty0 console=ttyS0,115200 panic=-1"

fresh() { [ -s "$1" ] && [ "$1" -nt "$script" ]; }
if [ "${FORCE:-0}" != 1 ] && fresh "$out/vmlinuz" && fresh "$out/initrd.img" &&
  fresh "$pxe/vmlinuz" && fresh "$pxe/initrd.img"; then
  echo "test guest up to date in $out"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
work=$(mktemp -d "${TMPDIR:-/tmp}/virtdeck-guest.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- fetch .debs (apt lists are only refreshed if the package is unknown) -------------
have_pkg_info() { apt-cache show --no-all-versions "$1" >/dev/null 2>&1; }
if ! have_pkg_info linux-image-cloud-amd64; then
  echo "apt lists do not know linux-image-cloud-amd64; running apt-get update"
  $SUDO apt-get update -qq
fi
# linux-image-cloud-amd64 is a metapackage; the kernel is in its (candidate's) dependency.
kpkg=$(apt-cache show --no-all-versions linux-image-cloud-amd64 |
  sed -n 's/^Depends: *//p' | tr ',' '\n' | sed 's/[ (].*//' | grep -m1 '^linux-image-')
[ -n "$kpkg" ] || { echo "cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
pkgs=("$kpkg")
bb_host=""
if dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed"; then
  bb_host=$(dpkg -L busybox-static | grep -m1 -E '/s?bin/busybox$')
fi
[ -n "$bb_host" ] || pkgs+=(busybox-static)
echo "downloading ${pkgs[*]}"
sandbox=()
# As root, apt drops to the _apt user for downloads, which cannot write to our 0700 dir.
if [ "$(id -u)" = 0 ]; then sandbox=(-o APT::Sandbox::User=root); fi
(cd "$work" && apt-get download -qq "${sandbox[@]}" "${pkgs[@]}")

mkdir "$work/kpkg"
dpkg-deb -x "$work/$kpkg"_*.deb "$work/kpkg"
vmlinuz=$(find "$work/kpkg/boot" -name "vmlinuz-*" -print -quit)
kver=${vmlinuz##*/vmlinuz-}
kcfg=$work/kpkg/boot/config-$kver
moddir=$work/kpkg/lib/modules/$kver

# The guest relies on these being built in (checked, not assumed).
for opt in SERIAL_8250 SERIAL_8250_CONSOLE VT VT_CONSOLE VGA_CONSOLE DEVTMPFS \
  BLK_DEV_INITRD RD_GZIP; do
  grep -q "^CONFIG_$opt=y" "$kcfg" || { echo "kernel $kver lacks CONFIG_$opt=y" >&2; exit 1; }
done

if [ -z "$bb_host" ]; then
  mkdir "$work/bb"
  dpkg-deb -x "$work"/busybox-static_*.deb "$work/bb"
  bb_host=$work/bb/bin/busybox
fi

# --- initramfs tree --------------------------------------------------------------------
root=$work/root
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,root,etc,run,usr/bin,usr/sbin,lib/modules/"$kver"}
cp "$bb_host" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ "$applet" = busybox ] || [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
if [ "$(id -u)" = 0 ]; then
  # The kernel's built-in initramfs already has /dev/console; this is belt and braces.
  mknod -m 600 "$root/dev/console" c 5 1
  mknod -m 666 "$root/dev/null" c 1 3
fi

# Modules that are =m in the cloud kernel but useful for tests: virtio devices, and
# IDE CD-ROM (i440fx/"pc" machine) + ISO9660 for install-media tests. The cloud kernel has
# no AHCI driver at all, so a q35 SATA CD-ROM is invisible to this guest (use virtio-scsi).
mods=(virtio_pci virtio_net virtio_blk virtio_scsi virtio_console virtio_rng virtio_balloon
  ata_piix sr_mod isofs)
for m in "${mods[@]}"; do
  f=$(find "$moddir/kernel" \( -name "$m.ko" -o -name "${m//_/-}.ko" \) -print -quit)
  [ -n "$f" ] || { echo "module $m not in $kpkg" >&2; exit 1; }
done
# Copy the wanted modules and their dependencies (from .modinfo "depends=").
modinfo_deps() { "$bb_host" strings "$1" | sed -n 's/^depends=//p' | tr ',' ' '; }
declare -A seen=()
queue=("${mods[@]}")
while [ ${#queue[@]} -gt 0 ]; do
  m=${queue[0]}; queue=("${queue[@]:1}")
  m=${m//-/_}
  [ -z "${seen[$m]:-}" ] || continue
  seen[$m]=1
  f=$(find "$moddir/kernel" \( -name "$m.ko" -o -name "${m//_/-}.ko" \) -print -quit)
  [ -n "$f" ] || continue # built in
  rel=${f#"$moddir"/}
  mkdir -p "$root/lib/modules/$kver/$(dirname "$rel")"
  cp "$f" "$root/lib/modules/$kver/$rel"
  for d in $(modinfo_deps "$f"); do queue+=("$d"); done
done
cp "$moddir"/modules.builtin "$moddir"/modules.order "$root/lib/modules/$kver/" 2>/dev/null || true
"$bb_host" depmod -b "$root" "$kver"

cat >"$root/init" <<EOF
#!/bin/sh
# virtdeck test guest init (generated by scripts/build-test-guest.sh)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root PS1='guest# '
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || true
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1
hostname virtdeck-test-guest
for m in ${mods[*]}; do modprobe -q "\$m" 2>/dev/null; done
ip link set lo up 2>/dev/null
for t in ttyS0 tty1; do
  [ -c /dev/\$t ] && echo "$BANNER" >/dev/\$t
done
echo "$BANNER" >/dev/kmsg 2>/dev/null
# Root shells on the serial port and on the VGA text console, respawned forever.
# setsid -c makes the tty the controlling terminal so ^C and job control work.
respawn() {
  while :; do
    setsid -c sh -l </dev/\$1 >/dev/\$1 2>&1
    sleep 1
  done
}
[ -c /dev/tty1 ] && respawn tty1 &
respawn ttyS0 &
while :; do wait; sleep 60; done
EOF
chmod 755 "$root/init"

# --- pack -------------------------------------------------------------------------------
tmp_out=$work/out
mkdir -p "$tmp_out"
cp "$vmlinuz" "$tmp_out/vmlinuz"
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort |
  cpio --quiet -o -H newc -R 0:0) | gzip -9n >"$tmp_out/initrd.img"

mkdir -p "$pxe"
for f in vmlinuz initrd.img; do
  mv -f "$tmp_out/$f" "$out/$f"
  rm -f "$pxe/$f"
  ln "$out/$f" "$pxe/$f" 2>/dev/null || cp "$out/$f" "$pxe/$f"
done
echo "$kver" >"$out/kernel-version"
echo "$CMDLINE" >"$out/cmdline"
echo "built test guest in $out (kernel $kver, initrd $(du -h "$out/initrd.img" | cut -f1))"
