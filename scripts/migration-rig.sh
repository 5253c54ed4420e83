#!/usr/bin/env bash
# Two independent libvirt "hosts" on one machine, for live-migration tests.
#
#   scripts/migration-rig.sh up      create what is missing, start both daemons, wait until
#                                    they answer, print KEY=VALUE lines on stdout
#   scripts/migration-rig.sh down    destroy + undefine every domain on both, stop the daemons
#                                    (users, configs, directories and disk files are kept)
#   scripts/migration-rig.sh check   `up`, then prove live p2p migration A -> B (and back),
#                                    and live p2p migration with --copy-storage-all, with
#                                    virsh only; prints timings; removes its guests
#
# Usage from a test:  eval "$(scripts/migration-rig.sh up)"   (or parse the KEY=VALUE lines;
# values are never quoted and contain no spaces). Logs go to stderr. Must run as root.
# Docs: docs/migration-rig.md.
#
# Layout (ROOT=/var/lib/virtdeck-rig, override with VIRTDECK_RIG_ROOT):
#   group vdrig; users vdrig-a, vdrig-b (system users, primary group vdrig, home ROOT/a|b)
#   ROOT/X/run            XDG_RUNTIME_DIR of host X's session libvirtd (pid files, virtlogd)
#   ROOT/X/sock/libvirt-sock   host X's libvirtd socket: group vdrig, mode 0770
#   ROOT/X/.config/libvirt/{libvirtd,qemu}.conf   written (and kept in sync) by `up`
#   ROOT/X/.cache/libvirt/libvirtd.log, .../qemu/log/VM.log   the daemon's and QEMU's logs
#   ROOT/X/pool           per-host disks; storage pool "rig" on host X
#   ROOT/shared           disks/kernels both hosts use; storage pool "rig-shared" on both
#
# Each host is a *session* libvirtd (qemu:///session) run as its own unprivileged user, so
# the two daemons share nothing: own config, own domain list, own host UUID (libvirt refuses
# a migration whose source and destination report the same host UUID), own QEMU user.
#
# How peer-to-peer migration is made possible: with VIR_MIGRATE_PEER2PEER the *source
# daemon* (running as vdrig-a) opens the destination URI itself, through libvirt's remote
# driver, i.e. it needs to be able to connect to B's socket. A session libvirtd performs no
# check of its own on local clients (auth_unix_rw = "none", no uid comparison): whoever can
# connect() to the socket is in. So access is controlled by file permissions only:
#   - the socket is moved out of XDG_RUNTIME_DIR/libvirt (libvirt keeps that 0700) into
#     ROOT/X/sock (unix_sock_dir), a directory the group vdrig can enter (0750),
#   - the socket is created with group vdrig and mode 0770 (unix_sock_group,
#     unix_sock_rw_perms; an unprivileged daemon may chown to a group it is in),
#   - both users have vdrig as their group.
# So A's daemon reaches B with qemu+unix:///session?socket=ROOT/b/sock/libvirt-sock, and B's
# reaches A the same way. Root (the test process) connects through the very same sockets
# (root bypasses file permissions, and the daemon accepts it like any client), so the URI
# root uses and the p2p URI are identical. No TCP listener, no credentials: only root and the
# two rig users can talk to the rig daemons.
#
# The migration data stream itself (QEMU to QEMU, and NBD for --copy-storage-all) is plain
# TCP: the destination picks a port from its migration_port range (distinct per host here,
# and away from the system daemon's default 49152-49215) and tells the source
# "tcp:<hostname>:port"; <hostname> must resolve to this machine (it does: /etc/hosts).
set -euo pipefail

ROOT=${VIRTDECK_RIG_ROOT:-/var/lib/virtdeck-rig}
GROUP=vdrig
HOSTS=(a b)
POOL=rig                 # per-host pool (ROOT/X/pool), defined on each host
SHARED_POOL=rig-shared   # ROOT/shared, defined on both hosts
TIMEOUT=${RIG_TIMEOUT:-120} # seconds to wait for a daemon (first start probes QEMU: slow)
LIBVIRTD=/usr/sbin/libvirtd

