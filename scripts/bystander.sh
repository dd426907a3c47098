#!/usr/bin/env bash
# A bystander for the test suite: the machine's own libvirt, which the suite must never touch.
#
#   scripts/bystander.sh start   note the libvirtd on qemu:///system (/run/libvirt), or start one
#                                with a guest of its own when the machine has none
#   scripts/bystander.sh check   fail unless that libvirtd is the same process and its domains
#                                are exactly those noted at start (same names, same ids)
#   scripts/bystander.sh stop    stop what start started (nothing when the libvirtd was there)
#
# scripts/test.sh wraps the whole suite in start/check/stop: a test that connected to
# qemu:///system, or stopped "a" libvirtd, instead of the lab's own, fails the run. The
# bystander's guest has no network device, so it sends no traffic anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."

URI=qemu:///system
STATE=/run/rhyzome-bystander
ETC=/var/lib/rhyzome-bystander/etc
GUEST=rhyzome-bystander-guest

log() { echo "==> bystander: $*" >&2; }

answers() { virsh -q -c "$URI" version >/dev/null 2>&1; }

# The pid of the libvirtd serving /run/libvirt/libvirt-sock: the one that sees that very file
# (device and inode) at that path in its own mount namespace. The lab's libvirtd sees its
# private socket there instead.
socket_owner() {
  local want pid
  want=$(stat -L -c %d:%i /run/libvirt/libvirt-sock 2>/dev/null) || return 0
  for pid in $(pgrep -x libvirtd); do
    if [ "$(stat -L -c %d:%i "/proc/$pid/root/run/libvirt/libvirt-sock" 2>/dev/null)" = "$want" ]; then
      echo "$pid"
      return 0
    fi
  done
}

domains() { virsh -q -c "$URI" list --all | awk '{ print $1, $2 }' | sort; }

start() {
  rm -rf "$STATE"
  mkdir -p "$STATE"
  if ! answers; then
    log "no libvirtd on $URI: starting one, with a guest, to stand by"
    mkdir -p "$ETC" /run/libvirt /var/log/libvirt
    cp -a --no-clobber /etc/libvirt/. "$ETC/" 2>/dev/null || true
    printf 'user = "root"\ngroup = "root"\nsecurity_driver = "none"\n' >"$ETC/qemu.conf"
    # Its own /etc/libvirt (root QEMU, as in the lab), in the root network namespace, on the
    # machine's default socket: what an operator's libvirtd looks like to the suite.
    unshare --mount --propagation private -- /bin/sh -c \
      'mount --bind "$1" /etc/libvirt && virtlogd -d -p "$2/virtlogd.pid" &&
       exec setsid tini -s -- libvirtd -p "$2/libvirtd.pid"' bystander "$ETC" "$STATE" \
      </dev/null >>"$STATE/libvirtd.log" 2>&1 &
    for _ in $(seq 300); do answers && break; sleep 0.1; done
    answers || { echo "error: the bystander libvirtd did not start; see $STATE/libvirtd.log" >&2; exit 1; }
    touch "$STATE/started-by-us"
    local kernel=testkernel/build/testkernel-nonet.elf
    [ -f "$kernel" ] || kernel=testkernel/build/testkernel.elf
    cp "$kernel" "$STATE/guest.elf"
    cat >"$STATE/guest.xml" <<XML
<domain type='qemu'>
  <name>$GUEST</name>
  <memory unit='MiB'>16</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>$STATE/guest.elf</kernel></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <serial type='file'><source path='$STATE/guest.console'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
XML
    virsh -q -c "$URI" create "$STATE/guest.xml" >/dev/null
  fi
  local pid
  pid=$(socket_owner)
  [ -n "$pid" ] || { echo "error: cannot tell which libvirtd serves /run/libvirt/libvirt-sock" >&2; exit 1; }
  echo "$pid" >"$STATE/pid"
  domains >"$STATE/domains"
  log "libvirtd $pid on $URI with $(wc -l <"$STATE/domains") domain(s) is standing by"
}

check() {
  local pid now
  pid=$(cat "$STATE/pid")
  kill -0 "$pid" 2>/dev/null || { echo "FAIL: the bystander libvirtd $pid was stopped by the suite" >&2; exit 1; }
  answers || { echo "FAIL: the bystander libvirtd $pid no longer answers on $URI" >&2; exit 1; }
  now=$(domains)
  if [ "$now" != "$(cat "$STATE/domains")" ]; then
    echo "FAIL: the suite changed the domains of the bystander libvirt on $URI:" >&2
    diff <(cat "$STATE/domains") <(echo "$now") >&2 || true
    exit 1
  fi
  log "libvirtd $pid and its $(wc -l <"$STATE/domains") domain(s) are untouched"
}

stop() {
  [ -f "$STATE/started-by-us" ] || { rm -rf "$STATE"; return 0; }
  virsh -q -c "$URI" destroy "$GUEST" >/dev/null 2>&1 || true
  for d in libvirtd virtlogd; do
    local pid
    pid=$(cat "$STATE/$d.pid" 2>/dev/null) || continue
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$d" ] || continue
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$STATE"
}

case "${1:-}" in
  start) start ;;
  check) check ;;
  stop) stop ;;
  *) echo "usage: $0 start|check|stop" >&2; exit 2 ;;
esac
