#!/usr/bin/env bash
# The Debian package, tested the way a server uses it (systemd is not PID 1 here, so this
# script plays its part: it starts the installed daemon as the unit would, as user rhyzome with
# NOTIFY_SOCKET and WATCHDOG_USEC, and stops it around dpkg the way the maintainer scripts
# would have systemd do):
#
#  1. builds the package twice (versions 0.1.0-1 and 0.1.0-2, the same binaries);
#  2. checks its control fields, file list and conffiles with dpkg-deb, and runs lintian;
#  3. installs the first with `apt-get install ./rhyzome_*.deb` (the README's path): the user
#     and its libvirt membership, modes and owners, systemd-analyze verify and security;
#  4. runs /usr/bin/rhyzomesrv --config /etc/rhyzome/rhyzome.conf as rhyzome against the
#     lab's libvirt: READY=1, a test unikernel deployed and pinged in the lab namespace, a
#     SIGHUP reload, watchdog pings;
#  5. upgrades to the second with `dpkg -i`: the local edit of the conffile stays, the guest
#     keeps running and is adopted (same domain id), the database is at the current schema;
#  6. `dpkg -r` keeps state, user and guest; `dpkg --purge` says what it deletes, deletes it,
#     and leaves the guest running.
#
# It installs what it needs (lintian, libvirt-daemon-system, systemd-analyze) with a
# policy-rc.d that keeps apt from starting any service, refuses to run where rhyzome is
# already installed or /var/lib/rhyzome exists (it would purge them), and on exit stops its
# daemon, destroys the one guest it created, and purges the package and the user.
# Uses a lab of its own (scripts/lab.sh), named after RHYZOME_LAB_NETNS with "-deb" appended, in
# which QEMU runs as libvirt-qemu as on a Debian server; it takes that lab down at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

now_ms() { echo $(($(date +%s%N) / 1000000)); }
seconds_since() { # MS -> "S.S"
  local d=$(($(now_ms) - $1))
  printf '%d.%d' $((d / 1000)) $((d % 1000 / 100))
}
started=$(now_ms)
log() { echo "==> package-test: $*" >&2; }
fail() {
  echo "FAIL: package-test: $*" >&2
  exit 1
}

# --- refuse to touch an installation that is not this test's -------------------------------
if dpkg-query -W -f='${Status}' rhyzome 2>/dev/null | grep -q installed ||
  [ -e /var/lib/rhyzome ] || [ -e /etc/rhyzome ] || getent passwd rhyzome >/dev/null; then
  fail "rhyzome is installed here, or /var/lib/rhyzome, /etc/rhyzome or user rhyzome exists;" \
    "this test installs and purges the package and would delete them. Remove them first."
fi

work=$(mktemp -d /run/rhyzome-package-test.XXXXXX)
chmod 0755 "$work"
daemon_pid=""
listener_pid=""
guest_uuid=""
policy_rc_d_ours=""
installed=""
lab_up=""

stop_daemon() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid"
    wait "$daemon_pid" || fail "rhyzomesrv exited with status $? after SIGTERM; see $work/daemon.log"
  fi
  daemon_pid=""
}

cleanup() {
  local status=$?
  set +e
  [ -n "$daemon_pid" ] && kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid"
  [ -n "$listener_pid" ] && kill "$listener_pid" 2>/dev/null
  # The guest this test created (its UUID noted at creation), and no other.
  if [ -n "$guest_uuid" ] && virsh -q -c "$RHYZOME_LAB_URI" dominfo "$guest_uuid" >/dev/null 2>&1; then
    virsh -q -c "$RHYZOME_LAB_URI" destroy "$guest_uuid" >/dev/null 2>&1
    virsh -q -c "$RHYZOME_LAB_URI" undefine "$guest_uuid" >/dev/null 2>&1
  fi
  if [ -n "$installed" ] && dpkg-query -W rhyzome >/dev/null 2>&1; then
    dpkg --purge rhyzome >/dev/null 2>&1
  fi
  [ -n "$policy_rc_d_ours" ] && rm -f /usr/sbin/policy-rc.d
  [ -n "$lab_up" ] && scripts/lab.sh down >/dev/null 2>&1
  if [ $status -ne 0 ] && [ -f "$work/daemon.log" ]; then
    echo "--- the end of the daemon's log:" >&2
    tail -n 20 "$work/daemon.log" >&2
  fi
  rm -rf "$work"
  exit $status
}
trap cleanup EXIT

