#!/usr/bin/env bash
# Benchmark of GET /metrics (issue 17); prints the figures docs/benchmarks.md quotes.
#
#   RHYZOME_LAB_NETNS=NAME bench/metrics.sh [REAL_GUESTS]   (default 20)
#
# 1. rhyzome's own share at 100 and 500 instances: the fake hypervisor with one NIC and
#    non-zero counters per domain (crates/rhyzomesrv/examples/bench_metrics.rs), 200
#    sequential scrapes each over loopback HTTP.
# 2. Real guests: a rhyzomesrv on the lab's libvirt with REAL_GUESTS test-kernel guests,
#    100 sequential scrapes with curl (served from the daemon's counter snapshot, refreshed
#    in the background every MetricsMaxAgeMillis: BENCH_MAX_AGE_MS, default the daemon's
#    5000; 0 makes every scrape wait for the bulk call, as before the snapshot existed),
#    against the baseline of the same run: `virsh domstats`
#    of the same domains (one bulk call too, plus virsh's own start and connection), and the
#    per-domain calls it replaces (`virsh domstats DOMAIN` once per domain, in one virsh
#    session).
# BENCH_PROFILE=release builds with the release profile minus its fat LTO (as in the figures
# of docs/benchmarks.md; the full profile only makes it smaller); the default is the dev
# profile the tests use, which is several times slower.
# Removes its daemon's guests (through the daemon) and its temporary directory on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
real=${1:-20}
: "${RHYZOME_LAB_NETNS:?export RHYZOME_LAB_NETNS (scripts/lab.sh up first)}"
eval "$(scripts/lab.sh env)"

if [ "${BENCH_PROFILE:-dev}" = release ]; then
    export CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
    cargo build -q --release -p rhyzomesrv --example bench_metrics --bin rhyzomesrv
    cargo build -q --release -p rhyzomectl
    bin=target/release
else
    cargo build -q -p rhyzomesrv --example bench_metrics --bin rhyzomesrv
    cargo build -q -p rhyzomectl
    bin=target/debug
fi

kernel=testkernel/build/testkernel.elf
[ -f "$kernel" ] || { echo "no $kernel: build the test kernel (cargo test -p rhyzome-testkernel builds it)" >&2; exit 1; }

echo "== fake hypervisor (rhyzome's share)"
for n in ${BENCH_FAKE_SIZES:-100 500}; do
    $bin/examples/bench_metrics --instances "$n" --scrapes 200
done

work=$(mktemp -d /tmp/rhyzome-bench-metrics.XXXXXX)
daemon=
cleanup() {
    if [ -n "$daemon" ]; then
        for i in $(seq 1 "$real"); do
            $bin/rhyzomectl --server "$server" instance delete "benchm-$i" >/dev/null 2>&1 || true
        done
        kill "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/kernels"
cp "$kernel" "$work/kernels/unikernel.virtio"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
server="http://127.0.0.1:$port"
cat > "$work/rhyzome.conf" <<CONF
{"BridgeInterface": "$RHYZOME_LAB_BRIDGE", "Hostname": "bench-metrics-$$", "Bind": "127.0.0.1:$port",
 "DomainType": "qemu", "LibvirtURI": "$RHYZOME_LAB_URI", "StateDir": "$work/state",
 "KernelDirs": ["$work/kernels"], "MetricsMaxAgeMillis": ${BENCH_MAX_AGE_MS:-5000}}
CONF
$bin/rhyzomesrv --config "$work/rhyzome.conf" > "$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do curl -sf "$server/v1/info" >/dev/null && break; sleep 0.1; done
for i in $(seq 1 "$real"); do
    $bin/rhyzomectl --server "$server" instance create --name "benchm-$i" \
        --kernel "$work/kernels/unikernel.virtio" \
        --kernel-parameters "--ipv4=192.168.100.$((i + 10))/24" >/dev/null
done
domains=$(for i in $(seq 1 "$real"); do printf 'rhyzome-benchm-%s ' "$i"; done)

percentiles() { # reads milliseconds, one per line
    sort -n | awk '{a[NR]=$1} END {p50=a[int(NR*0.5+0.999)]; p99=a[int(NR*0.99+0.999)];
        printf "p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n", p50, p99, a[NR]}'
}
echo "== $real real guests on the lab's libvirt"
printf 'GET /metrics (curl):                   '
for _ in $(seq 100); do curl -s -o /dev/null -w '%{time_total}\n' "$server/metrics"; done \
    | awk '{print $1 * 1000}' | percentiles
samples=$(curl -s "$server/metrics" | grep -c '^libvirt_domain_info_cpu_time_seconds_total{')
echo "domains in the exposition: $samples"
printf 'virsh domstats (bulk, same domains):  '
for _ in $(seq 100); do
    s=$(date +%s%N); virsh -q -c "$RHYZOME_LAB_URI" domstats $domains >/dev/null; e=$(date +%s%N)
    echo $(( (e - s) / 1000 ))
done | awk '{print $1 / 1000}' | percentiles
printf 'virsh domstats per domain (1 session): '
cmds=$(for d in $domains; do printf 'domstats %s; ' "$d"; done)
for _ in $(seq 20); do
    s=$(date +%s%N); virsh -q -c "$RHYZOME_LAB_URI" "$cmds" >/dev/null; e=$(date +%s%N)
    echo $(( (e - s) / 1000 ))
done | awk '{print $1 / 1000}' | percentiles
echo "== one bulk call per statistics group, same domains (20 calls in one virsh session)"
for group in --state --cpu-total --balloon --vcpu --interface --block \
    "--cpu-total --balloon --interface" \
    "--state --cpu-total --balloon --vcpu --interface --block"; do
    cmds=$(for _ in $(seq 20); do printf 'domstats %s %s; ' "$group" "$domains"; done)
    s=$(date +%s%N); virsh -q -c "$RHYZOME_LAB_URI" "$cmds" >/dev/null; e=$(date +%s%N)
    printf '%-58s %6.2f ms per call\n' "$group" "$(echo "($e - $s) / 20000000" | bc -l)"
done
