#!/usr/bin/env bash
# Builds a small Debian 12 cloud disk image for virtdeck's real-guest tests, from Debian
# packages only, without mounting anything.
#
#   scripts/build-test-image.sh [OUTDIR]      (default: target/test-image)
#
# Output: OUTDIR/debian-12-virtdeck.qcow2 (compressed qcow2, ~250 MiB, ~1.4 GiB virtual)
#
# What is in it: systemd, cloud-init (NoCloud seeds only; it does not configure the
# network, systemd-networkd runs DHCP without holding up boot), openssh-server,
# qemu-guest-agent, mokutil, growpart and Debian's signed cloud kernel. It boots under
# BIOS (GRUB in the MBR and a BIOS boot partition) and under UEFI with or without Secure
# Boot (Debian's Microsoft-signed shim, Debian-signed GRUB and kernel on the ESP as the
# removable-media path EFI/BOOT/BOOTX64.EFI). The kernel writes to ttyS0, where systemd
# runs a login prompt. No user can log in until cloud-init makes one; the machine-id is
# empty and there are no SSH host keys, so every VM made from it gets its own.
#
# Disk layout (GPT): 1 BIOS boot (1 MiB), 2 ESP "ESP" (FAT, 64 MiB), 3 root "root"
# (ext4, last, so that cloud-init's growpart can grow it).
#
# Outputs are cached: nothing is done when the image exists and is newer than this
# script. FORCE=1 rebuilds. Needs (as root): mmdebstrap, e2fsprogs, dosfstools, mtools,
# gdisk, grub-common, grub-pc-bin, qemu-utils, python3 (scripts/install-deps.sh test installs them).
set -euo pipefail

script=$(readlink -f "${BASH_SOURCE[0]}")
repo=$(cd "$(dirname "$script")/.." && pwd)
out=${1:-$repo/target/test-image}
mkdir -p "$out"
out=$(cd "$out" && pwd)
image=$out/debian-12-virtdeck.qcow2

if [ "${FORCE:-0}" != 1 ] && [ -s "$image" ] && [ "$image" -nt "$script" ]; then
  echo "test image up to date: $image"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "build-test-image.sh must run as root (mmdebstrap, chroot)" >&2; exit 1; }
for tool in mmdebstrap mkfs.ext4 mkfs.vfat mcopy sgdisk grub-mkimage qemu-img; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/install-deps.sh test" >&2; exit 1; }
done
[ -s /usr/lib/grub/i386-pc/boot.img ] || { echo "missing GRUB's BIOS images: install grub-pc-bin" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/var/tmp}/virtdeck-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
started=$(date +%s)

# --- root file system ------------------------------------------------------------------
packages=(
  systemd-sysv udev dbus linux-image-cloud-amd64 initramfs-tools
  cloud-init cloud-guest-utils fdisk e2fsprogs openssh-server sudo
  qemu-guest-agent mokutil ca-certificates less
)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mmdebstrap --variant=minbase --include="$(IFS=,; echo "${packages[*]}")" \
  --aptopt='Acquire::Retries "3"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='chroot "$1" systemctl enable systemd-networkd serial-getty@ttyS0.service' \
  --customize-hook='chroot "$1" systemctl mask systemd-networkd-wait-online.service' \
  bookworm "$rootfs" "$mirror" "http://deb.debian.org/debian-security bookworm-security"