# --- what the test needs ---------------------------------------------------------------------
scripts/install-deps.sh
# apt must not start services on this machine (libvirt-daemon-system would start a libvirtd on
# /run/libvirt where init scripts run): the standard policy-rc.d veto, for this test only.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\n# rhyzome scripts/package-test.sh: no service starts during its installs.\nexit 101\n' \
    >/usr/sbin/policy-rc.d
  chmod 0755 /usr/sbin/policy-rc.d
  policy_rc_d_ours=1
fi
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "$@" >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; fail "apt-get install $*"; }
}
need=()
command -v lintian >/dev/null || need+=(lintian)
# The systemd package only: systemd-analyze without taking over PID 1 (that is systemd-sysv).
command -v systemd-analyze >/dev/null || need+=(systemd)
dpkg-query -W -f='${Status}' libvirt-daemon-system 2>/dev/null | grep -q "ok installed" ||
  need+=(libvirt-daemon-system)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt_install "${need[@]}"
fi
make -s -C testkernel/kernel
# A lab of its own in which QEMU runs as libvirt-qemu, as Debian's libvirt does on a server
# (the other labs run it as root, which would hide a permission the package must grant).
export RHYZOME_LAB_NETNS="${RHYZOME_LAB_NETNS:-rhyzome-lab}-deb" RHYZOME_LAB_QEMU_USER=libvirt-qemu
lab_up=1
scripts/lab.sh up
eval "$(scripts/lab.sh env)"

# --- 1. build --------------------------------------------------------------------------------
log "building the packages"
# Each copied away at once: cargo-deb may clear target/debian.
deb1=$(scripts/package.sh --version 0.1.0-1 | tail -n 1)
cp "$deb1" "$work/"
deb1=$work/$(basename "$deb1")
deb2=$(scripts/package.sh --no-build --version 0.1.0-2 | tail -n 1)
cp "$deb2" "$work/"
deb2=$work/$(basename "$deb2")
[ "$(basename "$deb1")" = rhyzome_0.1.0-1_amd64.deb ] || fail "unexpected package name $deb1"
built_at=$(seconds_since "$started")

# --- 2. static checks ------------------------------------------------------------------------
log "checking control fields, files and conffiles"
field() { dpkg-deb -f "$deb1" "$1"; }
[ "$(field Package)" = rhyzome ] || fail "Package: $(field Package)"
[ "$(field Architecture)" = amd64 ] || fail "Architecture: $(field Architecture)"
for dep in libvirt-daemon-system qemu-system-x86 acl adduser libvirt0 libc6; do
  grep -qw -- "$dep" <<<"$(field Depends)" || fail "Depends lacks $dep: $(field Depends)"
done
dpkg-deb -c "$deb1" | awk '{ print $1, $2, $6 }' >"$work/files"
expect_file() { # MODE OWNER PATH
  grep -qxF -- "$1 $2 ./$3" "$work/files" || fail "the package lacks $1 $2 $3"
}
expect_file -rwxr-xr-x 0/0 usr/bin/rhyzomesrv
expect_file -rwxr-xr-x 0/0 usr/bin/rhyzomectl
expect_file -rw-r--r-- 0/0 etc/rhyzome/rhyzome.conf
expect_file -rw-r--r-- 0/0 usr/lib/systemd/system/rhyzomesrv.service
expect_file -rw-r--r-- 0/0 usr/lib/tmpfiles.d/rhyzomesrv.conf
for page in rhyzomesrv rhyzomectl rhyzomectl-instance-create rhyzomesrv-token-create; do
  expect_file -rw-r--r-- 0/0 "usr/share/man/man1/$page.1.gz"
