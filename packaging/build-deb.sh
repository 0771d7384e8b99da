#!/usr/bin/env bash
# Builds the Debian package `regent`: the release binary, the manual pages and shell completions
# generated from it, then cargo-deb (the pinned version, see CARGO_DEB_VERSION) packs them as
# cli/Cargo.toml's [package.metadata.deb] says. Prints the .deb's path on the last line.
#
# Usage: packaging/build-deb.sh   (honours CARGO_TARGET_DIR; needs cargo-deb and dpkg-dev)
set -euo pipefail
cd "$(dirname "$0")/.."

# The cargo-deb version this packaging is made with: `cargo install cargo-deb --version ... --locked`.
CARGO_DEB_VERSION=3.8.0

if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
    echo "build-deb.sh: needs cargo-deb $CARGO_DEB_VERSION: cargo install cargo-deb --version $CARGO_DEB_VERSION --locked" >&2
    exit 1
fi

target_dir=$(cargo metadata --format-version 1 --no-deps --locked | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
if [ ! -d "$target_dir" ] && ! mkdir -p "$target_dir"; then
    echo "build-deb.sh: cannot find cargo's target directory (got '$target_dir')" >&2
    exit 1
fi

cargo build --release --locked -p regent-cli
regent="$target_dir/release/regent"

# Generated from the binary just built, where cargo-deb's `target/release/` prefix finds them.
out="$target_dir/release/packaging"
rm -rf "$out"
mkdir -p "$out/man" "$out/completions"
"$regent" man --dir "$out/man"
gzip -9n "$out"/man/*.1
"$regent" completions bash >"$out/completions/regent.bash"
"$regent" completions zsh >"$out/completions/_regent"
"$regent" completions fish >"$out/completions/regent.fish"

deb=$(cargo deb -p regent-cli --no-build --locked | tail -n 1)
if [ ! -f "$deb" ]; then
    echo "build-deb.sh: cargo deb did not name the package it made: $deb" >&2
    exit 1
fi
echo "$deb"
