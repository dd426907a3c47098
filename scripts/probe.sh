#!/usr/bin/env bash
# Repeats the adversarial review of issue 11 against a real daemon on the lab's real libvirt
# (scripts/lab.sh up first): hostile requests from tokens of every kind, then checks that
# nothing broke. It fails on any 5xx, any answer other than the one expected, a panic in the
# daemon's log, a file left in StateDir (kernel blobs, console logs, uploads) once everything
# the probes created is deleted, or a domain left behind. docs/security.md lists what is
# probed and what is promised. Part of scripts/test.sh; needs root, curl and python3.
#
# Uses the lab's own libvirt (`scripts/lab.sh env`), never the machine's qemu:///system.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/lab.sh env)"

make -s -C testkernel/kernel
# RHYZOME_PROBE_BINARY probes another build (an older one, to see the probe catch its faults).
if [ -n "${RHYZOME_PROBE_BINARY:-}" ]; then
  SRV=$RHYZOME_PROBE_BINARY
else
  cargo build -q -p rhyzomesrv --bin rhyzomesrv
  SRV=$PWD/target/debug/rhyzomesrv
fi

work=$(mktemp -d /tmp/rhyzome-probe.XXXXXX)
host="probe-$$"
daemon=""
daemon_id=""
admin=""
base=""
failures=0
declare -a created_names=()
declare -a network_names=()
cleanup() {
  if [ -n "$daemon" ]; then
    # After a failure, instances a probe created unexpectedly may still run: the daemon
    # deletes them (and only it knows its guests).
    curl -sS -H "Authorization: Bearer $admin" "$base/v1/instances" 2>/dev/null |
      python3 -c 'import json,sys; [print(i["name"]) for i in json.load(sys.stdin)["instances"]]' 2>/dev/null |
      while read -r name; do
        curl -sS -o /dev/null -X DELETE -H "Authorization: Bearer $admin" "$base/v1/instances/$name" || true
      done
    kill "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
  fi
  # The daemon's own volume pool is named by its identity (this run's daemon made it).
  if [ -n "$daemon_id" ]; then
    virsh -q -c "$RHYZOME_LAB_URI" pool-destroy "rhyzome-$daemon_id" >/dev/null 2>&1 || true
    virsh -q -c "$RHYZOME_LAB_URI" pool-undefine "rhyzome-$daemon_id" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

kernels=$work/kernels
mkdir -p "$kernels"
cp testkernel/build/testkernel.elf "$kernels/unikernel.virtio"
cp testkernel/build/testkernel-2nic.elf "$kernels/two.virtio" # devices "service" and "admin"
cp testkernel/build/testkernel-block.elf "$kernels/block.virtio" # "service" and the disk "storage"
echo "just some text" >"$kernels/text.virtio"
mkdir "$kernels/adir"
ln -s /etc/shadow "$kernels/shadow.virtio"
echo secret >"$work/secret"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
cat >"$work/rhyzome.conf" <<CONF
{
  "Bind": "127.0.0.1:$port",
  "Hostname": "$host",
  "LibvirtURI": "$RHYZOME_LAB_URI",
  "DomainType": "qemu",
  "BridgeInterface": "$RHYZOME_LAB_BRIDGE",
  "StateDir": "$work/state",
  "KernelDirs": ["$kernels"],
  "CreateRateLimit": 1000,
  "CreateBurst": 1000
}
CONF
tok() { "$SRV" --config "$work/rhyzome.conf" token create "$@" 2>/dev/null; }
admin=$(tok --name admin --role admin)
viewer=$(tok --name viewer --role viewer)
alice=$(tok --name alice --role operator --prefix alice-)
bob=$(tok --name bob --role operator --prefix bob-)

"$SRV" --config "$work/rhyzome.conf" >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 150); do
  curl -fsS -o /dev/null -H "Authorization: Bearer $admin" "$base/v1/info" 2>/dev/null && break
  sleep 0.1
