#!/usr/bin/env bash
# Fast (< 3 s) check whether KVM really works, not just whether /dev/kvm exists.
#
#   scripts/kvm-probe.sh        exit 0 "kvm: ok", 1 "kvm: broken: ...", 2 "kvm: unavailable: ..."
#
# It boots a 39-byte multiboot "kernel" under QEMU with -accel kvm (through SeaBIOS and
# QEMU's multiboot option ROM, i.e. real mode -> 32-bit protected mode) whose only job is
# `out 0xf4, 0x2a` to an isa-debug-exit device; QEMU then exits with status
# (0x2a << 1) | 1 = 85. Anything else means KVM is unusable:
#   134 (SIGABRT) "failed to set MSR 0x10a ..." with -cpu host (seen on nested/PVM hosts)
#   124 (timeout) the vCPU runs pathologically slowly or hangs (same hosts, default CPU)
#   0            triple fault / reset
# Both the default CPU model and -cpu host are tried, since they fail differently.
# Under TCG the same probe takes ~0.3 s, so a 2 s limit per run is generous.
set -uo pipefail

QEMU=${QEMU:-qemu-system-x86_64}
LIMIT=${KVM_PROBE_TIMEOUT:-2}

if [ ! -e /dev/kvm ]; then echo "kvm: unavailable: no /dev/kvm"; exit 2; fi
if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
  echo "kvm: unavailable: /dev/kvm not accessible to $(id -un)"; exit 2
fi
command -v "$QEMU" >/dev/null || { echo "kvm: unavailable: $QEMU not installed"; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Multiboot header (a.out kludge, loaded at 1 MiB, entry 0x100020) + code:
#   mov al,0x2a ; out 0xf4,al ; hlt ; jmp $-1
printf '%b' '\x02\xb0\xad\x1b\x00\x00\x01\x00\xfe\x4f\x51\xe4\x00\x00\x10\x00' \
  '\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x20\x00\x10\x00' \
  '\xb0\x2a\xe6\xf4\xf4\xeb\xfd' >"$tmp/probe.mb"

probe() { # $1 = label, rest = extra qemu args
  local label=$1 rc t0 t1 err
  shift
  t0=$(date +%s%N)
  # (subshell: keeps bash's "Aborted" job message out of our output)
  (timeout -k 1 "$LIMIT" "$QEMU" -accel kvm "$@" -machine pc -m 16 -nodefaults \
    -display none -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=4 \
    -kernel "$tmp/probe.mb" </dev/null >/dev/null 2>"$tmp/err"; exit $?) 2>/dev/null
  rc=$?
  t1=$(date +%s%N)
  err=$(grep -v "warning: host doesn't support requested feature" "$tmp/err" | head -n2 | tr '\n' ' ')
  case $rc in
    85) echo "kvm: $label ok ($(((t1 - t0) / 1000000)) ms)"; return 0 ;;
    124 | 137) echo "kvm: broken: $label: no result within ${LIMIT}s (vCPU hung or far too slow)" ;;
    *) echo "kvm: broken: $label: qemu exit $rc: ${err:-no error output}" ;;
  esac
  return 1
}

probe "-cpu host" -cpu host || exit 1
probe "default cpu" || exit 1
echo "kvm: ok"
