#!/usr/bin/env bash
# Builds the Debian package, target/debian/rhyzome_<version>_amd64.deb, with cargo-deb (the
# metadata is in crates/rhyzomesrv/Cargo.toml, the unit and maintainer scripts in
# packaging/debian/). Manual pages and shell completions are generated here from the clap
# definitions of the release binaries, so they always match them. Prints the package's path.
#
#   scripts/package.sh                    release build, then package (version from Cargo.toml)
#   scripts/package.sh --version 0.1.0-2  a different Debian version (the upgrade test)
#   scripts/package.sh --no-build         package the release binaries already built
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
version=""
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "usage: $0 [--version DEBIAN_VERSION] [--no-build]" >&2; exit 2 ;;
  esac
done

log() { echo "==> $*" >&2; }

if [ "$(cargo deb --version 2>/dev/null || true)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  log "installing cargo-deb $CARGO_DEB_VERSION"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi
if [ "$build" = 1 ]; then
  log "building the release binaries"
  cargo build --release --locked -q -p rhyzomesrv -p rhyzomectl
fi

assets=target/package-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
log "generating manual pages and completions"
for bin in rhyzomesrv rhyzomectl; do
  "target/release/$bin" man --out-dir "$assets/man"
  "target/release/$bin" completions bash >"$assets/completions/$bin.bash"
  "target/release/$bin" completions zsh >"$assets/completions/_$bin"
  "target/release/$bin" completions fish >"$assets/completions/$bin.fish"
done
# Debian policy: manual pages and documentation compressed, reproducibly (no name or time).
gzip -9n "$assets"/man/*.1
gzip -9n -c README.md >"$assets/README.md.gz"
for f in "$assets"/man/*.gz "$assets"/completions/*; do
  [ -s "$f" ] || { echo "error: $f is empty" >&2; exit 1; }
done

log "packaging"
cargo deb -p rhyzomesrv --no-build --quiet ${version:+--deb-version "$version"}
