#!/usr/bin/env bash
# The format and lint checks: `cargo fmt --check` and `cargo clippy -D warnings` over the whole
# workspace. The root Cargo.toml's [workspace.lints] denies warnings too, so a plain
# `cargo clippy` fails on the same things; `-D warnings` stays here so that this script does
# not depend on every crate opting in. Kept apart from scripts/test.sh because they need
# rustfmt and clippy, which rustup provides and Debian's cargo-web/rustc-web do not. CI
# (.ci/run) runs both scripts.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

missing=()
cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
if [ "${#missing[@]}" -gt 0 ]; then
  list=${missing[*]}
  echo "error: ${list// / and } not found for $(command -v cargo) ($(cargo --version))." >&2
  echo "Install them with rustup: \`rustup component add rustfmt clippy\`" >&2
  echo "(Debian's cargo-web/rustc-web toolchain has no rustfmt or clippy; scripts/test.sh runs without them.)" >&2
  exit 1
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
