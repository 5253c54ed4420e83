#!/usr/bin/env bash
# Starts virtlogd and libvirtd without systemd (containers, CI), idempotently.
#
#   scripts/start-libvirt.sh            start if needed, then wait for qemu:///system
#                                       (and hand swtpm's local CA to the swtpm user)
#   LIBVIRT_START_TIMEOUT=60 scripts/start-libvirt.sh
#
# - virtlogd / libvirtd are started with -d when not running (found via their pid files).
# - A running libvirtd is restarted when it cannot serve the qemu driver or the storage
#   driver (e.g. it was started by `install-deps.sh build`, before
#   libvirt-daemon-driver-{qemu,storage,network} were installed), or when a driver module
#   on disk is newer than the daemon process.
# - Then waits until `virsh -c qemu:///system version` answers. The very first answer after
#   installing QEMU takes ~8 s because libvirt probes the QEMU binary (cached afterwards in
#   /var/cache/libvirt/qemu/capabilities).
#
# qemu.conf: nothing is changed by default. Guests run fine as the default "libvirt-qemu"
# user here (no AppArmor/SELinux in the container; cgroup v1 controllers are usable), and
# libvirt's DAC driver chowns kernel/initrd/disk files to that user while a guest runs.
# The one case that breaks is a guest file below a directory the qemu user cannot enter
# (e.g. a checkout under /root, mode 0700): QEMU then fails with "Permission denied".
# Only in that case, and only if VIRTDECK_QEMU_AS_ROOT=1 is set, this script appends
#   user = "root" / group = "root"
# to /etc/libvirt/qemu.conf (once, marked with a comment) and restarts libvirtd.
set -euo pipefail

URI=qemu:///system
TIMEOUT=${LIBVIRT_START_TIMEOUT:-30}
QEMU_CONF=/etc/libvirt/qemu.conf
MARK="# added by virtdeck scripts/start-libvirt.sh"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ "$(id -u)" != 0 ]; then
  exec sudo -E "$0" "$@"
fi
for b in virtlogd libvirtd virsh; do
  command -v "$b" >/dev/null || { echo "$b not installed (run scripts/install-deps.sh test)" >&2; exit 1; }
done

log() { echo "start-libvirt: $*" >&2; }

# alive = exists and not a zombie (PID 1 in this container reaps lazily)
alive() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# pid of a daemon from its pid file, if that process is alive and is that daemon
daemon_pid() {
  local pid=""
  [ -r "/run/$1.pid" ] && pid=$(tr -dc 0-9 <"/run/$1.pid")
  [ -n "$pid" ] && alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] &&
    echo "$pid"
}

# process start time in seconds since the epoch
proc_start() {
  local ticks btime hz
  ticks=$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f20)
  btime=$(sed -n 's/^btime //p' /proc/stat)
  hz=$(getconf CLK_TCK)
  echo $((btime + ticks / hz))
}

stop_daemon() {
  local pid=$1 name=$2
  log "stopping $name (pid $pid)"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    alive "$pid" || return 0
    sleep 0.2
  done
  log "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
  kill -9 "$pid" 2>/dev/null || true
  sleep 0.5
}

wait_ready() {
  local deadline=$((SECONDS + TIMEOUT))
  until virsh -q -c "$URI" version >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "libvirtd did not answer on $URI within ${TIMEOUT}s"
      virsh -c "$URI" version >&2 || true
      return 1
    fi
    sleep 0.5
  done
}

