#!/usr/bin/env bash
# The lab: a private libvirt for the tests, the demo and the benchmarks. It never touches a
# libvirt it did not start.
#
# - A network namespace with two bridges, so that guests' taps join those bridges and never the
#   host's network (see shared/platform-notes.md).
# - libvirtd and virtlogd inside that namespace, each in a private mount namespace in which
#   /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt are the lab's own
#   directories (under /run/rhyzome-lab/NS and /var/lib/rhyzome-lab/NS). A libvirtd that the
#   machine already runs (an operator's, with its guests) keeps /run/libvirt and is never
#   stopped, restarted or connected to by the lab.
# - The lab's libvirt is reached by its own URI, `qemu:///system?socket=...` (`lab.sh env`
#   prints it as RHYZOME_LAB_URI), from the root namespace.
# - The lab's daemons are known by the pid files it writes; it stops only those pids, and only
#   after checking that they still are the lab's libvirtd and virtlogd.
#
#   scripts/lab.sh up      create the namespace and start libvirt in it (idempotent)
#   scripts/lab.sh down    stop the lab's libvirt and remove the namespace
#   scripts/lab.sh env     print the lab's settings as shell assignments
#
# Settings (environment): RHYZOME_LAB_NETNS (rhyzome-lab), RHYZOME_LAB_BRIDGE (rzbr0),
# RHYZOME_LAB_ADDR (192.168.100.1/24), and a second bridge for guests with two NICs:
# RHYZOME_LAB_BRIDGE2 (rzbr1), RHYZOME_LAB_ADDR2 (192.168.101.1/24). Several labs with
# different RHYZOME_LAB_NETNS values run side by side. RHYZOME_LAB_QEMU_USER (root) is the
# user QEMU runs as; libvirt-qemu is what a Debian server's libvirt uses (the package test).
set -euo pipefail

NS=${RHYZOME_LAB_NETNS:-rhyzome-lab}
BR=${RHYZOME_LAB_BRIDGE:-rzbr0}
ADDR=${RHYZOME_LAB_ADDR:-192.168.100.1/24}
BR2=${RHYZOME_LAB_BRIDGE2:-rzbr1}
ADDR2=${RHYZOME_LAB_ADDR2:-192.168.101.1/24}
QEMU_USER=${RHYZOME_LAB_QEMU_USER:-root}
case "$NS" in
  "" | *[!A-Za-z0-9_.-]*) echo "error: RHYZOME_LAB_NETNS must be a plain name, not '$NS'" >&2; exit 2 ;;
esac
case "$QEMU_USER" in
  root | libvirt-qemu) ;;
  *) echo "error: RHYZOME_LAB_QEMU_USER must be root or libvirt-qemu, not '$QEMU_USER'" >&2; exit 2 ;;
esac
# Runtime state (sockets, pid files): emptied whenever the lab's libvirt starts.
RUN=/run/rhyzome-lab/$NS
# Persistent state: libvirt's capability cache (the first probe of QEMU takes seconds), domain
# status files and QEMU logs.
VAR=/var/lib/rhyzome-lab/$NS
SOCK=$RUN/libvirt/libvirt-sock
URI="qemu:///system?socket=$SOCK"
LIBVIRTD_PID=$RUN/libvirtd.pid
VIRTLOGD_PID=$RUN/virtlogd.pid
LOGDIR=/var/log/rhyzome-lab

log() { echo "==> $*" >&2; }

# The pid in pid file $1 if it is alive and is program $2 running in the lab's namespace;
# nothing otherwise (a stale file, a reused pid, or someone else's process).
lab_pid() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 0
  [ "$(ip netns identify "$pid" 2>/dev/null)" = "$NS" ] || return 0
  echo "$pid"
}