done
for bin in rhyzomesrv rhyzomectl; do
  expect_file -rw-r--r-- 0/0 "usr/share/bash-completion/completions/$bin"
  expect_file -rw-r--r-- 0/0 "usr/share/zsh/vendor-completions/_$bin"
  expect_file -rw-r--r-- 0/0 "usr/share/fish/vendor_completions.d/$bin.fish"
done
dpkg-deb -e "$deb1" "$work/control"
[ "$(cat "$work/control/conffiles")" = /etc/rhyzome/rhyzome.conf ] ||
  fail "conffiles: $(cat "$work/control/conffiles")"
# The packaged configuration is valid as shipped (comments and all).
dpkg-deb --fsys-tarfile "$deb1" | tar -xO ./etc/rhyzome/rhyzome.conf >"$work/shipped.conf"
log "lintian"
lintian --fail-on error,warning "$deb1" >"$work/lintian" 2>&1 ||
  fail "lintian reports errors or warnings: $(cat "$work/lintian")"

# --- 3. install ------------------------------------------------------------------------------
log "apt-get install $deb1"
installed=1
apt_install "$deb1"
[ "$(dpkg-query -W -f='${Version}' rhyzome)" = 0.1.0-1 ] || fail "version 0.1.0-1 not installed"
getent passwd rhyzome >/dev/null || fail "no user rhyzome"
[ "$(getent passwd rhyzome | cut -d: -f7)" = /usr/sbin/nologin ] || fail "rhyzome has a login shell"
id -nG rhyzome | tr ' ' '\n' | grep -qx libvirt || fail "rhyzome is not in group libvirt: $(id -nG rhyzome)"
expect_stat() { # PATH "MODE OWNER:GROUP"
  [ "$(stat -c '%a %U:%G' "$1")" = "$2" ] || fail "$1 is $(stat -c '%a %U:%G' "$1"), expected $2"
}
# 0700 plus one ACL entry: libvirt-qemu (QEMU) may pass through to the kernel copies. With an
# ACL, the group bits of the mode show the mask (--x), so the mode reads 710.
expect_stat /var/lib/rhyzome "710 rhyzome:rhyzome"
[ "$(getfacl -cp /var/lib/rhyzome | grep -v '^$' | tr '\n' ' ')" = \
  "user::rwx user:libvirt-qemu:--x group::--- mask::--x other::--- " ] ||
  fail "ACL of /var/lib/rhyzome: $(getfacl -cp /var/lib/rhyzome)"
expect_stat /var/lib/rhyzome/kernels "700 rhyzome:rhyzome"
expect_stat /run/rhyzome "755 rhyzome:rhyzome"
expect_stat /etc/rhyzome/rhyzome.conf "644 root:root"
log "systemd-analyze verify and security"
systemd-analyze verify --man=no /usr/lib/systemd/system/rhyzomesrv.service ||
  fail "systemd-analyze verify rhyzomesrv.service"
# Exposure (0 best, 10 worst) at most 2.0: the hardening is in force.
systemd-analyze security --offline=yes --threshold=20 /usr/lib/systemd/system/rhyzomesrv.service \
  >"$work/security" 2>&1 || { tail -n 3 "$work/security" >&2; fail "exposure above 2.0"; }
grep -q "Overall exposure level" "$work/security" || fail "no exposure level: $(cat "$work/security")"
# The shipped file is valid for the installed daemon (the group it names now exists).
runuser -u rhyzome -- /usr/bin/rhyzomesrv --config /etc/rhyzome/rhyzome.conf check-config \
  >/dev/null || fail "the shipped configuration does not check"

# --- 4. run it as the unit would -------------------------------------------------------------
# The operator's edits: the lab's libvirt and bridge, emulation (KVM here is unusable), a free
# port. A conffile edit, which the upgrade must keep.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -i "s|^  \"Bind\": \"127.0.0.1:8080\",|  \"Bind\": \"127.0.0.1:$port\",\\
  \"BridgeInterface\": \"$RHYZOME_LAB_BRIDGE\",\\
  \"LibvirtURI\": \"$RHYZOME_LAB_URI\",\\
  \"DomainType\": \"qemu\",|" /etc/rhyzome/rhyzome.conf
