#!/usr/bin/env bash
# Runs the whole test suite: format and lint checks, unit tests, the HTTP API tests, the test
# unikernel's own QEMU tests, the end-to-end and fault-injection tests against real libvirt in
# the lab namespace, the hostile-input probe (scripts/probe.sh, see docs/security.md), and a
# schemathesis run against the OpenAPI document. Installs what it
# needs first. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/lab.sh up

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> building"
cargo build --workspace --locked
make -s -C testkernel/kernel
echo "==> cargo test"
cargo test --workspace --locked -- --test-threads="${RHYZOME_TEST_THREADS:-4}"
echo "==> probe (hostile requests against a daemon on the lab's libvirt)"
scripts/probe.sh
echo "==> schemathesis"
scripts/schemathesis.sh