done
daemon_id=$(curl -fsS -H "Authorization: Bearer $admin" "$base/v1/info" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["daemon_id"])')

# probe NAME EXPECTED_STATUS [curl arguments...]: one request; its status must be EXPECTED
# (never 5xx). The body is kept in $work/body for checks that follow.
probe() {
  local name=$1 expected=$2
  shift 2
  local status
  status=$(curl -sS -o "$work/body" -w '%{http_code}' --max-time 60 "$@") || status="curl-error"
  if [[ "$status" == 5* || "$status" == curl-error ]]; then
    fail "$name: $status $(head -c 300 "$work/body" 2>/dev/null)"
  elif [ "$status" != "$expected" ]; then
    fail "$name: expected $expected, got $status $(head -c 300 "$work/body")"
  fi
}
body_has() { grep -q -- "$2" "$work/body" || fail "$1: the answer lacks '$2': $(head -c 300 "$work/body")"; }
body_lacks() { ! grep -q -- "$2" "$work/body" || fail "$1: the answer reveals '$2': $(head -c 300 "$work/body")"; }

# create NAME EXPECTED TOKEN JSON: the instance name "p" becomes p1, p2, ..., so that a probe
# that wrongly creates its instance does not turn the following ones into 409s.
probes_named_p=0
create() {
  probes_named_p=$((probes_named_p + 1))
  local body=${4//\"name\": \"p\"/\"name\": \"p$probes_named_p\"}
  created_names+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("name",""))' "$body" 2>/dev/null || true)")
  probe "$1" "$2" -X POST -H "Authorization: Bearer $3" -H 'Content-Type: application/json' \
    --data-binary "$body" "$base/v1/instances"
}
K=$kernels/unikernel.virtio

echo "==> authentication"
probe "no token" 401 "$base/v1/instances"
probe "wrong token" 401 -H "Authorization: Bearer rhz_wrong" "$base/v1/instances"
probe "lower-case scheme" 200 -H "Authorization: bearer $admin" "$base/v1/instances"
probe "Basic scheme" 401 -H "Authorization: Basic $admin" "$base/v1/instances"
create "viewer creates" 403 "$viewer" "{\"name\": \"v\", \"kernel\": \"$K\"}"

echo "==> names, parameters, bodies"
create "name ../../etc" 422 "$admin" "{\"name\": \"../../etc\", \"kernel\": \"$K\"}"
create "name <a href=x>" 422 "$admin" "{\"name\": \"<a href=x>\", \"kernel\": \"$K\"}"
create "name of 64 characters" 422 "$admin" "{\"name\": \"$(printf 'x%.0s' $(seq 64))\", \"kernel\": \"$K\"}"
create "NUL in parameters" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"kernel_parameters\": \"a\\u0000b\"}"
create "8 KiB parameters" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"kernel_parameters\": \"$(head -c 8192 /dev/zero | tr '\0' x)\"}"
create "malformed JSON" 400 "$admin" "{\"name\": "
create "trailing data" 400 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\"}garbage"
create "array body" 400 "$admin" "[\"p\", \"$K\"]"
create "array for network" 400 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"network\": [\"bridge\", \"$RHYZOME_LAB_BRIDGE\"]}"
create "unknown field" 400 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"colour\": 1}"
create "wrong type" 400 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"memory_mib\": \"lots\"}"
probe "text/plain body" 415 -X POST -H "Authorization: Bearer $admin" -H 'Content-Type: text/plain' \
  --data-binary '{}' "$base/v1/instances"
head -c 70000 /dev/zero | tr '\0' x >"$work/big"
probe "oversized body" 413 -X POST -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  --data-binary @"$work/big" "$base/v1/instances"
create "memory beyond the limit" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"memory_mib\": 1073741824}"
create "never with retries" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"restart\": {\"policy\": \"never\", \"max_retries\": 3}}"
create "exit codes with always" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"restart\": {\"policy\": \"always\", \"exit_codes\": [1]}}"

