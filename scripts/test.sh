#!/usr/bin/env bash
# Runs the whole test suite: unit tests, the HTTP API tests, the test
# unikernel's own QEMU tests, the end-to-end and fault-injection tests against real libvirt in
# the lab namespace, and a schemathesis run against the OpenAPI document. Installs what it
# needs first. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/lab.sh up

echo "==> building"
cargo build --workspace --locked
make -s -C testkernel/kernel
echo "==> cargo test"
cargo test --workspace --locked -- --test-threads="${RHYZOME_TEST_THREADS:-4}"
echo "==> schemathesis"
scripts/schemathesis.sh
echo "==> first contact: a clean clone built with Debian's toolchain alone, then the demo"
scripts/first-contact-test.sh
