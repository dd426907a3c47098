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
# - A second libvirt host ("host 2"), for the tests of one daemon driving several hosts over
#   libvirt's remote protocol: its own network namespace NS-h2 (with its own bridge rzbr0,
#   192.168.110.1/24), its own virtlogd and libvirtd (private mount and UTS namespaces, hostname
#   NS-h2), and a veth pair from the root namespace (rzh2-lab, 192.168.250.1/30) to it
#   (rzh2-host, 192.168.250.2/30). Its libvirtd listens on plain TCP without authentication at
#   192.168.250.2, reachable only from this machine's root namespace: qemu+tcp://192.168.250.2/system.
#   It also listens with TLS on 192.168.250.2:16514, with a CA, a server and a client
#   certificate that scripts/hosts-pki.sh makes once under /var/lib/rhyzome-lab/NS-h2/pki:
#   qemu+tls://192.168.250.2/system?pkipath=.../pki/client-rhyzome-lab (`lab.sh env` prints it).
#   A lab whose RHYZOME_LAB_NETNS is not the default gets other veth names and another /30 in
#   192.168.250.0/24, derived from the name (so that two labs' second hosts do not clash; two
#   names may still, rarely, hash alike: then `up` of the second reports the veth in use).
#
#   Host 2 is also joined to the lab's namespace NS by a second veth pair, the network
#   between hosts that emulated networks' frames cross: rzframes (192.168.251.1/30) in NS,
#   where the daemon's link emulators run, and rzframes in NS2 (192.168.251.2/30), where host
#   2's guests send from. Both ends are in the lab's own namespaces, so every lab uses the same
#   names and addresses. A daemon that drives both hosts sets LinkEmulatorAddress to the
#   first and host 2's FrameAddress to the second.
#
#   scripts/lab.sh up           create the namespaces and start both libvirts (idempotent)
#   scripts/lab.sh down         stop the lab's libvirts and remove the namespaces
#   scripts/lab.sh env          print the lab's settings as shell assignments
#   scripts/lab.sh host2-stop   stop host 2's libvirtd only (its guests keep running; virtlogd
#                               keeps their consoles), as a remote host going away would
#   scripts/lab.sh host2-start  start it again (it re-adopts the guests); idempotent
#   scripts/lab.sh host1-start  start the lab's own libvirtd again, and nothing of host 2's
#                               (the tests' watcher, when libvirtd died under them); idempotent
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
LOGDIR=/var/log/rhyzome-lab

# Host 2's namespace, veth pair and listen address. The default lab keeps the documented
# names and addresses; another lab gets a /30 of its own, from a hash of its name.
NS2=$NS-h2
BR2_H2=rzbr0
ADDR_H2=192.168.110.1/24
if [ "$NS" = rhyzome-lab ]; then
  H2_SLOT=0 VETH_LAB=rzh2-lab VETH_HOST=rzh2-host
else
  H2_SLOT=$(($(cksum <<<"$NS" | cut -d' ' -f1) % 63 + 1))
  VETH_LAB=rzh2-${H2_SLOT}l VETH_HOST=rzh2-${H2_SLOT}h
fi
VETH_LAB_ADDR=192.168.250.$((H2_SLOT * 4 + 1))/30
H2_LISTEN=192.168.250.$((H2_SLOT * 4 + 2))
URI_H2="qemu+tcp://$H2_LISTEN/system"
# Host 2 also listens with TLS (port 16514), with a PKI made by scripts/hosts-pki.sh, so that
# the TLS set-up docs/hosts-tls.md describes is tested: the controller's client certificate
# directory goes in the URI as pkipath, and host 2 admits only that client's name.
H2_PKI=/var/lib/rhyzome-lab/$NS2/pki
H2_TLS_CLIENT_DN="O=Rhyzome,CN=rhyzome-lab"
URI_H2_TLS="qemu+tls://$H2_LISTEN/system?pkipath=$H2_PKI/client-rhyzome-lab"
FRAMES_DEV=rzframes
FRAMES_EMULATOR=192.168.251.1
FRAMES_H2=192.168.251.2