echo "==> network"
create "bridge lo" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"network\": {\"mode\": \"bridge\", \"bridge\": \"lo\"}}"
body_has "bridge lo" '"field":"network.bridge"'
create "missing bridge" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"network\": {\"mode\": \"bridge\", \"bridge\": \"nonexistbr\"}}"
body_has "missing bridge" 'nonexistbr'
create "all-zero MAC" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"network\": {\"mac\": \"00:00:00:00:00:00\"}}"
create "multicast MAC" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"network\": {\"mac\": \"01:00:5e:00:00:01\"}}"
create "nets: a missing bridge for the second device" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$kernels/two.virtio\", \"nets\": {\"service\": \"$RHYZOME_LAB_BRIDGE\", \"admin\": \"nonexistbr\"}}"
body_has "nets: a missing bridge for the second device" '"field":"nets.admin"'
body_has "nets: a missing bridge for the second device" 'nonexistbr'
create "nets: lo for the second device" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$kernels/two.virtio\", \"nets\": {\"service\": \"$RHYZOME_LAB_BRIDGE\", \"admin\": \"lo\"}}"
body_has "nets: lo for the second device" '"field":"nets.admin"'
create "nets on a one-NIC kernel" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"nets\": {\"service0\": \"$RHYZOME_LAB_BRIDGE\", \"service1\": \"nonexistbr\"}}"

echo "==> kernel paths"
for path in /etc/passwd "$kernels/../secret" "$kernels/shadow.virtio" "$kernels/missing.virtio" "$work/missing" "$work/secret/x"; do
  create "tenant kernel $path" 422 "$alice" "{\"name\": \"alice-p\", \"kernel\": \"$path\"}"
  body_has "tenant kernel $path" 'not an allowed kernel path'
  body_lacks "tenant kernel $path" '/etc/shadow'
  body_lacks "tenant kernel $path" "$kernels\""
done
create "admin kernel via symlink" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$kernels/shadow.virtio\"}"
body_has "admin kernel via symlink" '/etc/shadow'
create "a directory" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$kernels/adir\"}"
create "not a kernel" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$kernels/text.virtio\"}"
grep -q '"detail":.*shadow' "$work/state/audit.log" || fail "the audit log lacks the detail of a tenant's refused kernel path"

echo "==> guests (real libvirt)"
create "XML metacharacters stay text" 201 "$admin" "{\"name\": \"meta\", \"kernel\": \"$K\", \"kernel_parameters\": \"--x=</cmdline><devices><disk/></devices> & 'q'\"}"
create "alice's instance" 201 "$alice" "{\"name\": \"alice-web\", \"kernel\": \"$K\"}"
create "duplicate name" 409 "$alice" "{\"name\": \"alice-web\", \"kernel\": \"$K\"}"
create "name outside the prefix" 403 "$alice" "{\"name\": \"bob-web\", \"kernel\": \"$K\"}"
probe "bob reads alice's instance" 404 -H "Authorization: Bearer $bob" "$base/v1/instances/alice-web"
probe "bob deletes alice's instance" 404 -X DELETE -H "Authorization: Bearer $bob" "$base/v1/instances/alice-web"
probe "bob's list" 200 -H "Authorization: Bearer $bob" "$base/v1/instances"
body_lacks "bob's list" 'alice-web'
probe "console of a missing instance" 404 -H "Authorization: Bearer $admin" "$base/v1/instances/nope/console"
probe "negative tail" 400 -H "Authorization: Bearer $admin" "$base/v1/instances/meta/console?tail_bytes=-1"