script=$(readlink -f "${BASH_SOURCE[0]}")
repo=$(cd "$(dirname "$script")/.." && pwd)

log() { echo "migration-rig: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

user_of() { echo "vdrig-$1"; }
home_of() { echo "$ROOT/$1"; }
uri_of() { echo "qemu+unix:///session?socket=$ROOT/$1/sock/libvirt-sock"; }
pool_dir_of() { echo "$ROOT/$1/pool"; }
other_of() { if [ "$1" = a ]; then echo b; else echo a; fi; }
idx_of() { if [ "$1" = a ]; then echo 0; else echo 1; fi; }
# Fixed, distinct host UUIDs (libvirt compares them to reject "migration to the same host").
host_uuid_of() { echo "6d1f3c2a-8b7e-4f0a-9c55-7264646b000$1"; }

# virsh on host X; a stuck daemon must not hang us forever.
rvirsh() {
  local h=$1
  shift
  timeout "${RVIRSH_TIMEOUT:-60}" virsh -q -c "$(uri_of "$h")" "$@"
}

now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }

# alive = exists and is not a zombie (PID 1 in containers may reap lazily)
alive() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# pid of a daemon ($2 = libvirtd|virtlogd) of host $1, if its pid file names a live process
# that is that daemon and belongs to that host's user
daemon_pid() {
  local h=$1 name=$2 pidfile pid
  pidfile=$(home_of "$h")/run/libvirt/$name.pid
  [ -r "$pidfile" ] || return 1
  pid=$(tr -dc 0-9 <"$pidfile")
  [ -n "$pid" ] && alive "$pid" || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
  [ "$(stat -c %U "/proc/$pid" 2>/dev/null)" = "$(user_of "$h")" ] || return 1
  echo "$pid"
}

# Writes $4 (content) to $1 with owner $2 and mode $3 when it differs; returns 0 if changed.
put_file() {
  local path=$1 owner=$2 mode=$3 content=$4
  if [ -f "$path" ] && [ "$(cat "$path")" = "$content" ]; then
    chown "$owner" "$path"
    chmod "$mode" "$path"
    return 1
  fi
  printf '%s\n' "$content" >"$path.tmp"
  chown "$owner" "$path.tmp"
  chmod "$mode" "$path.tmp"
  mv -f "$path.tmp" "$path"
  return 0
}

require_root_and_tools() {
  [ "$(id -u)" = 0 ] || die "must run as root (it creates users and runs daemons as them)"
  local t
  for t in virsh runuser qemu-img timeout flock; do
    command -v "$t" >/dev/null || die "$t is not installed"
  done
  [ -x "$LIBVIRTD" ] || die "$LIBVIRTD is missing (libvirt-daemon)"
}

# --- users, directories, configs ---------------------------------------------------------

ensure_users_and_dirs() {
  local h u home
  getent group "$GROUP" >/dev/null || { log "creating group $GROUP"; groupadd --system "$GROUP"; }
  install -d -o root -g root -m 0755 "$ROOT"
  for h in "${HOSTS[@]}"; do
    u=$(user_of "$h")
    home=$(home_of "$h")
    if ! getent passwd "$u" >/dev/null; then
      log "creating user $u (home $home)"
      useradd --system --gid "$GROUP" --home-dir "$home" --no-create-home \
        --shell /usr/sbin/nologin --comment "virtdeck migration rig host $h" "$u"
    fi
    [ "$(getent passwd "$u" | cut -d: -f6)" = "$home" ] ||
      die "user $u exists with a home other than $home (VIRTDECK_RIG_ROOT changed?)"
    case " $(id -nG "$u") " in *" $GROUP "*) ;; *) usermod -aG "$GROUP" "$u" ;; esac
    # Home 0750 group vdrig: the other host's daemon must get through to ROOT/X/sock.
    install -d -o "$u" -g "$GROUP" -m 0750 "$home" "$home/sock"
    install -d -o "$u" -g "$GROUP" -m 0700 "$home/run" "$home/.config" "$home/.config/libvirt"
    # setgid: files created in it get group vdrig (the other host may need them after a
    # failed/reverse migration; harmless otherwise)
    install -d -o "$u" -g "$GROUP" -m 2770 "$(pool_dir_of "$h")"
  done
  # Shared storage: both daemons' QEMU (vdrig-a, vdrig-b) read and write here. setgid so new
  # files get group vdrig; files must also be group-readable/writable (mode 0660/0664):
  # QEMU of the *other* host opens them after a migration.
  install -d -o root -g "$GROUP" -m 2770 "$ROOT/shared"
}