# Selects which of the lab's two libvirt hosts the functions below act on: 1 (libvirtd in NS,
# reached through its UNIX socket) or 2 (libvirtd in NS2, also listening on TCP). Sets:
# HNS (its network namespace), RUN (runtime state: sockets, pid files; emptied whenever its
# libvirt starts afresh), VAR (persistent state: libvirt's capability cache, since the first
# probe of QEMU takes seconds, domain status files and QEMU logs), SOCK, URI (how this script
# reaches it), LIBVIRTD_PID, VIRTLOGD_PID, LISTEN (the TCP address, or empty).
use_host() {
  case "$1" in
    1) HNS=$NS LISTEN="" ;;
    2) HNS=$NS2 LISTEN=$H2_LISTEN ;;
  esac
  RUN=/run/rhyzome-lab/$HNS
  VAR=/var/lib/rhyzome-lab/$HNS
  SOCK=$RUN/libvirt/libvirt-sock
  URI="qemu:///system?socket=$SOCK"
  LIBVIRTD_PID=$RUN/libvirtd.pid
  VIRTLOGD_PID=$RUN/virtlogd.pid
}
use_host 1
URI_H1=$URI

log() { echo "==> $*" >&2; }

# The pid in pid file $1 if it is alive and is program $2 running in the selected host's
# namespace; nothing otherwise (a stale file, a reused pid, or someone else's process).
lab_pid() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 0
  [ "$(ip netns identify "$pid" 2>/dev/null)" = "$HNS" ] || return 0
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
  local dir=/etc/netns/$HNS/libvirt
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
  put_config "$dir/libvirtd.conf" < <(
    cat <<'CONF'
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
    if [ -n "$LISTEN" ]; then
      # Host 2 is reached over libvirt's remote protocol (with --listen). Plain TCP without
      # authentication, bound to the veth address that only this machine's root namespace
      # reaches: a lab, not a deployment (docs/hosts-tls.md describes TLS for real hosts).
      cat <<CONF
listen_tcp = 1
auth_tcp = "none"
listen_addr = "$LISTEN"
listen_tls = 1
ca_file = "$H2_PKI/server-$NS2/cacert.pem"
cert_file = "$H2_PKI/server-$NS2/servercert.pem"
key_file = "$H2_PKI/server-$NS2/serverkey.pem"
tls_allowed_dn_list = ["$H2_TLS_CLIENT_DN"]
CONF
    fi
  )
}

# Creates network namespace $1 unless it exists (its file, not a match in `ip netns list`,
# where `NAME` would also match `NAME-h2`).
ensure_netns() {
  if [ ! -e "/run/netns/$1" ]; then
    log "creating network namespace $1"
    ip netns add "$1"
  fi
  ip -n "$1" link set lo up
}

create_netns() {
  ensure_netns "$NS"
  add_bridge "$NS" "$BR" "$ADDR" 02:72:7a:00:00:01
  add_bridge "$NS" "$BR2" "$ADDR2" 02:72:7a:00:00:02
}

# Host 2's namespace, its bridge, and the veth pair that joins it to the root namespace.
create_host2_netns() {
  ensure_netns "$NS2"
  add_bridge "$NS2" "$BR2_H2" "$ADDR_H2" 02:72:7a:00:01:01
  if ! ip -n "$NS2" link show "$VETH_HOST" >/dev/null 2>&1; then
    if ip link show "$VETH_LAB" >/dev/null 2>&1; then
      echo "error: the interface $VETH_LAB exists in the root namespace, but its peer" \
        "$VETH_HOST is not in $NS2: another lab (or someone else) uses it; the lab will" \
        "not touch it." >&2
      exit 1
    fi
    log "creating veth $VETH_LAB ($VETH_LAB_ADDR) <-> $VETH_HOST in $NS2 ($H2_LISTEN)"
    ip link add "$VETH_LAB" type veth peer name "$VETH_HOST" netns "$NS2"
  fi
  set_addr "" "$VETH_LAB" "$VETH_LAB_ADDR"
  set_addr "$NS2" "$VETH_HOST" "$H2_LISTEN/30"
  if ! ip -n "$NS2" link show "$FRAMES_DEV" >/dev/null 2>&1; then
    # A half left by a namespace that was removed and made again.
    ip -n "$NS" link del "$FRAMES_DEV" 2>/dev/null || true
    log "creating veth $FRAMES_DEV in $NS ($FRAMES_EMULATOR) <-> $FRAMES_DEV in $NS2 ($FRAMES_H2)"
    ip link add "$FRAMES_DEV" netns "$NS" type veth peer name "$FRAMES_DEV" netns "$NS2"
  fi
  set_addr "$NS" "$FRAMES_DEV" "$FRAMES_EMULATOR/30"
  set_addr "$NS2" "$FRAMES_DEV" "$FRAMES_H2/30"
}

