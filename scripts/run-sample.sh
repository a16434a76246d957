#!/usr/bin/env bash
# Builds boneage and estimates bone age on the bundled sample radiographs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked
boneage="${CARGO_TARGET_DIR:-target}/release/boneage"
"$boneage" --version
"$boneage" predict samples/1618.png --sex female --age 9y2m
"$boneage" predict samples/1724.dcm
