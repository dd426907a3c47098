#!/usr/bin/env bash
# Runs the whole test suite (the format and lint checks are scripts/lint.sh): unit tests, the
# HTTP API tests, the test unikernel's own QEMU tests, the end-to-end and fault-injection tests
# against real libvirt in the lab namespace (a private libvirt), the hostile-input probe
# (scripts/probe.sh, see docs/security.md), a schemathesis run against the OpenAPI document,
# the first-contact test and the Debian package test; then checks that the machine's own
# libvirt was not touched. Installs what it needs first. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."

# With Chromium and chromedriver: the dashboard is tested in a real browser.
scripts/install-deps.sh --browser
make -s -C testkernel/kernel
# The machine's own libvirt (or one started to stand in for an operator's, with a guest): the
# suite must leave it exactly as it was; checked at the end.
scripts/bystander.sh start
trap 'scripts/bystander.sh stop' EXIT
scripts/lab.sh up

echo "==> building"
cargo build --workspace --locked
make -s -C testkernel/kernel
echo "==> cargo test"
# --no-fail-fast: one failing test binary must not hide the others' results.
cargo test --workspace --locked --no-fail-fast -- --test-threads="${RHYZOME_TEST_THREADS:-4}"
echo "==> probe (hostile requests against a daemon on the lab's libvirt)"
scripts/probe.sh
echo "==> schemathesis"
scripts/schemathesis.sh
echo "==> the Debian package: built, checked, installed, run, upgraded, removed"
scripts/package-test.sh
echo "==> first contact: a clean clone built with Debian's toolchain alone, then the demo"
scripts/first-contact-test.sh
echo "==> the machine's own libvirt is untouched"
scripts/bystander.sh check
