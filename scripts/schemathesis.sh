#!/usr/bin/env bash
# Runs schemathesis (property-based API testing from PyPI) against a real rhyzomesrv serving
# its own committed OpenAPI document, and fails on any 5xx response or any answer that breaks
# the document. The daemon uses libvirt's built-in test driver (test:///default), so no guest
# runs; what is exercised is the HTTP layer, validation, the store and the libvirt calls.
# `--mode all` generates data that breaks the schema as well as data that fits it (negative
# testing; schemathesis 4's default, pinned here), so malformed bodies must get 4xx, not 5xx.
# Part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/schemathesis-venv
if [ ! -x "$VENV/bin/schemathesis" ]; then
  echo "==> installing schemathesis into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==4.32.5"
fi

work=$(mktemp -d /tmp/rhyzome-st.XXXXXX)
# schemathesis keeps a cache in its working directory; keep it out of the repository.
daemon=""
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/kernels"
make -s -C testkernel/kernel
cp testkernel/build/testkernel.elf "$work/kernels/unikernel.virtio"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/rhyzome.conf" <<CONF
{
  "Bind": "127.0.0.1:$port",
  "Hostname": "schemathesis",
  "LibvirtURI": "test:///default",
  "DomainType": "test",
  "BridgeInterface": "br0",
  "StateDir": "$work/state",
  "KernelDirs": ["$work/kernels"],
  "CreateRateLimit": 1000000,
  "CreateBurst": 1000000
}
CONF
target/debug/rhyzomesrv --config "$work/rhyzome.conf" >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/v1/info" >/dev/null 2>&1 && break
  sleep 0.1
done

# The documented example instance exists, so that operations on it reach their logic
# instead of answering 404.
curl -fsS -o /dev/null -H 'Content-Type: application/json' \
  -d "{\"name\": \"msgrouter\", \"kernel\": \"$work/kernels/unikernel.virtio\"}" \
  "http://127.0.0.1:$port/v1/instances"

echo "==> schemathesis against http://127.0.0.1:$port"
status=0
spec=$PWD/openapi/rhyzome.json
st=$PWD/$VENV/bin/schemathesis
(cd "$work" && "$st" run "$spec" \
  --url "http://127.0.0.1:$port" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --exclude-path /v1/events \
  --mode all \
  --max-examples "${RHYZOME_ST_EXAMPLES:-40}" \
  --request-timeout 10 \
  --no-color) || status=$?
if grep -q "panicked" "$work/daemon.log"; then
  echo "error: the daemon panicked:" >&2
  grep -A5 panicked "$work/daemon.log" >&2
  status=1
fi
kill -0 "$daemon" 2>/dev/null || { echo "error: the daemon died" >&2; tail -20 "$work/daemon.log" >&2; status=1; }
exit $status
