#!/usr/bin/env bash
# Installs what Rhyzome needs on Debian 12: QEMU, libvirt, the C toolchain for the test
# unikernel, and the network tools the lab uses. Idempotent; run as root.
set -euo pipefail

packages=(
  qemu-system-x86 qemu-utils/bookworm
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev
  pkg-config gcc make gcc-multilib binutils
  busybox-static cpio iproute2 iputils-ping curl dnsmasq-base iptables
  python3 python3-venv tini
)

missing=0
for p in "${packages[@]}"; do
  name=${p%%/*}
  status=$(dpkg-query -W -f='${Status}' "$name" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing=1
done
# qemu-utils from backports conflicts with qemu-system 7.2 and makes apt remove qemu-img.
if ! command -v qemu-img >/dev/null || ! command -v qemu-system-x86_64 >/dev/null; then missing=1; fi

if [ "$missing" = 1 ]; then
  echo "==> installing packages: ${packages[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --allow-downgrades --no-install-recommends "${packages[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "error: cargo is not installed. Install a Rust toolchain (1.85 or newer, e.g. with rustup) and retry." >&2
  exit 1
fi
