#!/usr/bin/env bash
# Runs the gossip experiment of examples/gossip.toml on the lab and prints how long a rumor
# took to reach every node, from `rhyzomectl testbed collect`'s summary.json.
#
#   examples/gossip-run.sh                 # as the file says: emulated network, 20 ms latency
#   examples/gossip-run.sh --latency 0ms   # the same network without latency
#   examples/gossip-run.sh --plain         # a plain network (libvirt bridge, no emulator)
#   options: --nodes N (49), --keep (leave the bed and daemon running), --out DIR
#
# The first two need a daemon whose test-bed files take `emulated`/`link` (issue 15's file
# keys); one that refuses them says so at their line and column, and --plain still runs.
#
# What it does, all inside the lab (scripts/lab.sh; network traffic only to the guests, in
# the lab's namespace):
#   1. builds rhyzomesrv, rhyzomectl, rhyzome-linkemu and the test kernel (PROFILE=debug or
#      release, default release), starts a daemon of its own in a temporary directory;
#   2. applies the bed (--wait), reads every instance's address;
#   3. sets every guest's wall clock from the host's (`clock-set` samples, UDP port 7, until
#      a `clock` read shows it at most 5 ms behind), injects `rumor ID 0 EPOCH_MS` at the seed
#      (UDP port 7946);
#   4. collects until every instance has its RESULT line (at most 60 s), then prints the
#      maximum and median of `ms` and `hops`, and the collected directory;
#   5. destroys the bed and stops its daemon (unless --keep).
set -euo pipefail
cd "$(dirname "$0")/.."

LATENCY=""
PLAIN=0
KEEP=0
NODES=49
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --latency) LATENCY=$2; shift 2 ;;
    --plain) PLAIN=1; shift ;;
    --nodes) NODES=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: $0 [--latency 20ms] [--plain] [--nodes N] [--keep] [--out DIR]" >&2; exit 2 ;;
  esac
done
PROFILE=${PROFILE:-release}
PORT=${RHYZOME_GOSSIP_PORT:-8095}
SERVER=http://127.0.0.1:$PORT
log() { echo "==> $*" >&2; }

scripts/lab.sh up >/dev/null
eval "$(scripts/lab.sh env)"
NS=$RHYZOME_LAB_NETNS

log "building ($PROFILE)"
flag=(); [ "$PROFILE" = release ] && flag=(--release)
cargo build "${flag[@]}" --locked -q -p rhyzomesrv -p rhyzomectl -p rhyzome-linkemu
make -s -C testkernel/kernel
BIN=$PWD/target/$PROFILE
CTL=("$BIN/rhyzomectl" --server "$SERVER")

WORK=$(mktemp -d /tmp/rhyzome-gossip-XXXXXX)
OUT=${OUT:-$WORK/results}
mkdir -p "$WORK/kernels"
install -m 0644 testkernel/build/testkernel.elf "$WORK/kernels/node.virtio"
cat >"$WORK/rhyzome.conf" <<CONF
{
  "BridgeInterface": "$RHYZOME_LAB_BRIDGE",
  "Hostname": "gossip-example-$$",
  "Bind": "127.0.0.1:$PORT",
  "DomainType": "qemu",
  "StateDir": "$WORK/state",
  "KernelDirs": ["$WORK/kernels"],
  "LibvirtURI": "$RHYZOME_LAB_URI",
  "LinkEmulator": "$BIN/rhyzome-linkemu",
  "LinkEmulatorNetns": "/run/netns/$NS"
}
CONF
"$BIN/rhyzomesrv" --config "$WORK/rhyzome.conf" >"$WORK/daemon.log" 2>&1 &
DAEMON=$!
stop() {
  if [ "$KEEP" = 0 ]; then
    "${CTL[@]}" testbed destroy gossip >/dev/null 2>&1 || true
    kill "$DAEMON" 2>/dev/null || true
    wait "$DAEMON" 2>/dev/null || true
  else
    log "kept: daemon pid $DAEMON at $SERVER, state in $WORK"
  fi
}
trap stop EXIT
for _ in $(seq 100); do "${CTL[@]}" info >/dev/null 2>&1 && break; sleep 0.1; done
"${CTL[@]}" info >/dev/null

# The bed file: the example, with this build's kernel, the node count and the conditions asked.
sed -e "s|^kernel = .*|kernel = \"$WORK/kernels/node.virtio\"|" \
    -e "s|^count = 49|count = $NODES|" examples/gossip.toml >"$WORK/gossip.toml"
if [ "$PLAIN" = 1 ]; then
  sed -i -e '/^emulated = /d' -e '/^link = /d' "$WORK/gossip.toml"