# Writes host X's configs; returns 0 when something changed.
write_configs() {
  local h=$1 u home i changed=1 mig disp ws
  u=$(user_of "$h")
  home=$(home_of "$h")
  i=$(idx_of "$h")
  mig=$((49400 + 50 * i))
  disp=$((5960 + 20 * i))
  ws=$((5760 + 20 * i))
  if put_file "$home/.config/libvirt/libvirtd.conf" "$u:$GROUP" 0600 "\
# Written by scripts/migration-rig.sh (overwritten by 'up'). Host $h of the migration rig.
host_uuid = \"$(host_uuid_of "$h")\"
# Socket outside XDG_RUNTIME_DIR, group vdrig, 0770: the other rig daemon (as vdrig-$(other_of "$h"))
# connects here as the peer of a p2p migration; root connects here too.
unix_sock_dir = \"$home/sock\"
unix_sock_group = \"$GROUP\"
unix_sock_rw_perms = \"0770\"
unix_sock_ro_perms = \"0770\"
unix_sock_admin_perms = \"0700\"
auth_unix_rw = \"none\"
auth_unix_ro = \"none\""; then changed=0; fi
  # Port ranges distinct per rig host and away from the system daemon's defaults (5900+,
  # 49152-49215): each daemon checks ports by bind(), but two daemons racing for the same
  # low port fail the QEMU start/migration ("Failed to find an available port").
  # shared_filesystems: ROOT/shared is the same local directory on both "hosts", i.e.
  # shared storage; without this libvirt refuses live migration of a guest with a disk
  # there ("Migration without shared storage is unsafe").
  # (migration_host/migration_address cannot be loopback addresses: libvirt rejects them.)
  if put_file "$home/.config/libvirt/qemu.conf" "$u:$GROUP" 0600 "\
# Written by scripts/migration-rig.sh (overwritten by 'up'). Host $h of the migration rig.
migration_port_min = $mig
migration_port_max = $((mig + 49))
remote_display_port_min = $disp
remote_display_port_max = $((disp + 19))
remote_websocket_port_min = $ws
remote_websocket_port_max = $((ws + 19))
shared_filesystems = [ \"$ROOT/shared\" ]"; then changed=0; fi
  return $changed
}

# --- daemons -------------------------------------------------------------------------------

start_daemon() {
  local h=$1 u home
  u=$(user_of "$h")
  home=$(home_of "$h")
  log "starting libvirtd of host $h (user $u)"
  # A clean environment: the session daemon derives all its paths from HOME and
  # XDG_RUNTIME_DIR. libvirtd is not on an unprivileged PATH, hence the full path.
  # 9>&-: the daemon must not inherit our lock fd (it would hold the lock forever).
  (cd "$home" && runuser -u "$u" -- env -i HOME="$home" USER="$u" LOGNAME="$u" \
    XDG_RUNTIME_DIR="$home/run" PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
    "$LIBVIRTD" -d 9>&-)
}

stop_pid() {
  local pid=$1 what=$2 deadline
  log "stopping $what (pid $pid)"
  kill "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 30))
  while alive "$pid"; do
    if [ $SECONDS -ge $deadline ]; then
      log "$what (pid $pid) ignored SIGTERM; sending SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
      sleep 0.5
      return 0
    fi
    sleep 0.2
  done
}

# Polls `virsh version` until host X answers (or the deadline passes, or the daemon died).
wait_ready() {
  local h=$1 deadline started=$SECONDS
  deadline=$((SECONDS + TIMEOUT))
  until RVIRSH_TIMEOUT=15 rvirsh "$h" version >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      RVIRSH_TIMEOUT=15 rvirsh "$h" version >&2 || true
      die "libvirtd of host $h did not answer on $(uri_of "$h") within ${TIMEOUT}s"
    fi
    # The daemon forks into the background before its drivers initialize; a bad config
    # makes it exit only then. (Grace period: the pid file appears shortly after -d.)
    if [ $((SECONDS - started)) -ge 3 ] && ! daemon_pid "$h" libvirtd >/dev/null; then
      tail -n 15 "$(home_of "$h")/.cache/libvirt/libvirtd.log" >&2 2>/dev/null || true
      die "libvirtd of host $h exited (log: $(home_of "$h")/.cache/libvirt/libvirtd.log)"
    fi
    sleep 0.3
  done
}

# Defines (if missing), starts and autostarts a dir pool on host X.
ensure_pool() {
  local h=$1 name=$2 dir=$3 have
  if ! rvirsh "$h" pool-info "$name" >/dev/null 2>&1; then
    log "host $h: defining pool $name ($dir)"
    rvirsh "$h" pool-define-as "$name" dir --target "$dir" >/dev/null
  fi
  have=$(rvirsh "$h" pool-dumpxml "$name")
  have=$(sed -n 's:.*<path>\(.*\)</path>.*:\1:p' <<<"$have")
  [ "$have" = "$dir" ] || die "host $h: pool $name points at $have, not $dir"
  if [ "$(rvirsh "$h" pool-info "$name" | sed -n 's/^State: *//p')" != running ]; then
    rvirsh "$h" pool-start "$name" >/dev/null
  fi
  rvirsh "$h" pool-autostart "$name" >/dev/null
}

print_env() {
  local h H
  for h in "${HOSTS[@]}"; do
    H=${h^^}
    echo "RIG_${H}_URI=$(uri_of "$h")"
    # The URI the *other* host's daemon uses to reach this one as p2p destination: the
    # same socket (both daemons and root all connect through it).
    echo "RIG_${H}_MIGRATE_URI=$(uri_of "$h")"
    echo "RIG_${H}_POOL_DIR=$(pool_dir_of "$h")"
    echo "RIG_${H}_USER=$(user_of "$h")"
    echo "RIG_${H}_HOST_UUID=$(host_uuid_of "$h")"
  done
  echo "RIG_POOL=$POOL"
  echo "RIG_SHARED_DIR=$ROOT/shared"
  echo "RIG_SHARED_POOL=$SHARED_POOL"
  echo "RIG_GROUP=$GROUP"
}

cmd_up() {
  require_root_and_tools
  ensure_users_and_dirs
  local h pid
  for h in "${HOSTS[@]}"; do
    pid=$(daemon_pid "$h" libvirtd || true)
    if write_configs "$h" && [ -n "$pid" ]; then
      # libvirtd reads its config only at start; running guests survive the restart.
      log "config of host $h changed; restarting its libvirtd"
      stop_pid "$pid" "libvirtd of host $h"
      pid=""
    fi
    [ -n "$pid" ] || start_daemon "$h"
  done
  # Both daemons initialize in parallel; now wait for each.
  for h in "${HOSTS[@]}"; do
    wait_ready "$h"
    ensure_pool "$h" "$POOL" "$(pool_dir_of "$h")"
    ensure_pool "$h" "$SHARED_POOL" "$ROOT/shared"
    log "host $h ready: $(uri_of "$h")"
  done
  print_env
}

# --- down ----------------------------------------------------------------------------------

cmd_down() {
  require_root_and_tools
  local h u home pid vm
  for h in "${HOSTS[@]}"; do
    u=$(user_of "$h")
    home=$(home_of "$h")
    getent passwd "$u" >/dev/null || continue
    pid=$(daemon_pid "$h" libvirtd || true)
    if [ -z "$pid" ]; then
      # Not running: only bother starting it when there is something to clean up
      # (persistent definitions, or guests left by a daemon that died).
      if compgen -G "$home/.config/libvirt/qemu/*.xml" >/dev/null ||
        pgrep -u "$u" -f qemu-system >/dev/null; then
        start_daemon "$h"
        wait_ready "$h"
        pid=$(daemon_pid "$h" libvirtd)
      else
        log "host $h: libvirtd not running, nothing to clean"
      fi
    fi
    if [ -n "$pid" ]; then
      for vm in $(rvirsh "$h" list --all --name); do
        log "host $h: removing domain $vm"
        rvirsh "$h" destroy "$vm" >/dev/null 2>&1 || true
        rvirsh "$h" undefine "$vm" --managed-save --snapshots-metadata \
          --checkpoints-metadata >/dev/null 2>&1 ||
          rvirsh "$h" undefine "$vm" >/dev/null 2>&1 || true
      done
      [ -z "$(rvirsh "$h" list --all --name)" ] || die "host $h: domains remain"
      stop_pid "$pid" "libvirtd of host $h"
    fi
    # The session virtlogd (spawned on demand) would exit after 120 s idle anyway.
    pid=$(daemon_pid "$h" virtlogd || true)
    [ -z "$pid" ] || stop_pid "$pid" "virtlogd of host $h"
  done
  log "rig is down (users, configs and $ROOT kept)"
}

# --- check ---------------------------------------------------------------------------------

CHECK_VMS=()
CHECK_FILES=()
check_cleanup() {
  local vm h f
  for vm in "${CHECK_VMS[@]}"; do
    for h in "${HOSTS[@]}"; do
      rvirsh "$h" destroy "$vm" >/dev/null 2>&1 || true
      rvirsh "$h" undefine "$vm" >/dev/null 2>&1 || true
    done
  done
  for f in "${CHECK_FILES[@]}"; do rm -rf "$f"; done
  for h in "${HOSTS[@]}"; do
    rvirsh "$h" pool-refresh "$POOL" >/dev/null 2>&1 || true
    rvirsh "$h" pool-refresh "$SHARED_POOL" >/dev/null 2>&1 || true
  done
}

# Domain XML of the tiny test guest (tests/fixtures/tiny-guest-domain.xml), plus disks
# given as "path:target" arguments (qcow2, virtio).
guest_xml() {
  local name=$1 dir=$2 serial=$3 spec disks=""
  shift 3
  for spec in "$@"; do
    disks+="<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
    disks+="<source file='${spec%:*}'/><target dev='${spec##*:}' bus='virtio'/></disk>"
  done
  sed -e "s|@NAME@|$name|g" -e "s|@GUEST_DIR@|$dir|g" -e "s|@SERIAL_LOG@|$serial|g" \
    -e "s|</devices>|$disks</devices>|" "$repo/tests/fixtures/tiny-guest-domain.xml"
}

wait_banner() {
  local log=$1 deadline
  deadline=$((SECONDS + 90))
  until grep -aq '^virtdeck-test-guest ready' "$log" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || die "no banner in $log within 90s"
    sleep 0.3
  done
}

# Proves the guest on host X runs and answers: types an arithmetic echo on its serial
# console (the pty QEMU exposes) and waits for the evaluated result in the serial log.
guest_answers() {
  local h=$1 vm=$2 log=$3 pty n
  pty=$(rvirsh "$h" ttyconsole "$vm")
  n=$RANDOM
  # Subshell: never the session leader, so opening the pty cannot make it our controlling
  # terminal. QEMU notices a pty reader/writer only by polling (~1 s), so keep it open and
  # repeat the line; raw -echo so guest output is not echoed back into the guest.
  (
    exec 3<>"$pty"
    stty raw -echo <&3
    deadline=$((SECONDS + 30))
    while [ $SECONDS -lt $deadline ]; do
      printf 'echo rig-alive-$((%d+1))\r' "$n" >&3
      sleep 1.5
      # drain what the guest wrote to the pty (it is also in the log)
      timeout 0.2 cat <&3 >/dev/null || true
      grep -aq "rig-alive-$((n + 1))" "$log" && exit 0
    done
    exit 1
  ) || die "guest $vm on host $h does not answer on its serial console ($log)"
}

# migrate FROM TO VM [extra virsh migrate args...]; sets MIGRATE_MS
migrate() {
  local from=$1 to=$2 vm=$3 t0
  shift 3
  local cmd=(migrate --live --p2p --persistent --undefinesource "$@" "$vm" "$(uri_of "$to")")
  log "virsh -c $(uri_of "$from") ${cmd[*]}"
  t0=$(now_ms)
  RVIRSH_TIMEOUT=300 rvirsh "$from" "${cmd[@]}" || die "migration of $vm $from -> $to failed"
  MIGRATE_MS=$(($(now_ms) - t0))
}

# Asserts VM runs persistently on host $1 and is gone from host $2.
assert_moved() {
  local to=$1 from=$2 vm=$3
  local info names
  # (outputs captured first: with pipefail, `virsh ... | grep -q` fails when grep exits
  # early and virsh gets SIGPIPE)
  [ "$(rvirsh "$to" domstate "$vm")" = running ] || die "$vm is not running on host $to"
  info=$(rvirsh "$to" dominfo "$vm")
  grep -Eq '^Persistent: +yes' <<<"$info" || die "$vm is not persistent on host $to"
  names=$(rvirsh "$from" list --all --name)
  if grep -qx "$vm" <<<"$names"; then
    die "$vm is still defined on host $from"
  fi
}

cmd_check() {
  cmd_up
  local gdir=${VIRTDECK_TEST_GUEST_DIR:-$repo/target/test-guest} shared=$ROOT/shared f
  if ! [ -s "$gdir/vmlinuz" ] || ! [ -s "$gdir/initrd.img" ]; then
    log "test guest missing in $gdir; building it"
    "$repo/scripts/build-test-guest.sh" "$gdir" >&2
  fi
  # Kernel + initrd into the shared dir: both hosts' QEMU need them (the destination QEMU
  # is started with the same command line, before the state is transferred).
  install -d -o root -g "$GROUP" -m 2775 "$shared/test-guest"
  for f in vmlinuz initrd.img; do
    cmp -s "$gdir/$f" "$shared/test-guest/$f" ||
      install -o root -g "$GROUP" -m 0644 "$gdir/$f" "$shared/test-guest/$f"
  done
  trap check_cleanup EXIT

  # --- case 1: shared storage (a qcow2 in the shared dir), live p2p A -> B -> A ----------
  local vm=rigcheck-live-$$ log1 disk1 t0 ms_start ms_ab ms_ba
  log1=$shared/$vm-serial.log
  disk1=$shared/$vm-disk.qcow2
  CHECK_VMS+=("$vm")
  CHECK_FILES+=("$log1" "$disk1" "$shared/$vm.xml")
  qemu-img create -q -f qcow2 "$disk1" 16M
  chgrp "$GROUP" "$disk1"
  chmod 0660 "$disk1"
  guest_xml "$vm" "$shared/test-guest" "$log1" "$disk1:vdb" >"$shared/$vm.xml"
  t0=$(now_ms)
  rvirsh a define "$shared/$vm.xml" >/dev/null
  rvirsh a start "$vm" >/dev/null
  wait_banner "$log1"
  ms_start=$(($(now_ms) - t0))
  log "case 1: $vm booted on A in ${ms_start} ms"
  migrate a b "$vm"
  ms_ab=$MIGRATE_MS
  assert_moved b a "$vm"
  guest_answers b "$vm" "$log1"
  log "case 1: live p2p A -> B in ${ms_ab} ms; guest answers on B"
  migrate b a "$vm"
  ms_ba=$MIGRATE_MS
  assert_moved a b "$vm"
  guest_answers a "$vm" "$log1"
  log "case 1: live p2p B -> A in ${ms_ba} ms; guest answers on A"
  rvirsh a destroy "$vm" >/dev/null
  rvirsh a undefine "$vm" >/dev/null

  # --- case 2: non-shared disk, live p2p A -> B with --copy-storage-all -------------------
  # The disk lives in A's pool dir; on B it must live in B's pool dir (same path would be
  # the same file on this machine). So the domain XML for B (--xml = VIR_MIGRATE_PARAM_
  # DEST_XML) and its persistent definition (--persistent-xml = VIR_MIGRATE_PARAM_
  # PERSIST_XML; without it B would persist A's path) point at B's path. The destination
  # file need not exist: libvirt pre-creates it (same format and capacity) because it lies
  # in an active pool on B (pool "rig"); QEMU then copies the contents over NBD.
  local vm2=rigcheck-copy-$$ log2 srcdisk dstdisk ref ms_copy out
  log2=$shared/$vm2-serial.log
  srcdisk=$(pool_dir_of a)/$vm2-data.qcow2
  dstdisk=$(pool_dir_of b)/$vm2-data.qcow2
  ref=$shared/$vm2-ref.raw
  CHECK_VMS+=("$vm2")
  CHECK_FILES+=("$log2" "$srcdisk" "$dstdisk" "$ref" "$shared/$vm2.xml" "$shared/$vm2-dest.xml"
    "$shared/$vm2-persist.xml")
  # Known bytes: 64 MiB disk, 3 MiB of random data at 5 MiB, a pattern near the end.
  rm -f "$ref"
  truncate -s 64M "$ref"
  head -c 3M /dev/urandom | dd of="$ref" bs=1M seek=5 conv=notrunc status=none
  printf 'virtdeck-rig-%s' "$vm2" | dd of="$ref" bs=1 seek=$((60 * 1024 * 1024)) conv=notrunc status=none
  qemu-img convert -f raw -O qcow2 "$ref" "$srcdisk"
  chown "$(user_of a):$GROUP" "$srcdisk"
  chmod 0660 "$srcdisk"
  rvirsh a pool-refresh "$POOL" >/dev/null
  guest_xml "$vm2" "$shared/test-guest" "$log2" "$srcdisk:vdb" >"$shared/$vm2.xml"
  rvirsh a define "$shared/$vm2.xml" >/dev/null
  rvirsh a start "$vm2" >/dev/null
  wait_banner "$log2"
  # live definition for B (--xml) and persistent one (--persistent-xml), both migratable
  rvirsh a dumpxml --migratable "$vm2" | sed "s|$srcdisk|$dstdisk|g" >"$shared/$vm2-dest.xml"
  rvirsh a dumpxml --migratable --inactive "$vm2" | sed "s|$srcdisk|$dstdisk|g" \
    >"$shared/$vm2-persist.xml"
  grep -q "$dstdisk" "$shared/$vm2-dest.xml" || die "destination XML lacks $dstdisk"
  grep -q "$dstdisk" "$shared/$vm2-persist.xml" || die "persistent XML lacks $dstdisk"
  migrate a b "$vm2" --copy-storage-all \
    --xml "$shared/$vm2-dest.xml" --persistent-xml "$shared/$vm2-persist.xml"
  ms_copy=$MIGRATE_MS
  assert_moved b a "$vm2"
  out=$(rvirsh b domblklist "$vm2")
  grep -qF "$dstdisk" <<<"$out" || die "$vm2 on B does not use $dstdisk"
  out=$(rvirsh b dumpxml --inactive "$vm2")
  grep -qF "$dstdisk" <<<"$out" || die "persistent definition of $vm2 on B does not use $dstdisk"
  guest_answers b "$vm2" "$log2"
  log "case 2: live p2p A -> B with --copy-storage-all (64 MiB qcow2) in ${ms_copy} ms"
  rvirsh b destroy "$vm2" >/dev/null
  out=$(qemu-img info "$dstdisk")
  grep -q '^file format: qcow2' <<<"$out" || die "$dstdisk is not qcow2"
  qemu-img compare -q -f raw -F qcow2 "$ref" "$dstdisk" ||
    die "the copied disk $dstdisk differs from what was written before the migration"
  log "case 2: B's copy $dstdisk has the bytes written before the migration"
  rvirsh b undefine "$vm2" >/dev/null

  check_cleanup
  trap - EXIT
  log "check passed: guest boot ${ms_start} ms; live p2p A->B ${ms_ab} ms, B->A ${ms_ba} ms;" \
    "live p2p --copy-storage-all A->B ${ms_copy} ms"
}

case "${1:-}" in
up | down | check)
  require_root_and_tools
  # Serialize concurrent callers (several test binaries may run `up` at the same time).
  exec 9>"/run/lock/virtdeck-migration-rig.lock"
  flock -w 600 9 || die "another migration-rig.sh holds /run/lock/virtdeck-migration-rig.lock"
  ;;
esac
case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
check) cmd_check ;;
*)
  echo "usage: $0 up|down|check" >&2
  exit 2
  ;;
esac