# Stops the lab's own daemon $2 recorded in pid file $1.
stop_daemon() {
  local pid
  pid=$(lab_pid "$1" "$2")
  if [ -n "$pid" ]; then
    log "stopping the lab's $2 ($pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

stop_libvirt() {
  stop_daemon "$LIBVIRTD_PID" libvirtd
  stop_daemon "$VIRTLOGD_PID" virtlogd
}

prepare_accounts() {
  # libvirtd refuses to start without these, even when qemu.conf says root.
  getent group kvm >/dev/null || groupadd --system kvm
  getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
  getent passwd libvirt-qemu >/dev/null ||
    useradd --system --gid libvirt-qemu --no-create-home --shell /usr/sbin/nologin libvirt-qemu
  # The group whose members may use libvirtd's socket (Debian's libvirt-daemon-system makes
  # it), and an unprivileged member: the tests run rhyzomesrv as that user too.
  getent group libvirt >/dev/null || groupadd --system libvirt
  getent passwd rhyzome-e2e >/dev/null ||
    useradd --system --gid libvirt --no-create-home --shell /usr/sbin/nologin rhyzome-e2e
  # Mount points for the lab's private directories (they exist wherever libvirt is installed;
  # creating them empty changes nothing for a libvirt that is not).
  mkdir -p /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt "$LOGDIR"
  mkdir -p "$VAR/lib" "$VAR/cache" "$VAR/log"
  # The socket's directory must be reachable for the unprivileged member of group libvirt.
  mkdir -p -m 0755 /run/rhyzome-lab
}

# Writes stdin to $1 unless it already holds exactly that; records a change in CONFIG_CHANGED.
CONFIG_CHANGED=""
put_config() {
  local new
  new=$(cat)
  if [ ! -f "$1" ] || [ "$(cat "$1")" != "$new" ]; then
    printf '%s\n' "$new" >"$1"
    CONFIG_CHANGED="$CONFIG_CHANGED $(basename "$1")"
  fi
}

write_config() {
  # `ip netns exec` bind-mounts /etc/netns/NS/* over /etc/*, so this directory is the whole
  # /etc/libvirt that the lab's daemons see: copy the packaged files, then override.
  local dir=/etc/netns/$NS/libvirt
  mkdir -p "$dir"
  if [ -d /etc/libvirt ]; then
    cp -a --no-clobber /etc/libvirt/. "$dir/" 2>/dev/null || true
  fi
  put_config "$dir/qemu.conf" <<CONF
# Written by rhyzome scripts/lab.sh.
user = "$QEMU_USER"
group = "$QEMU_USER"
security_driver = "none"
CONF
  put_config "$dir/virtlogd.conf" <<'CONF'
# Written by rhyzome scripts/lab.sh. Console logs rotate at 256 KiB (virtlogd's default is
# 2 MiB), so that a test can make a guest print past it in a second or two; 3 copies are kept.
max_size = 262144
max_backups = 3
CONF
  put_config "$dir/libvirtd.conf" <<'CONF'
# Written by rhyzome scripts/lab.sh.
unix_sock_group = "libvirt"
unix_sock_rw_perms = "0770"
# The socket's group is the access control, as on Debian (no polkit here).
auth_unix_rw = "none"
# A test bed creates and destroys many guests at once over one connection; the default of
# 5 concurrent calls per client serialises them.
max_client_requests = 64
max_workers = 32
CONF
}

create_netns() {
  # Not `cmd | grep -q` under pipefail: grep exits at its first match, the writer may then die
  # of SIGPIPE, and the pipeline reports failure although the match was found.
  if ! grep -qw "^$NS" <<<"$(ip netns list)"; then
    log "creating network namespace $NS with bridge $BR ($ADDR)"
    ip netns add "$NS"
  fi
  ip -n "$NS" link set lo up
  add_bridge "$BR" "$ADDR" 02:72:7a:00:00:01
  add_bridge "$BR2" "$ADDR2" 02:72:7a:00:00:02
}

add_bridge() {
  local br=$1 addr=$2 mac=$3
  if ! ip -n "$NS" link show "$br" >/dev/null 2>&1; then
    ip -n "$NS" link add "$br" type bridge
    ip -n "$NS" link set "$br" type bridge stp_state 0 forward_delay 0
  fi
  # A fixed address: otherwise the bridge takes the lowest MAC of its ports, changes it as
  # taps come and go, and the kernel then drops its neighbour entries (a ping right after a
  # deploy would wait a second for ARP).
  ip -n "$NS" link set "$br" address "$mac"
  grep -qwF "${addr%/*}" <<<"$(ip -n "$NS" addr show dev "$br")" || ip -n "$NS" addr add "$addr" dev "$br"
  ip -n "$NS" link set "$br" up
}

# Runs "$@" without the file descriptors this script inherited beyond stdin, stdout and
# stderr. A daemon must not keep its starter's descriptors: started under
# `flock /tmp/rhyzome-lab.lock ...`, libvirtd and virtlogd would otherwise hold the lab lock
# for their whole life, and every other user of the lab would wait for ever.
without_inherited_fds() {
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if [ "$fd" -gt 2 ] 2>/dev/null; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec "$@"
  )
}