grep -qF "$RHYZOME_LAB_URI" /etc/rhyzome/rhyzome.conf || fail "could not edit the configuration"
install -o rhyzome -g rhyzome -m 0644 testkernel/build/testkernel.elf /var/lib/rhyzome/kernels/pkgtest.virtio
server=http://127.0.0.1:$port
ctl() { /usr/bin/rhyzomectl --server "$server" "$@"; }

# systemd's side of sd_notify: a datagram socket the daemon's user may write to; one line per
# message in $work/notify.
python3 - "$work/notify.sock" "$work/notify" <<'PY' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
with open(sys.argv[2], "a", buffering=1) as out:
    while True:
        out.write(s.recv(4096).decode().replace("\n", " ") + "\n")
PY
listener_pid=$!
for _ in $(seq 50); do [ -S "$work/notify.sock" ] && break; sleep 0.1; done
touch "$work/notify"

start_daemon() {
  : >"$work/notify"
  setpriv --reuid rhyzome --regid rhyzome --init-groups \
    env -i PATH=/usr/bin:/bin NOTIFY_SOCKET="$work/notify.sock" WATCHDOG_USEC=2000000 \
    /usr/bin/rhyzomesrv --config /etc/rhyzome/rhyzome.conf serve >>"$work/daemon.log" 2>&1 &
  daemon_pid=$!
  local t0
  t0=$(now_ms)
  for _ in $(seq 600); do
    grep -q '^READY=1' "$work/notify" && break
    kill -0 "$daemon_pid" 2>/dev/null || fail "rhyzomesrv exited before READY=1"
    sleep 0.1
  done
  grep -q '^READY=1' "$work/notify" || fail "no READY=1 within 60 s"
  log "READY=1 after $(seconds_since "$t0") s"
  # Ready means serving, on TCP and on the local socket.
  ctl info >/dev/null || fail "the API does not answer after READY=1"
  /usr/bin/rhyzomectl --server unix:///run/rhyzome/api.sock info >/dev/null ||
    fail "the local socket does not answer"
}