kver=$(basename "$(find "$rootfs/boot" -name 'vmlinuz-*' -print -quit)")
kver=${kver#vmlinuz-}
[ -n "$kver" ] && [ -s "$rootfs/boot/initrd.img-$kver" ] || { echo "no kernel/initrd in the image" >&2; exit 1; }

echo debian >"$rootfs/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$rootfs/etc/hosts"
printf 'LABEL=root\t/\text4\tdefaults,errors=remount-ro\t0\t1\n' >"$rootfs/etc/fstab"
: >"$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id" "$rootfs"/etc/ssh/ssh_host_*
cat >"$rootfs/etc/systemd/network/50-dhcp.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=yes
EOF
cat >"$rootfs/etc/cloud/cloud.cfg.d/90-virtdeck-test-image.cfg" <<'EOF'
# virtdeck's test image: seeds come on a NoCloud (cidata) disk; the network is
# systemd-networkd's DHCP, so cloud-init leaves it alone.
datasource_list: [ NoCloud, None ]
network: {config: disabled}
# The image has no locales package: C.UTF-8 is built into the C library.
locale: C.UTF-8
# The host name cloud-init sets resolves (sudo asks for it).
manage_etc_hosts: true
EOF
rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log

grub_cfg() {
  cat <<EOF
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
search --no-floppy --label root --set=root
menuentry 'Debian GNU/Linux 12 (virtdeck test image)' {
  linux /boot/vmlinuz-$kver root=LABEL=root ro console=tty0 console=ttyS0,115200
  initrd /boot/initrd.img-$kver
}
EOF
}
mkdir -p "$rootfs/boot/grub"
grub_cfg >"$rootfs/boot/grub/grub.cfg"

root_mib=$(($(du -sm "$rootfs" | cut -f1) * 13 / 10 + 256))
mkfs.ext4 -q -L root -d "$rootfs" "$work/root.img" "${root_mib}M"

# --- ESP: shim (Microsoft-signed) loads GRUB (Debian-signed), which reads
# EFI/debian/grub.cfg on the same partition. -----------------------------------------------
mkdir "$work/efi"
(cd "$work/efi" && apt-get download -qq -o APT::Sandbox::User=root shim-signed grub-efi-amd64-signed)
for deb in "$work"/efi/*.deb; do dpkg-deb -x "$deb" "$work/efi/x"; done
mkfs.vfat -n ESP -C "$work/esp.img" $((64 * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT ::/EFI/debian
mcopy -i "$work/esp.img" "$work/efi/x/usr/lib/shim/shimx64.efi.signed" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$work/esp.img" "$work/efi/x/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed" ::/EFI/BOOT/grubx64.efi
grub_cfg >"$work/grub.cfg"
mcopy -i "$work/esp.img" "$work/grub.cfg" ::/EFI/debian/grub.cfg
mcopy -i "$work/esp.img" "$work/grub.cfg" ::/EFI/BOOT/grub.cfg

# --- the disk ------------------------------------------------------------------------------
disk=$work/disk.img
truncate -s $(((66 + root_mib + 1) * 1024 * 1024)) "$disk"
sgdisk -o -n 1:2048:+1M -t 1:EF02 -c 1:bios \
  -n 2:4096:+64M -t 2:EF00 -c 2:ESP \
  -n 3:135168:0 -t 3:8300 -c 3:root "$disk" >/dev/null
dd if="$work/esp.img" of="$disk" bs=1M seek=2 conv=notrunc,sparse status=none
dd if="$work/root.img" of="$disk" bs=1M seek=66 conv=notrunc,sparse status=none

# --- BIOS: GRUB's core image (with what it needs built in) in the BIOS boot partition ----
mkdir "$work/grub-pc"
cp /usr/lib/grub/i386-pc/boot.img "$work/grub-pc/"
printf 'search --no-floppy --label root --set=root\nset prefix=($root)/boot/grub\n' >"$work/early.cfg"
grub-mkimage -O i386-pc -o "$work/grub-pc/core.img" -c "$work/early.cfg" -p /boot/grub \
  biosdisk part_gpt ext2 search search_label normal configfile linux echo test \
  serial terminal terminfo gzio
# What grub-bios-setup does for a GPT disk, done on the image file (the tool insists on
# guessing the root device of its own directory, which is the build host's disk): the
# core image goes to the BIOS boot partition (LBA 2048), the MBR gets boot.img (keeping
# the protective partition table) pointing at the core image's first sector, and the
# core image's first sector gets the block list of its remaining sectors.
python3 - "$disk" "$work/grub-pc/boot.img" "$work/grub-pc/core.img" <<'PY'
import struct, sys
disk, boot_path, core_path = sys.argv[1:]
core_lba = 2048
boot = bytearray(open(boot_path, "rb").read())
core = bytearray(open(core_path, "rb").read())
core += bytes(-len(core) % 512)
sectors = len(core) // 512
assert len(boot) == 512 and 1 < sectors <= 2048, (len(boot), sectors)
with open(disk, "r+b") as f:
    mbr = f.read(512)
    boot[3:0x5A] = mbr[3:0x5A]                   # BIOS parameter block area
    boot[0x1B8:0x200] = mbr[0x1B8:0x200]         # disk signature, partition table, 55AA
    boot[0x5C:0x64] = struct.pack("<Q", core_lba)  # kernel sector
    boot[0x66:0x68] = b"\x90\x90"               # hard disk: trust the BIOS's drive number
    core[0x1F4:0x200] = struct.pack("<QHH", core_lba + 1, sectors - 1, 0x820)
    f.seek(0); f.write(boot)
    f.seek(core_lba * 512); f.write(core)
PY

qemu-img convert -c -f raw -O qcow2 "$disk" "$image.tmp"
mv "$image.tmp" "$image"
echo "test image: $image ($(du -h "$image" | cut -f1), kernel $kver, $(($(date +%s) - started)) s)"