# Runs "$@" in the lab: its network namespace, and a private mount namespace in which libvirt's
# directories are the lab's own.
in_lab() {
  # shellcheck disable=SC2016 # expanded by the inner shell
  without_inherited_fds ip netns exec "$NS" unshare --mount --propagation private -- /bin/sh -c '
    mount --bind "$1" /run/libvirt &&
    mount --bind "$2" /var/lib/libvirt &&
    mount --bind "$3" /var/cache/libvirt &&
    mount --bind "$4" /var/log/libvirt &&
    shift 4 && exec "$@"' in_lab "$RUN/libvirt" "$VAR/lib" "$VAR/cache" "$VAR/log" "$@"
}

answers() { virsh -q -c "$URI" version >/dev/null 2>&1; }

start_libvirt() {
  local lpid vpid
  prepare_accounts
  write_config
  lpid=$(lab_pid "$LIBVIRTD_PID" libvirtd)
  vpid=$(lab_pid "$VIRTLOGD_PID" virtlogd)
  # Daemons started with an older configuration (by an older version of this script) do not
  # give the tests what they expect: restart them with this one.
  if [ -n "$CONFIG_CHANGED" ] && { [ -n "$lpid" ] || [ -n "$vpid" ]; }; then
    log "lab configuration changed (${CONFIG_CHANGED# }); restarting the lab's libvirt"
    stop_libvirt
    lpid="" vpid=""
  fi
  if [ -n "$lpid" ] && [ -n "$vpid" ] && answers; then
    return 0
  fi
  if [ -z "$lpid" ] && [ -S "$SOCK" ] && answers; then
    echo "error: a libvirtd that scripts/lab.sh did not start answers on the lab's socket" \
      "$SOCK; the lab will not stop it. Stop it yourself, or use another lab with" \
      "RHYZOME_LAB_NETNS=<name>." >&2
    exit 1
  fi
  if [ -z "$vpid" ]; then
    # virtlogd holds running guests' console pipes, so a lone libvirtd restart keeps it; with
    # virtlogd gone, the lab starts afresh.
    stop_daemon "$LIBVIRTD_PID" libvirtd
    lpid=""
    rm -rf "$RUN"
    mkdir -p -m 0755 "$RUN" "$RUN/libvirt"
    log "starting virtlogd in $NS"
    in_lab virtlogd -d -p "$VIRTLOGD_PID"
    for _ in $(seq 50); do [ -n "$(lab_pid "$VIRTLOGD_PID" virtlogd)" ] && break; sleep 0.1; done
  fi
  if [ -n "$lpid" ]; then
    log "the lab's libvirtd ($lpid) does not answer; restarting it"
    stop_daemon "$LIBVIRTD_PID" libvirtd
  fi
  log "starting libvirtd in $NS (URI $URI)"
  rm -f "$LIBVIRTD_PID"
  # Under tini as a child subreaper: libvirt's QEMU processes are detached from libvirtd, and
  # on machines whose PID 1 reaps slowly (these sandboxes) every domain destroy would wait up
  # to a second for its QEMU to be reaped.
  in_lab setsid tini -s -- libvirtd -p "$LIBVIRTD_PID" </dev/null >>"$LOGDIR/$NS-libvirtd.stderr" 2>&1 &
  for _ in $(seq 300); do
    [ -S "$SOCK" ] && break
    sleep 0.1
  done
  # The first connection makes libvirt probe QEMU (several seconds); do it now, once.
  if ! timeout 120 virsh -q -c "$URI" version >/dev/null; then
    echo "error: the lab's libvirtd did not come up; see $LOGDIR/$NS-libvirtd.stderr" >&2
    exit 1
  fi
}

case "${1:-up}" in
  up)
    create_netns
    start_libvirt
    log "lab ready: netns $NS, bridges $BR and $BR2, libvirt $URI"
    ;;
  down)
    stop_libvirt
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "/etc/netns/$NS" "$RUN"
    ;;
  env)
    echo "RHYZOME_LAB_NETNS=$NS"
    echo "RHYZOME_LAB_URI='$URI'"
    echo "RHYZOME_LAB_LIBVIRTD_PIDFILE=$LIBVIRTD_PID"
    echo "RHYZOME_LAB_BRIDGE=$BR"
    echo "RHYZOME_LAB_ADDR=$ADDR"
    echo "RHYZOME_LAB_BRIDGE2=$BR2"
    echo "RHYZOME_LAB_ADDR2=$ADDR2"
    ;;
  *)
    echo "usage: $0 up|down|env" >&2
    exit 2
    ;;
esac
