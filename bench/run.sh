#!/usr/bin/env bash
# Rhyzome benchmarks (issue 7): deploy latency against virsh, virt-install and plain QEMU,
# batch create/delete through the API, footprint, and API latency. Writes docs/benchmarks.md.
#
#   bench/run.sh            the whole benchmark (about 10 minutes on 2 cores)
#   bench/run.sh --quick    smoke mode: 3 runs, N = 10 only, short load
#
# Run as root on Debian 12. Every network packet stays on loopback or inside the lab namespace
# (scripts/lab.sh). Everything the run creates is named bench-* and is removed at the end, also
# on failure. Benchmarks are not tests: no timing makes this fail.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "==> $*" >&2; }

scripts/install-deps.sh
missing=()
command -v virt-install >/dev/null || missing+=(virtinst)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi
scripts/lab.sh up

log "building release binaries and the test kernel"
cargo build --release --locked -q -p rhyzomesrv -p rhyzomectl --bins --example bench_api_server
make -s -C testkernel/kernel

PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
# bench.py cleans up after itself; this also covers a kill between its steps.
trap '"$PY" bench/bench.py cleanup || true' EXIT
trap 'exit 130' INT TERM
"$PY" bench/bench.py "$@"
