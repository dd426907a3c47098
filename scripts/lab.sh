#!/usr/bin/env bash
# The lab: a network namespace with a bridge, and libvirtd + virtlogd running inside it, so that
# guests' taps join that bridge and never touch the host's network (see
# shared/platform-notes.md). libvirtd's UNIX socket stays on the shared filesystem, so
# qemu:///system works from the root namespace.
#
#   scripts/lab.sh up      create the namespace and start libvirt in it (idempotent)
#   scripts/lab.sh down    stop libvirt and remove the namespace
#   scripts/lab.sh env     print the lab's settings as shell assignments
#
# Settings (environment): RHYZOME_LAB_NETNS (rhyzome-lab), RHYZOME_LAB_BRIDGE (rzbr0),
# RHYZOME_LAB_ADDR (192.168.100.1/24), and a second bridge for guests with two NICs:
# RHYZOME_LAB_BRIDGE2 (rzbr1), RHYZOME_LAB_ADDR2 (192.168.101.1/24).
set -euo pipefail

NS=${RHYZOME_LAB_NETNS:-rhyzome-lab}
BR=${RHYZOME_LAB_BRIDGE:-rzbr0}
ADDR=${RHYZOME_LAB_ADDR:-192.168.100.1/24}
BR2=${RHYZOME_LAB_BRIDGE2:-rzbr1}
ADDR2=${RHYZOME_LAB_ADDR2:-192.168.101.1/24}
PIDFILE=/run/rhyzome-lab-libvirtd.pid
LOGDIR=/var/log/rhyzome-lab

log() { echo "==> $*" >&2; }

netns_of_pid() { ip netns identify "$1" 2>/dev/null || true; }

stop_libvirt() {
  for d in libvirtd virtlogd; do
    if pids=$(pidof "$d"); then
      log "stopping $d ($pids)"
      kill $pids 2>/dev/null || true
      for _ in $(seq 50); do pidof "$d" >/dev/null || break; sleep 0.1; done
      pidof "$d" >/dev/null && kill -9 $(pidof "$d") 2>/dev/null || true
    fi
  done
  rm -f "$PIDFILE"
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
  mkdir -p /var/log/libvirt /var/lib/libvirt /var/cache/libvirt /run/libvirt "$LOGDIR"
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
  put_config "$dir/qemu.conf" <<'CONF'
# Written by rhyzome scripts/lab.sh.
user = "root"
group = "root"
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

start_libvirt() {
  local lpid vpid
  lpid=$(pidof libvirtd || true)
  vpid=$(pidof virtlogd || true)
  if { [ -n "$lpid" ] && [ "$(netns_of_pid "$lpid")" != "$NS" ]; } ||
     { [ -n "$vpid" ] && [ "$(netns_of_pid "$vpid")" != "$NS" ]; }; then
    log "libvirt runs outside $NS; restarting it inside (only one libvirtd may use /run/libvirt)"
    stop_libvirt
    lpid="" vpid=""
  fi
  prepare_accounts
  write_config
  # Daemons started with an older configuration (by an older version of this script) do not
  # give the tests what they expect: restart them with this one.
  if [ -n "$CONFIG_CHANGED" ] && { [ -n "$lpid" ] || [ -n "$vpid" ]; }; then
    log "lab configuration changed (${CONFIG_CHANGED# }); restarting libvirt"
    stop_libvirt
    lpid="" vpid=""
  fi
  if [ -n "$lpid" ] && virsh -q -c qemu:///system version >/dev/null 2>&1; then
    return 0
  fi
  # virtlogd holds running guests' console pipes: keep it across a libvirtd restart.
  if [ -z "$vpid" ]; then
    log "starting virtlogd in $NS"
    without_inherited_fds ip netns exec "$NS" virtlogd -d
  fi
  if [ -n "$lpid" ]; then
    log "libvirtd ($lpid) does not answer; restarting it"
    kill "$lpid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$lpid" 2>/dev/null || break; sleep 0.1; done
  fi
  log "starting libvirtd in $NS"
  rm -f "$PIDFILE"
  # Under tini as a child subreaper: libvirt's QEMU processes are detached from libvirtd, and
  # on machines whose PID 1 reaps slowly (these sandboxes) every domain destroy would wait up
  # to a second for its QEMU to be reaped.
  without_inherited_fds ip netns exec "$NS" setsid tini -s -- libvirtd -p "$PIDFILE" \
    </dev/null >>"$LOGDIR/libvirtd.stderr" 2>&1 &
  for _ in $(seq 300); do
    [ -S /run/libvirt/libvirt-sock ] && break
    sleep 0.1
  done
  # The first connection makes libvirt probe QEMU (several seconds); do it now, once.
  if ! timeout 120 virsh -q -c qemu:///system version >/dev/null; then
    echo "error: libvirtd did not come up; see $LOGDIR/libvirtd.stderr" >&2
    exit 1
  fi
}

case "${1:-up}" in
  up)
    create_netns
    start_libvirt
    log "lab ready: netns $NS, bridges $BR and $BR2, libvirt qemu:///system"
    ;;
  down)
    stop_libvirt
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "/etc/netns/$NS"
    ;;
  env)
    echo "RHYZOME_LAB_NETNS=$NS"
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