# Does the running libvirtd serve everything the tests need?
libvirtd_healthy() {
  local pid=$1 started f caps
  # (captured first: with pipefail, `virsh | grep -q` can fail on SIGPIPE)
  caps=$(timeout 20 virsh -q -c "$URI" capabilities 2>/dev/null) || caps=""
  grep -q "<domain type='qemu'" <<<"$caps" || {
    log "libvirtd has no working qemu driver"; return 1; }
  timeout 20 virsh -q -c "$URI" pool-list --all >/dev/null 2>&1 || {
    log "libvirtd has no working storage driver"; return 1; }
  timeout 20 virsh -q -c "$URI" net-list --all >/dev/null 2>&1 || {
    log "libvirtd has no working network driver"; return 1; }
  # Driver modules (re)installed after the daemon started (ctime = install time; 2 s of
  # slack because the computed start time is rounded down).
  started=$(($(proc_start "$pid") + 2))
  for f in /usr/lib/*/libvirt/connection-driver/*.so /usr/lib/*/libvirt/storage-backend/*.so; do
    [ -e "$f" ] || continue
    if [ "$(stat -c %Z "$f")" -gt "$started" ]; then
      log "$f is newer than libvirtd"; return 1
    fi
  done
}

start_libvirtd() {
  log "starting libvirtd"
  libvirtd -d
  wait_ready
}

maybe_run_qemu_as_root() {
  # Can the configured qemu user reach files in this checkout?
  local u
  u=$(sed -n 's/^[[:space:]]*user[[:space:]]*=[[:space:]]*"\(.*\)".*/\1/p' "$QEMU_CONF" | tail -n1)
  u=${u:-libvirt-qemu}
  [ "$u" != root ] || return 1
  id "$u" >/dev/null 2>&1 || return 1
  if setpriv --reuid="$u" --regid="$(id -g "$u")" --init-groups test -x "$repo" 2>/dev/null; then
    return 1 # fine, nothing to do
  fi
  if [ "${VIRTDECK_QEMU_AS_ROOT:-0}" != 1 ]; then
    log "WARNING: qemu user '$u' cannot enter $repo; guests using files from there will"
    log "  fail with 'Permission denied'. Move the files, or rerun with VIRTDECK_QEMU_AS_ROOT=1."
    return 1
  fi
  grep -qF "$MARK" "$QEMU_CONF" && return 1
  log "configuring QEMU to run as root in $QEMU_CONF"
  # Run QEMU as root so it can open guest files anywhere; fine in a throwaway container,
  # not something to do on a real host.
  printf '\n%s\nuser = "root"\ngroup = "root"\n' "$MARK" >>"$QEMU_CONF"
  return 0
}

# --- virtlogd (needed for <serial><log file=.../> and the qemu driver's own logs) -----------
if ! daemon_pid virtlogd >/dev/null; then
  log "starting virtlogd"
  virtlogd -d
fi

# --- libvirtd -------------------------------------------------------------------------------
conf_changed=0
if maybe_run_qemu_as_root; then conf_changed=1; fi

pid=$(daemon_pid libvirtd || true)
if [ -z "$pid" ]; then
  start_libvirtd
else
  if [ "$conf_changed" = 1 ] || ! { wait_ready && libvirtd_healthy "$pid"; }; then
    stop_daemon "$pid" libvirtd
    start_libvirtd
  fi
fi

# --- swtpm's local CA (TPM 2.0 guests) ---------------------------------------------------
# swtpm_setup runs as qemu.conf's swtpm_user ("tss" unless set) and signs each new vTPM's
# certificates with the CA in /var/lib/swtpm-localca, taking a lock file there. A libvirtd
# started before swtpm-tools created "tss" runs it as root instead, and leaves that CA
# root's: every later vTPM then fails with "Could not run '/usr/bin/swtpm_setup'". The
# files are made the swtpm user's (root can use them either way).
swtpm_user=$(sed -n 's/^[[:space:]]*swtpm_user[[:space:]]*=[[:space:]]*"\(.*\)".*/\1/p' "$QEMU_CONF" | tail -n1)
swtpm_user=${swtpm_user:-tss}
if [ -d /var/lib/swtpm-localca ] && id "$swtpm_user" >/dev/null 2>&1 &&
  [ -n "$(find /var/lib/swtpm-localca ! -user "$swtpm_user" -print -quit)" ]; then
  log "giving swtpm's local CA (/var/lib/swtpm-localca) to $swtpm_user"
  chown -R "$swtpm_user" /var/lib/swtpm-localca
fi

if ! libvirtd_healthy "$(daemon_pid libvirtd)"; then
  log "libvirtd is running but still lacks drivers; are libvirt-daemon-driver-* installed?"
  exit 1
fi
log "libvirtd ready: $(virsh -q -c "$URI" version | sed -n 's/^Running hypervisor: //p')"
