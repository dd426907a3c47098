#!/usr/bin/env bash
# Installs what Rhyzome needs on Debian 12: QEMU, libvirt, the C toolchain for the test
# unikernel, the network tools the lab uses, and, when no recent enough Rust toolchain is on
# PATH, Debian's own (`cargo-web`, `rustc-web`). Idempotent; run as root.
#
# A Rust toolchain already on PATH (rustup's, say) that is at least the workspace's
# `rust-version` is used as it is. rustup is never replaced or shadowed: when rustup is there
# but gives no usable cargo, this script says what to run instead of installing Debian's
# toolchain, whose packages conflict with Debian's `rustup` package.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "==> $*" >&2; }
die() {
  echo "error: $*" >&2
  exit 1
}

command -v apt-get >/dev/null ||
  die "apt-get not found. This script installs with apt and is tested on Debian 12 only."

if [ -r /etc/os-release ]; then
  # shellcheck disable=SC1091
  . /etc/os-release
fi
release="${PRETTY_NAME:-unknown} (${ID:-?} ${VERSION_CODENAME:-?})"
# qemu-utils from bookworm-backports conflicts with bookworm's qemu-system 7.2 and makes apt
# remove qemu-img, hence the pin; other releases have no such mix, and no such suite name.
qemu_utils=qemu-utils
if [ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ]; then
  qemu_utils=qemu-utils/bookworm
else
  log "detected $release; Rhyzome is tested on Debian 12 (bookworm) only, continuing without the bookworm-specific pins"
fi

# `--browser` adds Chromium and its WebDriver, for the dashboard's browser tests
# (scripts/test.sh asks for them; running Rhyzome does not need them).
browser=()
if [ "${1:-}" = --browser ]; then
  browser=(chromium chromium-driver)
fi

packages=(
  "${browser[@]}"
  qemu-system-x86 "$qemu_utils"
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
  pkg-config gcc make gcc-multilib binutils
  busybox-static cpio iproute2 iputils-ping curl dnsmasq-base iptables
  python3 python3-venv tini gnutls-bin
)

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --allow-downgrades --no-install-recommends "$@" >/dev/null
}

missing=0
for p in "${packages[@]}"; do
  name=${p%%/*}
  status=$(dpkg-query -W -f='${Status}' "$name" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing=1
done
if ! command -v qemu-img >/dev/null || ! command -v qemu-system-x86_64 >/dev/null; then missing=1; fi

if [ "$missing" = 1 ]; then
  log "installing packages: ${packages[*]}"
  apt_install "${packages[@]}"
fi

# The Rust toolchain. The oldest one that builds the workspace is its `rust-version`.
required=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n 1)
[ -n "$required" ] || die "no rust-version in Cargo.toml"

# The version ("1.96.0") of a `cargo --version` or `rustc --version` line, or nothing.
version_of() { "$1" --version 2>/dev/null | sed -n 's/^[a-z]* \([0-9][0-9.]*\).*/\1/p'; }
# True when $1 is a version at least $required.
new_enough() { [ -n "$1" ] && [ "$(printf '%s\n%s\n' "$required" "$1" | sort -V | head -n 1)" = "$required" ]; }
toolchain_ok() {
  command -v cargo >/dev/null && command -v rustc >/dev/null &&
    new_enough "$(version_of cargo)" && new_enough "$(version_of rustc)"
}

if ! toolchain_ok; then
  found="none"
  command -v cargo >/dev/null && found="$(command -v cargo) $(version_of cargo)"
  rustup_home=${CARGO_HOME:-${HOME:-/root}/.cargo}/bin
  if command -v rustup >/dev/null || [ -x "$rustup_home/rustup" ] ||
    dpkg-query -W -f='${Status}' rustup 2>/dev/null | grep -q "install ok installed"; then
    die "rustup is installed, but PATH gives no cargo and rustc $required or newer (cargo found: $found).
Use rustup's toolchain: \`rustup toolchain install stable\`, with $rustup_home on PATH.
(Not installing Debian's cargo-web/rustc-web: they would conflict with or shadow rustup.)"
  fi
  log "no cargo $required or newer on PATH (found: $found): installing Debian's cargo-web and rustc-web (the Rust toolchain Debian keeps current for its browsers; /usr/bin/cargo, /usr/bin/rustc)"
  apt_install cargo-web rustc-web
  hash -r
  toolchain_ok || die "after installing cargo-web and rustc-web, PATH still gives no cargo and rustc $required or newer (cargo: $(version_of cargo), rustc: $(version_of rustc)). Install a Rust toolchain ($required or newer, e.g. with rustup) and retry."
  log "using $(command -v cargo): $(cargo --version)"
fi
