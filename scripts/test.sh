#!/usr/bin/env bash
# The full check CI runs: formatting, lints, every test (dev profile with optimized
# dependencies, see Cargo.toml), the `ort` backend's tests, then the ARM cross builds under
# qemu (BONEAGE_SKIP_ARM=1 skips those).
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-shot full check gains nothing from incremental caches, which cost gigabytes of disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo clippy --locked --all-targets --features ort -- -D warnings
# The small board build (docs/arm.md): without tract's multithreaded matrix products.
cargo clippy --locked --all-targets --no-default-features -- -D warnings
cargo test --locked
# The ONNX Runtime backend against tract (installs the CPU onnxruntime wheel in .venv-ort).
bash scripts/test-ort.sh --lib --test ort_agreement
# ARM: cross builds and a subset of the tests under qemu (docs/arm.md).
if [ "${BONEAGE_SKIP_ARM:-0}" = 1 ]; then
    echo "test: ARM checks skipped (BONEAGE_SKIP_ARM=1)" >&2
else
    bash scripts/test-arm.sh
fi