echo "==> labels and link conditions"
create "label key with a space" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"labels\": {\"a b\": \"x\"}}"
create "label value with markup" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"labels\": {\"group\": \"<eu>\"}}"
probe "selector without a value" 422 -H "Authorization: Bearer $admin" "$base/v1/instances?selector=group"
create "latency on a plain network" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"link\": {\"latency_ms\": 50}}"
body_has "latency on a plain network" 'link.latency_ms'
# This lab's kernel has no tc police/sfq: libvirt cannot shape, the start fails, nothing stays.
create "rate on a plain network" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"link\": {\"rate_bps\": 1000000}}"
body_has "rate on a plain network" 'link.rate_bps'
link() { probe "$1" "$2" -X PUT -H "Authorization: Bearer $3" -H 'Content-Type: application/json' --data-binary "$5" "$base/v1/instances/$4/link"; }
link "negative latency" 422 "$alice" alice-web '{"conditions": {"latency_ms": -1}}'
link "loss over 100 %" 422 "$alice" alice-web '{"conditions": {"loss_percent": 120}}'
link "rate 0" 422 "$alice" alice-web '{"conditions": {"rate_bps": 0}}'
link "latency beyond f64" 400 "$alice" alice-web '{"conditions": {"latency_ms": 1e400}}'
link "conditions as a string" 400 "$alice" alice-web '{"conditions": "latency=1ms"}'
link "viewer changes a link" 403 "$viewer" alice-web '{"conditions": {}}'
link "bob changes alice's link" 404 "$bob" alice-web '{"conditions": {}}'
link "alice clears her link" 200 "$alice" alice-web '{"conditions": {}}'

echo "==> images"
cp "$K" "$work/alice-only.virtio" && printf 'a' >>"$work/alice-only.virtio"
alice_only=$(sha256sum "$work/alice-only.virtio" | cut -d' ' -f1)
upload() { # NAME EXPECTED TOKEN FILE IMAGE-NAME
  probe "$1" "$2" -X POST -H "Authorization: Bearer $3" -H 'Content-Type: application/octet-stream' \
    --data-binary @"$4" "$base/v1/images?name=$5"
}
upload "alice uploads" 201 "$alice" "$K" alice-k:1
alice_time=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image"]["uploaded_at"])' "$work/body")
upload "alice uploads her own" 201 "$alice" "$work/alice-only.virtio" alice-only:1
sleep 1
upload "bob uploads the same bytes" 201 "$bob" "$K" bob-k:1
body_lacks "bob uploads the same bytes" "$alice_time"
body_lacks "bob uploads the same bytes" 'alice-'
probe "bob HEADs alice's image" 404 -I -H "Authorization: Bearer $bob" "$base/v1/images/sha256:$alice_only"
probe "bob GETs alice's image" 404 -H "Authorization: Bearer $bob" "$base/v1/images/sha256:$alice_only"
probe "bob names alice's digest" 422 -X POST -H "Authorization: Bearer $bob" -H 'Content-Type: application/octet-stream' \
  -H "X-Rhyzome-Sha256: $alice_only" --data-binary '' "$base/v1/images?name=bob-stolen:1"
upload "an image that is not a kernel" 422 "$alice" "$kernels/text.virtio" alice-text:1

