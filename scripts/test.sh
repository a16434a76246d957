#!/usr/bin/env bash
# The full check CI runs: formatting, lints, and every test (dev profile with optimized
# dependencies, see Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
