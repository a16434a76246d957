#!/usr/bin/env bash
# ARM checks without ARM hardware: cross-builds boneage for 64-bit (aarch64) and 32-bit
# (armv7 hard-float) Linux with Debian's cross toolchains and runs the binary under
# qemu-user:
#   - config loading: every firmware-config/*.toml, and a bad key is refused by name;
#   - `boneage predict` with the shipped model on a validation fixture (5 test-time views),
#     compared with the reference reading (tests/fixtures/val/expected.csv, pred_tta)
#     within 0.1 month, and on the same radiograph as lossless JPEG 2000, HTJ2K, JPEG-LS and
#     JPEG XL DICOM (one view, pred_pytorch) and as 12-bit JPEG (aarch64: JPEG XL and
#     12-bit JPEG only, for time);
#   - the line protocol: `boneage serve` on 127.0.0.1 (one view), PING, *IDN?, ANALYZE
#     (compared with the PyTorch value, pred_pytorch), RESULT and malformed lines, checked
#     reply by reply.
# Emulation is slow (about a minute of CPU per model load and reading at this profile), so
# the checks are few but cover every layer.
# Only the binary is built (no test harness, whose dev-dependencies would force a second
# build of the dependency tree), with the `arm-ci` profile (dependencies at opt-level 1)
# to keep CI time down; shipping builds use `--profile dist` (docs/arm.md). To check a
# shipping build instead, name its profile and extra cargo flags, e.g.
#   BONEAGE_ARM_PROFILE=dist-small BONEAGE_ARM_FLAGS=--no-default-features bash scripts/test-arm.sh
# Usage: bash scripts/test-arm.sh [aarch64-unknown-linux-gnu] [armv7-unknown-linux-gnueabihf]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --arm