echo "==> networks"
# net NAME EXPECTED TOKEN JSON: a network create; every name tried is checked below.
net() {
  network_names+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("name",""))' "$4" 2>/dev/null || true)")
  probe "$1" "$2" -X POST -H "Authorization: Bearer $3" -H 'Content-Type: application/json' \
    --data-binary "$4" "$base/v1/networks"
}
net "viewer creates a network" 403 "$viewer" '{"name": "pn", "subnet": "10.93.0.0/24"}'
net "bob names alice's prefix" 403 "$bob" '{"name": "alice-pn", "subnet": "10.93.0.0/24"}'
net "network name with XML" 422 "$admin" '{"name": "a\"/><forward mode=\"nat\"/>", "subnet": "10.93.0.0/24"}'
body_has "network name with XML" '"field":"name"'
net "subnet of the lab bridge" 422 "$admin" '{"name": "pn1", "subnet": "192.168.100.0/24"}'
body_has "subnet of the lab bridge" '"field":"subnet"'
net "subnet around the lab bridge" 422 "$admin" '{"name": "pn2", "subnet": "192.168.96.0/20"}'
net "gateway outside" 422 "$admin" '{"name": "pn3", "subnet": "10.93.0.0/24", "gateway": "10.94.0.1"}'
body_has "gateway outside" '"field":"gateway"'
net "a /31" 422 "$admin" '{"name": "pn4", "subnet": "10.93.0.0/31"}'
net "host bits set" 422 "$admin" '{"name": "pn5", "subnet": "10.93.0.1/24"}'
net "unknown mode" 400 "$admin" '{"name": "pn6", "subnet": "10.93.0.0/24", "mode": "bridged"}'
net "alice's network" 201 "$alice" '{"name": "alice-pn", "subnet": "10.93.0.0/24"}'
probe "bob reads alice's network" 404 -H "Authorization: Bearer $bob" "$base/v1/networks/alice-pn"
probe "bob deletes alice's network" 404 -X DELETE -H "Authorization: Bearer $bob" "$base/v1/networks/alice-pn"
probe "bob lists networks" 200 -H "Authorization: Bearer $bob" "$base/v1/networks"
body_lacks "bob lists networks" 'alice-'
net "bob overlaps alice's network" 422 "$bob" '{"name": "bob-pn", "subnet": "10.93.0.128/25"}'
body_lacks "bob overlaps alice's network" 'alice-'
create "unknown placeholder" 422 "$alice" "{\"name\": \"alice-p\", \"kernel\": \"$K\", \"network\": {\"name\": \"alice-pn\"}, \"kernel_parameters\": \"--ipv4={nope}\"}"
body_has "unknown placeholder" '{nope}'
create "placeholder without a network" 422 "$admin" "{\"name\": \"p\", \"kernel\": \"$K\", \"kernel_parameters\": \"--ipv4={cidr}\"}"
create "the gateway asked for" 422 "$alice" "{\"name\": \"alice-q\", \"kernel\": \"$K\", \"network\": {\"name\": \"alice-pn\", \"ipv4\": \"10.93.0.1\"}}"
probe "delete alice's network" 204 -X DELETE -H "Authorization: Bearer $alice" "$base/v1/networks/alice-pn"

echo "==> volumes: names, sizes, tenants, digests"
vol() { # vol NAME EXPECTED TOKEN JSON
  probe "$1" "$2" -X POST -H "Authorization: Bearer $3" -H 'Content-Type: application/json' \
    -d "$4" "$base/v1/volumes"
}
vol "volume name with a path" 422 "$admin" '{"name": "../../etc/passwd", "size_bytes": 4096}'
vol "volume name with a slash" 422 "$admin" '{"name": "a/b", "size_bytes": 4096}'
vol "volume name with a NUL" 422 "$admin" '{"name": "a\u0000b", "size_bytes": 4096}'
vol "volume of zero bytes" 422 "$admin" '{"name": "z", "size_bytes": 0}'
vol "volume not in sectors" 422 "$admin" '{"name": "z", "size_bytes": 1000}'
vol "volume larger than the pool" 422 "$admin" '{"name": "z", "size_bytes": 1152921504606846976}'
vol "volume size overflowing u64" 400 "$admin" '{"name": "z", "size_bytes": 18446744073709551616}'
vol "clone of nothing" 422 "$admin" '{"name": "z", "clone": "nothing"}'
vol "viewer creates a volume" 403 "$viewer" '{"name": "v", "size_bytes": 4096}'
vol "alice names bob's prefix" 403 "$alice" '{"name": "bob-v", "size_bytes": 4096}'
vol "alice's volume" 201 "$alice" '{"name": "alice-v", "size_bytes": 1048576}'
probe "bob reads alice's volume" 404 -H "Authorization: Bearer $bob" "$base/v1/volumes/alice-v"
probe "bob downloads alice's volume" 404 -H "Authorization: Bearer $bob" "$base/v1/volumes/alice-v/content"
probe "bob deletes alice's volume" 404 -X DELETE -H "Authorization: Bearer $bob" "$base/v1/volumes/alice-v"
vol "bob clones alice's volume" 422 "$bob" '{"name": "bob-c", "clone": "alice-v"}'
probe "bob's volume list" 200 -H "Authorization: Bearer $bob" "$base/v1/volumes"
grep -q alice "$work/body" && fail "bob's volume list shows alice's: $(head -c 300 "$work/body")"
probe "volume path with dots" 404 -H "Authorization: Bearer $admin" "$base/v1/volumes/..%2F..%2Fetc"
probe "upload with a wrong digest" 422 -X PUT -H "Authorization: Bearer $alice" \
  -H 'Content-Type: application/octet-stream' -H "X-Rhyzome-Sha256: $(printf '0%.0s' $(seq 64))" \
  --data-binary 'not this' "$base/v1/volumes/alice-v/content"