elif [ -n "$LATENCY" ]; then
  sed -i "s|^link = .*|link = { latency = \"$LATENCY\" }|" "$WORK/gossip.toml"
fi
log "applying $WORK/gossip.toml (1 seed, $NODES nodes)"
started=$(date +%s.%N)
"${CTL[@]}" testbed apply -f "$WORK/gossip.toml" --wait --timeout 15m
log "ready in $(echo "$(date +%s.%N) - $started" | bc) s"

"${CTL[@]}" -o json instance list --selector testbed=gossip >"$WORK/instances.json"
python3 - "$WORK/instances.json" >"$WORK/addresses" <<'PY'
import json, sys
for i in json.load(open(sys.argv[1])):
    print(i["labels"]["group"], i["name"], i["attachments"][0]["ipv4"].split("/")[0])
PY

log "setting the guests' clocks and injecting the rumor at the seed"
RUMOR=r$(date +%s)
ip netns exec "$NS" python3 - "$WORK/addresses" "$RUMOR" <<'PY'
import socket, sys, time
rows = [l.split() for l in open(sys.argv[1])]
rumor = sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
ms = lambda: int(time.time() * 1000)

def ask(ip, text):
    s.sendto(text.encode(), (ip, 7))
    try:
        return s.recv(200).decode()
    except socket.timeout:
        return ""

def field(reply, key):
    return next((w.split("=", 1)[1] for w in reply.split() if w.startswith(key + "=")), None)

# First, every guest's TSC rate measured from its RTC's edges (`rate=rtc`, about 19 s after
# its boot): the boot calibration can be off by a percent in a guest starved while it ran.
pending, deadline = list(rows), time.time() + 60
while pending and time.time() < deadline:
    pending = [r for r in pending if field(ask(r[2], "clock"), "rate") != "rtc"]
    if pending:
        time.sleep(0.5)
if pending:
    print(f"warning: boot-calibrated clocks on {[n for _, n, _ in pending]}", file=sys.stderr)

# Each guest keeps its least-delayed sample; the samples go round the guests, so that a guest
# starved of CPU for a moment still gets some on time. A guest clock can only be behind (a
# sample only arrives late): a `clock` read is checked against the time it was asked at.
todo, deadline = [r for r in rows], time.time() + 60
while todo:
    for k in range(8):
        for group, name, ip in todo:
            ask(ip, f"clock-set {ms()}")
        time.sleep((3 + 7 * k % 11) / 1000)
    behind = []
    for group, name, ip in todo:
        before = ms()
        reply = ask(ip, "clock")
        if field(reply, "set") != "1" or int(field(reply, "wall_ms")) < before - 5:
            behind.append((group, name, ip))
    if behind and time.time() > deadline:
        sys.exit(f"clocks not set within 5 ms: {[n for _, n, _ in behind]}")
    todo = behind
seed = next(ip for group, name, ip in rows if group == "seed")
s.sendto(f"rumor {rumor} 0 {ms()}".encode(), (seed, 7946))
PY

log "collecting until every node has printed its RESULT"
deadline=$(( $(date +%s) + 60 ))
while :; do
  rm -rf "$OUT"
  "${CTL[@]}" testbed collect gossip -d "$OUT" >/dev/null
  if python3 - "$OUT/summary.json" "$RUMOR" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
sys.exit(0 if all(any(r.get("rumor") == sys.argv[2] for r in i["results"]) for i in s["instances"]) else 1)
PY
  then break; fi
  [ "$(date +%s)" -lt "$deadline" ] || { echo "error: not every node printed its RESULT in 60 s" >&2; break; }
  sleep 1
done

python3 - "$OUT/summary.json" "$RUMOR" <<'PY'
import json, statistics, sys
s = json.load(open(sys.argv[1]))
rows = [r for i in s["instances"] for r in i["results"] if r.get("rumor") == sys.argv[2]]
ms = sorted(int(r["ms"]) for r in rows if "ms" in r)
hops = sorted(int(r["hops"]) for r in rows)
nets = ", ".join(f'{n["name"]} ({"emulated" if n["emulated"] else "plain"}'
                 + (f', defaults {n["conditions"]["defaults"]}' if n.get("conditions") else "") + ")"
                 for n in s["networks"])
print(f"test bed {s['testbed']} (seed {s['seed']}), network {nets}")
print(f"rumor {sys.argv[2]} reached {len(rows)} of {len(s['instances'])} instances")
if ms:
    print(f"  ms:   max {ms[-1]}, median {statistics.median(ms):g}, min {ms[0]}")
    print(f"  hops: max {hops[-1]}, median {statistics.median(hops):g}")
unset = [r for r in rows if "clock" in r]
if unset:
    print(f"  warning: {len(unset)} lines with an unset clock: {unset[:3]}")
PY
log "results in $OUT"