log "starting the installed daemon as user rhyzome"
start_daemon
[ "$(ps -o user= -p "$daemon_pid")" = rhyzome ] || fail "the daemon does not run as rhyzome"
ns=$RHYZOME_LAB_NETNS
gateway=${RHYZOME_LAB_ADDR%/*}
guest_ip=${gateway%.*}.77
guest=pkgtest-$$
domain=rhyzome-$guest
log "deploying $guest ($guest_ip)"
ctl instance create --name "$guest" --kernel /var/lib/rhyzome/kernels/pkgtest.virtio \
  --kernel-parameters "--ipv4-gateway $gateway --ipv4 $guest_ip/24" >/dev/null
guest_uuid=$(virsh -q -c "$RHYZOME_LAB_URI" domuuid "$domain")
domid=$(virsh -q -c "$RHYZOME_LAB_URI" domid "$domain")
ip netns exec "$ns" ping -c 3 -W 2 -q "$guest_ip" >/dev/null || fail "$guest does not answer ping"
# Its QEMU runs as libvirt-qemu, and could still open its kernel under /var/lib/rhyzome.
qemu_pid=$(cat "$(dirname "${RHYZOME_LAB_URI#*socket=}")/qemu/$domain.pid")
[ "$(ps -o user= -p "$qemu_pid")" = libvirt-qemu ] || fail "QEMU of $guest runs as $(ps -o user= -p "$qemu_pid")"

log "SIGHUP reload"
sed -i 's|^  // "CreateBurst": 100,|  "CreateBurst": 50,|' /etc/rhyzome/rhyzome.conf
grep -q '^  "CreateBurst": 50,' /etc/rhyzome/rhyzome.conf || fail "could not edit CreateBurst"
kill -HUP "$daemon_pid"
for _ in $(seq 100); do grep -q "configuration reloaded" "$work/daemon.log" && break; sleep 0.1; done
grep -q "configuration reloaded" "$work/daemon.log" || fail "no reload logged after SIGHUP"
grep "configuration reloaded" "$work/daemon.log" | grep -q CreateBurst || fail "CreateBurst not applied"
grep -q '^RELOADING=1' "$work/notify" || fail "no RELOADING=1"
[ "$(grep -c '^READY=1' "$work/notify")" -ge 2 ] || fail "no READY=1 after the reload"
kill -0 "$daemon_pid" || fail "SIGHUP stopped the daemon"

log "watchdog pings"
sleep 2.5
pings=$(grep -c '^WATCHDOG=1' "$work/notify" || true)
[ "$pings" -ge 3 ] || fail "only $pings watchdog pings (WATCHDOG_USEC=2 s: one a second)"

# --- 5. upgrade ------------------------------------------------------------------------------
log "upgrade to 0.1.0-2 (the daemon stopped and started around it, as systemd would)"
stop_daemon
dpkg -i "$deb2" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i $deb2"; }
[ "$(dpkg-query -W -f='${Version}' rhyzome)" = 0.1.0-2 ] || fail "version 0.1.0-2 not installed"
grep -qF "$RHYZOME_LAB_URI" /etc/rhyzome/rhyzome.conf || fail "the upgrade overwrote the local configuration"
[ ! -e /etc/rhyzome/rhyzome.conf.dpkg-new ] || fail "dpkg left rhyzome.conf.dpkg-new"
expect_stat /var/lib/rhyzome "710 rhyzome:rhyzome"
log_lines=$(wc -l <"$work/daemon.log")
start_daemon
# Taken over as it runs: the same domain (same id), which the new daemon did not start.
! tail -n +"$((log_lines + 1))" "$work/daemon.log" | grep -q "domain started instance=$guest" ||
  fail "the new daemon started $guest again instead of adopting it"
[ "$(virsh -q -c "$RHYZOME_LAB_URI" domid "$domain")" = "$domid" ] ||
  fail "the guest was restarted (domain id changed), not adopted"
ctl instance show "$guest" | grep -qi running || fail "$guest is not running after the upgrade"
ip netns exec "$ns" ping -c 1 -W 2 -q "$guest_ip" >/dev/null || fail "$guest does not answer after the upgrade"
want_schema=$(sed -n 's/^const SCHEMA_VERSION: i32 = \([0-9]*\);/\1/p' crates/rhyzomesrv/src/store.rs)
have_schema=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("pragma user_version").fetchone()[0])' /var/lib/rhyzome/rhyzome.db)
[ -n "$want_schema" ] && [ "$have_schema" = "$want_schema" ] ||
  fail "database schema $have_schema, expected $want_schema"

# --- 6. remove, purge ------------------------------------------------------------------------
log "dpkg -r: state, user and guest stay"
stop_daemon
dpkg -r rhyzome >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -r"; }
[ ! -e /usr/bin/rhyzomesrv ] || fail "dpkg -r left /usr/bin/rhyzomesrv"
[ -f /var/lib/rhyzome/rhyzome.db ] || fail "dpkg -r deleted the database"
[ -f /etc/rhyzome/rhyzome.conf ] || fail "dpkg -r deleted the configuration"
getent passwd rhyzome >/dev/null || fail "dpkg -r deleted the user"
[ "$(virsh -q -c "$RHYZOME_LAB_URI" domstate "$guest_uuid")" = running ] || fail "dpkg -r stopped the guest"

log "dpkg --purge: says what it deletes, deletes it; the guest stays"
dpkg --purge rhyzome >"$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; fail "dpkg --purge"; }
grep -q "deleting /var/lib/rhyzome" "$work/purge.log" || fail "purge did not say what it deletes: $(cat "$work/purge.log")"
for gone in /var/lib/rhyzome /etc/rhyzome /run/rhyzome; do
  [ ! -e "$gone" ] || fail "purge left $gone"
done
! getent passwd rhyzome >/dev/null || fail "purge left the user rhyzome"
! getent group rhyzome >/dev/null || fail "purge left the group rhyzome"
[ "$(virsh -q -c "$RHYZOME_LAB_URI" domstate "$guest_uuid")" = running ] || fail "purge stopped the guest"
installed=""

log "passed in $(seconds_since "$started") s (of which building the packages $built_at s)"