head -c 2000000 /dev/zero >"$work/big"
probe "upload larger than the volume" 413 -X PUT -H "Authorization: Bearer $alice" \
  -H 'Content-Type: application/octet-stream' --data-binary "@$work/big" "$base/v1/volumes/alice-v/content"
probe "shrink a volume" 422 -X POST -H "Authorization: Bearer $alice" -H 'Content-Type: application/json' \
  -d '{"size_bytes": 512}' "$base/v1/volumes/alice-v/resize"
create "bob attaches alice's volume" 422 "$bob" \
  "{\"name\": \"bob-p\", \"kernel\": \"$kernels/block.virtio\", \"volumes\": {\"storage\": {\"volume\": \"alice-v\"}}}"
probe "delete alice's volume" 204 -X DELETE -H "Authorization: Bearer $alice" "$base/v1/volumes/alice-v"
echo "==> test beds"
# bed NAME EXPECTED TOKEN TOML: a test-bed apply; a refused file must create nothing (the
# clean-up below checks that no instance, network or domain remains).
bed() {
  local body
  body=$(python3 -c 'import json,sys; print(json.dumps({"file": sys.argv[1]}))' "$4")
  probe "$1" "$2" -X POST -H "Authorization: Bearer $3" -H 'Content-Type: application/json' \
    --data-binary "$body" "$base/v1/testbeds"
}
bed "viewer applies a bed" 403 "$viewer" "name = \"tb\"
[[groups]]
name = \"g\"
count = 1
kernel = \"$K\""
bed "bob names alice's prefix" 403 "$bob" "name = \"alice-tb\"
[[groups]]
name = \"g\"
count = 1
kernel = \"$K\""
bed "unknown key in a bed" 422 "$admin" "name = \"tb\"
colour = 1"
body_has "unknown key in a bed" 'line 2, column 1'
bed "bed group with XML in its parameters and a bad placeholder" 422 "$admin" "name = \"tb\"
[[groups]]
name = \"g\"
count = 2
kernel = \"$K\"
kernel_parameters = \"</cmdline><devices/> {peers:g:5}\""
body_has "bed group with XML in its parameters and a bad placeholder" 'line 6, column 43'
probe "bob reads a bed that is not there" 404 -H "Authorization: Bearer $bob" "$base/v1/testbeds/alice-tb"
# Scale and faults, on a bed of no instance: every refusal names its field and changes nothing.
bed "an empty bed" 200 "$admin" "name = \"tbp\"
[[groups]]
name = \"g\"
count = 0
kernel = \"$K\""
# op NAME EXPECTED TOKEN VERB JSON: POST /v1/testbeds/tbp/VERB.
op() {
  probe "$1" "$2" -X POST -H "Authorization: Bearer $3" -H 'Content-Type: application/json' \
    --data-binary "$5" "$base/v1/testbeds/tbp/$4"
}
op "scale an unknown group" 422 "$admin" scale '{"counts": {"nope": 1}}'
body_has "scale an unknown group" 'counts.nope'
op "scale to a negative count" 422 "$admin" scale '{"counts": {"g": -1}}'
op "scale to an absurd count" 422 "$admin" scale '{"counts": {"g": 99999999999}}'
op "scale with no counts" 422 "$admin" scale '{"counts": {}}'
op "scale with a float" 400 "$admin" scale '{"counts": {"g": 1.5}}'
body_has "scale with a float" '"field":"counts.g"'
op "viewer scales" 403 "$viewer" scale '{"counts": {"g": 0}}'
op "bob scales a bed he cannot see" 404 "$bob" scale '{"counts": {"g": 0}}'
op "kill in an empty group" 422 "$admin" faults '{"action": "kill", "group": "g", "count": 1}'
body_has "kill in an empty group" '"count"'
op "kill with an unknown action" 400 "$admin" faults '{"action": "explode"}'
body_has "kill with an unknown action" '"field":"action"'
op "partition a group from itself" 422 "$admin" faults '{"action": "partition", "between": ["group=g", "group=g"]}'
op "partition with XML in a side" 422 "$admin" faults '{"action": "partition", "between": ["group=</x>", "group=g"]}'
op "heal a bed without emulated networks" 409 "$admin" faults '{"action": "heal"}'
probe "destroy the empty bed" 204 -X DELETE -H "Authorization: Bearer $admin" "$base/v1/testbeds/tbp"

