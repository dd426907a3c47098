#!/usr/bin/env bash
# The main job, end to end: install, build, start rhyzomesrv with a default configuration,
# deploy the test unikernel with the command from the project's brief, and show it answering
# ping on the lab bridge. Everything network-facing stays inside the lab namespace.
#
#   scripts/demo.sh         set up and deploy (idempotent)
#   scripts/demo.sh stop    delete the demo instance and stop the daemon
#
# It leaves running: rhyzomesrv (pid in /run/rhyzome-demo.pid, log /var/log/rhyzome-demo.log,
# state in /var/lib/rhyzome), the msgrouter guest, and the lab (scripts/lab.sh). `stop` ends
# the first two; `scripts/lab.sh down` the lab.
#
# Settings (environment), so that a second demo can run beside a real one without touching it
# (scripts/first-contact-test.sh does): RHYZOME_DEMO_DIR (/var/lib/rhyzome: the daemon's
# StateDir and configuration; the pid file and log go there too when it is set),
# RHYZOME_DEMO_PORT (8080), RHYZOME_DEMO_INSTANCE (msgrouter), RHYZOME_DEMO_GUEST_IP
# (192.168.100.43), RHYZOME_DEMO_HOSTNAME (this host's name: the daemon's mark on its domains;
# a daemon destroys unclaimed domains carrying its own mark, so two daemons need two names).
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_DIR=${RHYZOME_DEMO_DIR:-/var/lib/rhyzome}
PIDFILE=/run/rhyzome-demo.pid
LOG=/var/log/rhyzome-demo.log
if [ -n "${RHYZOME_DEMO_DIR:-}" ]; then
  PIDFILE=$DEMO_DIR/demo.pid
  LOG=$DEMO_DIR/demo.log
fi
PORT=${RHYZOME_DEMO_PORT:-8080}
INSTANCE=${RHYZOME_DEMO_INSTANCE:-msgrouter}
GUEST_IP=${RHYZOME_DEMO_GUEST_IP:-192.168.100.43}
MARK=${RHYZOME_DEMO_HOSTNAME:-$(cat /proc/sys/kernel/hostname)}
SERVER=http://127.0.0.1:$PORT
CTL=target/release/rhyzomectl

log() { echo "==> $*" >&2; }

daemon_running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

if [ "${1:-}" = stop ]; then
  daemon_running && { $CTL --server $SERVER instance delete "$INSTANCE" || true; kill "$(cat "$PIDFILE")"; }
  rm -f "$PIDFILE"
  exit 0
fi

scripts/install-deps.sh
scripts/lab.sh up
eval "$(scripts/lab.sh env)"

log "building rhyzomesrv, rhyzomectl and the test unikernel"
cargo build --release --locked -q -p rhyzomesrv -p rhyzomectl
make -s -C testkernel/kernel
mkdir -p "$DEMO_DIR/kernels"
install -m 0644 testkernel/build/testkernel.elf "$DEMO_DIR/kernels/$INSTANCE.virtio"

if ! daemon_running; then
  # Defaults for everything but the bridge and libvirt, which are the lab's (the default
  # bridge, virbr0, is not there, and the lab's libvirt has a socket of its own). DomainType
  # "auto" picks qemu (TCG) here because this KVM is nested paravirtual.
  cat >"$DEMO_DIR/rhyzome.conf" <<CONF
{
  "BridgeInterface": "$RHYZOME_LAB_BRIDGE",
  "Hostname": "$MARK",
  "Bind": "127.0.0.1:$PORT",
  "StateDir": "$DEMO_DIR",
  "LibvirtURI": "$RHYZOME_LAB_URI"
}
CONF
  log "starting rhyzomesrv (config $DEMO_DIR/rhyzome.conf, log $LOG)"
  (cd "$DEMO_DIR" && exec nohup "$OLDPWD/target/release/rhyzomesrv" >>"$LOG" 2>&1) &
  echo $! >"$PIDFILE"
  for _ in $(seq 100); do $CTL --server $SERVER info >/dev/null 2>&1 && break; sleep 0.1; done
  if ! $CTL --server $SERVER info >/dev/null 2>&1; then
    echo "error: rhyzomesrv did not start; the end of $LOG says:" >&2
    tail -n 5 "$LOG" >&2
    rm -f "$PIDFILE"
    exit 1
  fi
fi
$CTL --server $SERVER info

$CTL --server $SERVER instance delete "$INSTANCE" >/dev/null 2>&1 || true
log "deploying $INSTANCE"
set -x
time $CTL --server $SERVER instance create --name "$INSTANCE" --kernel "$DEMO_DIR/kernels/$INSTANCE.virtio" --kernel-parameters "--ipv4-gateway 192.168.100.1 --ipv4 $GUEST_IP/24"
{ set +x; } 2>/dev/null
$CTL --server $SERVER instance list
sleep 0.3
log "its console"
$CTL --server $SERVER instance console "$INSTANCE"
log "ping from inside the lab namespace"
ip netns exec "$RHYZOME_LAB_NETNS" ping -c 3 -W 1 "$GUEST_IP"
log "done: the unikernel answers. Try: $CTL --server $SERVER instance show $INSTANCE; scripts/demo.sh stop"
