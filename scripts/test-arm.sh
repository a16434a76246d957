#!/usr/bin/env bash
# ARM checks without ARM hardware: cross-builds boneage for 64-bit (aarch64) and 32-bit
# (armv7 hard-float) Linux with Debian's cross toolchains and runs, under qemu-user:
#   - the library's config and protocol unit tests,
#   - `boneage predict` with the shipped model on validation fixtures, compared with the
#     PyTorch reference values (tests/fixtures/val/expected.csv) within 0.1 month.
# Builds use the `arm-ci` profile (dependencies at opt-level 1) to keep CI time down;
# shipping builds use `--profile dist` (docs/arm.md).
# Usage: bash scripts/test-arm.sh [aarch64-unknown-linux-gnu] [armv7-unknown-linux-gnueabihf]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --arm

targets=("$@")
((${#targets[@]})) || targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
mapfile -t ids < <(sed -n 2,4p tests/fixtures/val/expected.csv | cut -d, -f1)

for target in "${targets[@]}"; do
    echo "== $target" >&2
    start=$SECONDS
    cargo build --locked --profile arm-ci --target "$target" --bin boneage
    cargo test --locked --profile arm-ci --target "$target" --lib -- config:: protocol::
    bin="target/$target/arm-ci/boneage"
    case "$target" in
        aarch64-*) run=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
        armv7-*) run=(qemu-arm -L /usr/arm-linux-gnueabihf) ;;
        *) echo "test-arm: unknown target $target" >&2; exit 2 ;;
    esac
    "${run[@]}" "$bin" --version
    for id in "${ids[@]}"; do
        row=$(grep "^$id," tests/fixtures/val/expected.csv)
        male=$(cut -d, -f2 <<<"$row"); want=$(cut -d, -f4 <<<"$row")
        sex=female; [ "$male" = true ] && sex=male
        got=$("${run[@]}" "$bin" predict "tests/fixtures/val/images/$id.png" --sex "$sex" --json |
            sed -E 's/.*"bone_age_months":([-0-9.e]+).*/\1/')
        if ! awk -v a="$got" -v b="$want" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 0.1) }'; then
            echo "test-arm: $target predicts $got months for $id.png, PyTorch $want (> 0.1 apart)" >&2
            exit 1
        fi
        echo "$target $id.png: $got months (PyTorch $want)"
    done
    echo "== $target passed in $((SECONDS - start)) s" >&2
done