echo "==> clean-up, then nothing may remain"
for n in meta alice-web; do
  probe "delete $n" 204 -X DELETE -H "Authorization: Bearer $admin" "$base/v1/instances/$n"
done
# Each tenant deletes its own names; the shared content goes with the last of them.
probe "bob deletes his name" 204 -X DELETE -H "Authorization: Bearer $bob" "$base/v1/images/bob-k:1"
probe "alice's image after bob's delete" 200 -H "Authorization: Bearer $alice" "$base/v1/images/alice-k:1"
for i in alice-k:1 alice-only:1; do
  probe "delete image $i" 204 -X DELETE -H "Authorization: Bearer $alice" "$base/v1/images/$i"
done
probe "list after clean-up" 200 -H "Authorization: Bearer $admin" "$base/v1/instances"
python3 -c 'import json,sys; sys.exit(len(json.load(open(sys.argv[1]))["instances"]))' "$work/body" ||
  fail "instances remain: $(head -c 300 "$work/body")"
for dir in blobs consoles uploads volumes; do
  left=$(find "$work/state/$dir" -mindepth 1 2>/dev/null | head -5)
  [ -z "$left" ] || fail "files left in StateDir/$dir: $left"
done
# The lab's domains, listed strictly: a virsh failure is a failure, never "nothing is left".
if domains=$(virsh -q -c "$RHYZOME_LAB_URI" list --all --name); then
  for n in $(printf '%s\n' "${created_names[@]}" | sort -u); do
    if grep -qx "rhyzome-$n" <<<"$domains"; then
      fail "domain rhyzome-$n is left"
    fi
  done
else
  fail "cannot list the lab's domains, so none can be known to be gone"
fi
# The lab's networks, listed as strictly: no network a probe tried may remain.
if networks=$(virsh -q -c "$RHYZOME_LAB_URI" net-list --all --name); then
  for n in $(printf '%s\n' "${network_names[@]}" | sort -u); do
    if grep -qxF "rhyzome-$n" <<<"$networks"; then
      fail "network rhyzome-$n is left"
    fi
  done
else
  fail "cannot list the lab's networks, so none can be known to be gone"
fi
if grep -q panicked "$work/daemon.log"; then
  fail "the daemon panicked: $(grep -A5 panicked "$work/daemon.log")"
fi
kill -0 "$daemon" 2>/dev/null || fail "the daemon died: $(tail -20 "$work/daemon.log")"

if [ "$failures" -gt 0 ]; then
  echo "probe: $failures failure(s)" >&2
  exit 1
fi
echo "probe: all probes held"
