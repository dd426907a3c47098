#!/usr/bin/env bash
# The main job, end to end: install, build, start rhyzomesrv with a default configuration,
# deploy the test unikernel with the command from the project's brief, and show it answering
# ping on the lab bridge. Everything network-facing stays inside the lab namespace.
#
#   scripts/demo.sh         set up and deploy (idempotent)
#   scripts/demo.sh stop    delete the demo instance and stop the daemon
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO_DIR=/var/lib/rhyzome
PIDFILE=/run/rhyzome-demo.pid
LOG=/var/log/rhyzome-demo.log
SERVER=http://127.0.0.1:8080
CTL=target/release/rhyzomectl

log() { echo "==> $*" >&2; }

daemon_running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

if [ "${1:-}" = stop ]; then
  daemon_running && { $CTL --server $SERVER instance delete msgrouter || true; kill "$(cat "$PIDFILE")"; }
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
install -m 0644 testkernel/build/testkernel.elf "$DEMO_DIR/kernels/msgrouter.virtio"

if ! daemon_running; then
  # Defaults for everything but the bridge and libvirt, which are the lab's (the default
  # bridge, virbr0, is not there, and the lab's libvirt has a socket of its own). DomainType "auto" picks qemu (TCG) here because this KVM is nested paravirtual.
  cat >"$DEMO_DIR/rhyzome.conf" <<CONF
{
  "BridgeInterface": "$RHYZOME_LAB_BRIDGE",
  "Hostname": "$(cat /proc/sys/kernel/hostname)",
  "Bind": "127.0.0.1:8080",
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

$CTL --server $SERVER instance delete msgrouter >/dev/null 2>&1 || true
log "deploying msgrouter"
set -x
time $CTL --server $SERVER instance create --name msgrouter --kernel "$DEMO_DIR/kernels/msgrouter.virtio" --kernel-parameters "--ipv4-gateway 192.168.100.1 --ipv4 192.168.100.43/24"
{ set +x; } 2>/dev/null
$CTL --server $SERVER instance list
sleep 0.3
log "its console"
$CTL --server $SERVER instance console msgrouter
log "ping from inside the lab namespace"
ip netns exec "$RHYZOME_LAB_NETNS" ping -c 3 -W 1 192.168.100.43
log "done: the unikernel answers. Try: $CTL instance show msgrouter; scripts/demo.sh stop"
