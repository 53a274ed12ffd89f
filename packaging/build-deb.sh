#!/usr/bin/env bash
# Builds the peerchat .deb: bash packaging/build-deb.sh [OUTPUT_DIR]
#
# 1. the three binaries (release profile), 2. man pages and completions generated from the clap
# definitions (peerchat-docgen), 3. cargo-deb packages them with the units, the config files and
# the maintainer scripts described by [package.metadata.deb] in chatd/Cargo.toml.
# Prints the path of the .deb as the last line of stdout. OUTPUT_DIR defaults to target/debian.
set -euo pipefail
cd "$(dirname "$0")/.."

out_dir=${1:-}
target_dir=${CARGO_TARGET_DIR:-target}
docs="$target_dir/release/peerchat-docs"

step() { printf '== build-deb: %s\n' "$*" >&2; }

if ! cargo deb --version >/dev/null 2>&1; then
    step "installing cargo-deb (cargo install cargo-deb --locked)"
    cargo install cargo-deb --locked >&2
fi

step "building chatd, registryd, chatctl (release)"
cargo build --release --locked -p chatd -p registryd -p chatctl >&2

step "generating man pages and completions into $docs"
rm -rf "$docs"
cargo run --release --locked -q -p peerchat-docgen -- "$docs" >&2
for f in man/chatd.8 man/registryd.8 man/chatctl.1 \
    completions/chatctl.bash completions/_chatctl completions/chatctl.fish; do
    if [ ! -s "$docs/$f" ]; then
        echo "build-deb: peerchat-docgen did not write $docs/$f" >&2
        exit 1
    fi
done
# Debian ships man pages compressed; -n keeps the output reproducible.
gzip -9nf "$docs"/man/*.[18]

step "packaging (cargo deb)"
args=(-p chatd --no-build --strip)
if [ -n "$out_dir" ]; then
    mkdir -p "$out_dir"
    args+=(--output "$out_dir")
fi
# cargo-deb prints the path of the package it wrote as its last line.
deb=$(cargo deb "${args[@]}" | tail -n 1)
if [ ! -f "$deb" ]; then
    echo "build-deb: cargo deb did not report a package file (got: $deb)" >&2
    exit 1
fi
step "wrote $deb"
echo "$deb"