targets=("$@")
((${#targets[@]})) || targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
row=$(sed -n 2p tests/fixtures/val/expected.csv)
id=$(cut -d, -f1 <<<"$row"); male=$(cut -d, -f2 <<<"$row")
want_torch=$(cut -d, -f4 <<<"$row"); want_tta=$(cut -d, -f5 <<<"$row")
want_sd=$(cut -d, -f6 <<<"$row")
sex=female; [ "$male" = true ] && sex=male
close() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 0.1) }'; }
fail() { echo "test-arm: $target: $*" >&2; exit 1; }
work=$(mktemp -d)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

for target in "${targets[@]}"; do
    echo "== $target" >&2
    start=$SECONDS
    profile=${BONEAGE_ARM_PROFILE:-arm-ci}
    # shellcheck disable=SC2086 # BONEAGE_ARM_FLAGS is a list of cargo flags
    cargo build --locked --profile "$profile" ${BONEAGE_ARM_FLAGS:-} --target "$target" --bin boneage
    bin="${CARGO_TARGET_DIR:-target}/$target/$profile/boneage"
    case "$target" in
        aarch64-*) run=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
        armv7-*) run=(qemu-arm -L /usr/arm-linux-gnueabihf) ;;
        *) fail "unknown target" ;;
    esac
    "${run[@]}" "$bin" --version
    # The board needs at least this glibc (docs/arm.md): the host's cross libc sets it.
    if command -v objdump >/dev/null; then
        glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)
        echo "$target binary needs ${glibc:-an unknown glibc} or newer on the board" >&2
    fi

    # Config loading.
    for cfg in firmware-config/*.toml; do
        "${run[@]}" "$bin" --config "$cfg" --version >/dev/null || fail "cannot load $cfg"
    done
    printf '[model]\nthreds = 2\n' >"$work/bad.toml"
    if msg=$("${run[@]}" "$bin" --config "$work/bad.toml" --version 2>&1); then
        fail "a config with an unknown key was accepted"
    fi
    grep -q "model.threds" <<<"$msg" || fail "bad key not named: $msg"

    # Prediction with the shipped model.
    reply=$("${run[@]}" "$bin" predict "tests/fixtures/val/images/$id.png" --sex "$sex" --json)
    got=$(sed -E 's/.*"bone_age_months":([-0-9.e]+).*/\1/' <<<"$reply")
    close "$got" "$want_tta" || fail "predicts $got months for $id.png, reference $want_tta"
    # The spread of the test-time views, which decides the "views disagree" warning.
    got_sd=$(sed -E 's/.*"view_spread_months":([-0-9.e]+).*/\1/' <<<"$reply")
    close "$got_sd" "$want_sd" || fail "view SD $got_sd months for $id.png, reference $want_sd"
    echo "$target predict $id.png: $got months, view SD $got_sd (reference $want_tta, $want_sd)"

    # The DICOM codecs written in Rust (tests/fixtures/dicom/, the same radiograph): the
    # lossless files read as the PyTorch reference does (one view), the 12-bit JPEG one
    # decodes to a reading (it is lossy: 1.4 months from the PNG's on x86_64). Each file
    # costs about two minutes of emulated aarch64 (the reading and the gate's four turned
    # and mirrored passes), so there only the newest decoders are read; armv7, with its
    # 32-bit sizes, reads them all.
    case "$target" in
        aarch64-*) lossless=() ;;
        *) lossless=(j2k-lossless htj2k-lossless jls-lossless) ;;
    esac
    # JPEG XL is a default feature, which the size-first build leaves out.
    [[ " ${BONEAGE_ARM_FLAGS:-} " == *" --no-default-features "* ]] || lossless+=(jxl-lossless)
    files=("${lossless[@]/#/tests/fixtures/dicom/}")
    replies=$("${run[@]}" "$bin" --no-tta predict "${files[@]/%/.dcm}" \
        tests/fixtures/dicom/jpeg12-lossy.dcm --json)
    for i in "${!lossless[@]}"; do
        line=$(sed -n "$((i + 1))p" <<<"$replies")
        got=$(sed -E 's/.*"bone_age_months":([-0-9.e]+).*/\1/' <<<"$line")
        close "$got" "$want_torch" || fail "${lossless[$i]}.dcm: $line, PyTorch $want_torch"
    done
    grep -q '"image":"tests/fixtures/dicom/jpeg12-lossy.dcm".*"bone_age_months"' \
        <<<"$(sed -n "$((${#lossless[@]} + 1))p" <<<"$replies")" || fail "jpeg12-lossy.dcm: $replies"
    echo "$target predict ${lossless[*]} jpeg12-lossy (DICOM): read as the PNG"

    # The line protocol over TCP.
    port=$((20000 + RANDOM % 20000))
    mkdir -p "$work/allowed"
    cp "tests/fixtures/val/images/$id.png" "$work/allowed/x.png"
    cat >"$work/serve.toml" <<TOML
[model]
path = "$PWD/models/boneage-lite0.onnx"
tta = false
[store]
path = "$work/results-$target.db"
[tcp]
enabled = true
bind = "127.0.0.1:$port"
[protocol]
allowed_dirs = ["$work/allowed"]
TOML
    "${run[@]}" "$bin" --config "$work/serve.toml" serve &
    server=$!
    for _ in $(seq 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        kill -0 "$server" 2>/dev/null || fail "serve exited before listening"
        sleep 0.2
    done
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    # Emulated, one ANALYZE (a view plus the gate's three turned and one mirrored pass) takes
    # about two minutes; the limit only stops a hung server.
    ask() { printf '%s\n' "$1" >&3; IFS= read -r -t 900 reply <&3 || fail "no reply to $1"; }
    expect() { ask "$1"; grep -q -- "$2" <<<"$reply" || fail "$1 -> $reply (wanted $2)"; }
    expect "PING" '"ok":true'
    expect "*IDN?" '"vendor":"boneage"'
    expect "ANALYZE sex=$sex age=7y path=$work/allowed/x.png id=ARM-1" '"bone_age_months"'
    got=$(sed -E 's/.*"bone_age_months":([-0-9.e]+).*/\1/' <<<"$reply")
    close "$got" "$want_torch" || fail "ANALYZE gave $got months, PyTorch $want_torch"
    echo "$target ANALYZE $id.png: $got months (PyTorch $want_torch)"
    rid=$(sed -E 's/.*"id":([0-9]+).*/\1/' <<<"$reply")
    expect "RESULT id=$rid" '"exam_id":"ARM-1"'
    expect "ANALYZE sex=female path=/etc/passwd" '"path_not_allowed"'
    expect "FLY me=moon" '"unknown_command"'
    expect "ANALYZE sex=maybe path=x" '"bad_argument"'
    expect "PING" '"ok":true'
    exec 3<&-
    kill "$server"; wait "$server" 2>/dev/null || true; server=""
    echo "== $target passed in $((SECONDS - start)) s" >&2
done
