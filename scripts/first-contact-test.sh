#!/usr/bin/env bash
# First contact, as on a fresh Debian 12 server with no Rust toolchain: a clean clone of this
# checkout's HEAD is built with Debian's cargo-web/rustc-web alone (PATH without ~/.cargo/bin,
# an empty HOME and CARGO_HOME, so rustup is out of sight and install-deps.sh installs the apt
# toolchain if it is not there yet), then scripts/demo.sh runs from that clone with that
# build: daemon started, test kernel deployed, ping answered inside the lab namespace; then
# `scripts/demo.sh stop` removes what it started. Run by scripts/test.sh; run as root.
#
# The demo here runs beside any real one: its own StateDir, port, instance name, guest address
# and Hostname mark (see the settings in scripts/demo.sh), so it never touches another daemon's
# instances. Crates are downloaded afresh into the empty CARGO_HOME (a few seconds, 210 MiB).
#
# RHYZOME_LAB_LOCK (unset): a file to hold locked (flock) while the demo uses the lab, for
# machines where several people share it. The lock is on fd 9, which the demo's processes do
# not inherit: the daemon it leaves running must not hold the lab.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

log() { echo "==> first contact: $*" >&2; }
fail() {
  echo "error: first contact: $*" >&2
  exit 1
}

started=$(date +%s)
work=$(mktemp -d /var/tmp/rhyzome-first-contact.XXXXXX)
clone=$work/rhyzome
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
instance=first-contact-$$
# A fresh machine's environment: the system PATH only, an empty home.
fresh_env=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  HOME="$work/home" CARGO_HOME="$work/home/.cargo" LANG=C.UTF-8 CARGO_TERM_COLOR=never
  RHYZOME_DEMO_DIR="$work/state" RHYZOME_DEMO_PORT="$port" RHYZOME_DEMO_INSTANCE="$instance"
  RHYZOME_DEMO_GUEST_IP=192.168.100.199
  RHYZOME_DEMO_HOSTNAME="first-contact-$(cat /proc/sys/kernel/hostname)-$$")
# The lab's settings, when the caller chose other than the defaults.
while IFS= read -r setting; do fresh_env+=("$setting"); done < <(env | grep '^RHYZOME_LAB_' || true)
demo_started=0

cleanup() {
  local status=$?
  if [ "$demo_started" = 1 ]; then
    (cd "$clone" && "${fresh_env[@]}" scripts/demo.sh stop 9>&-) || status=1
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$work/home" "$work/state"

seconds_since() { echo $(($(date +%s) - $1)); }

log "cloning $(git -C "$repo" rev-parse --short HEAD) into $clone"
git clone -q --no-hardlinks "$repo" "$clone"
cd "$clone"

t0=$(date +%s)
"${fresh_env[@]}" scripts/install-deps.sh
cargo=$("${fresh_env[@]}" bash -c 'command -v cargo')
# "rustc 1.96.0 (ac68faa20 2026-05-25)", without Debian's "(built from a source tarball)".
rustc_version=$("${fresh_env[@]}" rustc --version | grep -o '^rustc [^)]*)')
[ "$cargo" = /usr/bin/cargo ] || fail "expected Debian's /usr/bin/cargo on the fresh PATH, found $cargo"
log "toolchain: $cargo, $rustc_version (install-deps: $(seconds_since "$t0") s)"

t0=$(date +%s)
"${fresh_env[@]}" cargo build --release --locked -q -p rhyzomesrv -p rhyzomectl
build_seconds=$(seconds_since "$t0")
# The binaries record the compiler that built them; prove it was Debian's.
for bin in rhyzomesrv rhyzomectl; do
  built_by=$(readelf -p .comment "target/release/$bin" | grep -o 'rustc version [^)]*)' | head -n 1)
  [ "rustc version ${rustc_version#rustc }" = "$built_by" ] ||
    fail "target/release/$bin was built by '$built_by', not by $rustc_version"
done
log "release build with $rustc_version from an empty CARGO_HOME: $build_seconds s"

if [ -n "${RHYZOME_LAB_LOCK:-}" ]; then
  log "waiting for the lab lock $RHYZOME_LAB_LOCK"
  exec 9>"$RHYZOME_LAB_LOCK"
  flock 9
fi
t0=$(date +%s)
demo_started=1
"${fresh_env[@]}" scripts/demo.sh 9>&- | tee "$work/demo.out"
grep -q ' 0% packet loss' "$work/demo.out" || fail "the deployed kernel did not answer every ping"
log "scripts/demo.sh with that build: $(seconds_since "$t0") s"

"${fresh_env[@]}" scripts/demo.sh stop 9>&-
demo_started=0
[ ! -e "$work/state/demo.pid" ] || fail "scripts/demo.sh stop left its pid file"
uri=$(eval "$(scripts/lab.sh env)" && echo "${RHYZOME_LAB_URI:-qemu:///system}")
domains=$(virsh -q -c "$uri" list --name) || fail "cannot list the lab's domains ($uri)"
if grep -qx "rhyzome-$instance" <<<"$domains"; then
  fail "scripts/demo.sh stop left the domain rhyzome-$instance running"
fi
log "passed in $(seconds_since "$started") s (release build $build_seconds s)"