# Gives interface $2 of namespace $1 (the root namespace when empty) address $3, and brings it up.
set_addr() {
  local ns=(${1:+-n "$1"}) dev=$2 addr=$3
  grep -qwF "${addr%/*}" <<<"$(ip "${ns[@]}" addr show dev "$dev")" || ip "${ns[@]}" addr add "$addr" dev "$dev"
  ip "${ns[@]}" link set "$dev" up
}

add_bridge() {
  local ns=$1 br=$2 addr=$3 mac=$4
  if ! ip -n "$ns" link show "$br" >/dev/null 2>&1; then
    ip -n "$ns" link add "$br" type bridge
    ip -n "$ns" link set "$br" type bridge stp_state 0 forward_delay 0
  fi
  # A fixed address: otherwise the bridge takes the lowest MAC of its ports, changes it as
  # taps come and go, and the kernel then drops its neighbour entries (a ping right after a
  # deploy would wait a second for ARP).
  ip -n "$ns" link set "$br" address "$mac"
  set_addr "$ns" "$br" "$addr"
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

# Runs "$@" in the selected host: its network namespace, and a private mount namespace in which
# libvirt's directories are the host's own. Host 2 also gets a UTS namespace with its own
# hostname, as another machine would have (libvirt reports it, and it names the host in logs).
in_lab() {
  local uts=() hostname=""
  if [ "$HNS" != "$NS" ]; then uts=(--uts) hostname=$HNS; fi
  # shellcheck disable=SC2016 # expanded by the inner shell
  without_inherited_fds ip netns exec "$HNS" unshare --mount "${uts[@]}" --propagation private -- /bin/sh -c '
    mount --bind "$1" /run/libvirt &&
    mount --bind "$2" /var/lib/libvirt &&
    mount --bind "$3" /var/cache/libvirt &&
    mount --bind "$4" /var/log/libvirt &&
    { [ -z "$5" ] || echo "$5" >/proc/sys/kernel/hostname; } &&
    shift 5 && exec "$@"' in_lab "$RUN/libvirt" "$VAR/lib" "$VAR/cache" "$VAR/log" "$hostname" "$@"
}

answers() { virsh -q -c "$URI" version >/dev/null 2>&1; }

# Starts what is not running of the selected host's virtlogd and libvirtd (idempotent).
start_libvirt() {
  local lpid vpid listen=()
  prepare_accounts
  CONFIG_CHANGED=""
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
    log "starting virtlogd in $HNS"
    in_lab virtlogd -d -p "$VIRTLOGD_PID"
    for _ in $(seq 50); do [ -n "$(lab_pid "$VIRTLOGD_PID" virtlogd)" ] && break; sleep 0.1; done
  fi
  if [ -n "$lpid" ]; then
    log "the lab's libvirtd ($lpid) does not answer; restarting it"
    stop_daemon "$LIBVIRTD_PID" libvirtd
  fi
  log "starting libvirtd in $HNS (URI $URI${LISTEN:+, and TCP on $LISTEN})"
  rm -f "$LIBVIRTD_PID"
  [ -z "$LISTEN" ] || listen=(--listen)
  # Under tini as a child subreaper: libvirt's QEMU processes are detached from libvirtd, and
  # on machines whose PID 1 reaps slowly (these sandboxes) every domain destroy would wait up
  # to a second for its QEMU to be reaped.
  in_lab setsid tini -s -- libvirtd "${listen[@]}" -p "$LIBVIRTD_PID" </dev/null \
    >>"$LOGDIR/$HNS-libvirtd.stderr" 2>&1 &
  for _ in $(seq 300); do
    [ -S "$SOCK" ] && break
    sleep 0.1
  done
  # The first connection makes libvirt probe QEMU (several seconds); do it now, once.
  if ! timeout 120 virsh -q -c "$URI" version >/dev/null; then
    echo "error: the lab's libvirtd did not come up; see $LOGDIR/$HNS-libvirtd.stderr" >&2
    exit 1
  fi
}

# Host 2 answers where the controller reaches it: over TCP and over TLS, from the root
# namespace.
check_host2_tcp() {
  local uri
  for uri in "$URI_H2" "$URI_H2_TLS"; do
    if ! timeout 30 virsh -q -c "$uri" version >/dev/null; then
      echo "error: host 2's libvirtd does not answer on $uri; see $LOGDIR/$NS2-libvirtd.stderr" >&2
      exit 1
    fi
  done
}

# Host 2's CA, server certificate (its name and veth address) and the controller's client
# certificate, made once (scripts/hosts-pki.sh refuses to overwrite).
make_host2_pki() {
  if [ -f "$H2_PKI/server-$NS2/servercert.pem" ] && [ -f "$H2_PKI/client-rhyzome-lab/clientcert.pem" ]; then
    return 0
  fi
  log "making host 2's TLS certificates in $H2_PKI"
  rm -rf "$H2_PKI"
  mkdir -p "$(dirname "$H2_PKI")"
  local pki
  pki="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/hosts-pki.sh"
  bash "$pki" ca "$H2_PKI" Rhyzome >/dev/null
  bash "$pki" server "$H2_PKI" "$NS2" "$H2_LISTEN" >/dev/null
  bash "$pki" client "$H2_PKI" rhyzome-lab >/dev/null
}

# Stops the selected host's libvirt and removes its namespace (with host 2's veth pair, whose
# root end is the lab's only when its peer is in the namespace).
remove_host() {
  stop_libvirt
  if [ "$HNS" = "$NS2" ] && ip -n "$NS2" link show "$VETH_HOST" >/dev/null 2>&1; then
    ip link del "$VETH_LAB" 2>/dev/null || true
  fi
  ip netns del "$HNS" 2>/dev/null || true
  rm -rf "/etc/netns/$HNS" "$RUN"
}

case "${1:-up}" in
  up)
    create_netns
    use_host 1
    start_libvirt
    create_host2_netns
    make_host2_pki
    use_host 2
    start_libvirt
    check_host2_tcp
    log "lab ready: netns $NS, bridges $BR and $BR2, libvirt $URI_H1;" \
      "host 2: netns $NS2, bridge $BR2_H2, libvirt $URI_H2"
    ;;
  down)
    use_host 2
    remove_host
    use_host 1
    remove_host
    ;;
  host2-stop)
    use_host 2
    stop_daemon "$LIBVIRTD_PID" libvirtd
    ;;
  host1-start)
    create_netns
    use_host 1
    start_libvirt
    ;;
  host2-start)
    create_host2_netns
    make_host2_pki
    use_host 2
    start_libvirt
    check_host2_tcp
    ;;
  env)
    use_host 1
    echo "RHYZOME_LAB_NETNS=$NS"
    echo "RHYZOME_LAB_URI='$URI'"
    echo "RHYZOME_LAB_LIBVIRTD_PIDFILE=$LIBVIRTD_PID"
    echo "RHYZOME_LAB_BRIDGE=$BR"
    echo "RHYZOME_LAB_ADDR=$ADDR"
    echo "RHYZOME_LAB_BRIDGE2=$BR2"
    echo "RHYZOME_LAB_ADDR2=$ADDR2"
    use_host 2
    echo "RHYZOME_LAB_HOST2_URI='$URI_H2'"
    echo "RHYZOME_LAB_HOST2_TLS_URI='$URI_H2_TLS'"
    echo "RHYZOME_LAB_HOST2_NETNS=$NS2"
    echo "RHYZOME_LAB_HOST2_LIBVIRTD_PIDFILE=$LIBVIRTD_PID"
    echo "RHYZOME_LAB_HOST2_BRIDGE=$BR2_H2"
    echo "RHYZOME_LAB_HOST2_ADDR=$ADDR_H2"
    echo "RHYZOME_LAB_EMULATOR_ADDR=$FRAMES_EMULATOR"
    echo "RHYZOME_LAB_HOST2_FRAME_ADDR=$FRAMES_H2"
    ;;
  *)
    echo "usage: $0 up|down|env|host1-start|host2-stop|host2-start" >&2
    exit 2
    ;;
esac
