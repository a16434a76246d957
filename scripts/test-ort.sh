#!/usr/bin/env bash
# Tests the ONNX Runtime backend: installs the pinned onnxruntime wheel
# (scripts/requirements-ort.txt) into .venv-ort, points ORT_DYLIB_PATH at its
# libonnxruntime.so, and runs `cargo test --features ort`. CPU only: no GPU needed.
#
#   scripts/test-ort.sh                   # every test, with the ort feature
#   scripts/test-ort.sh --test ort_agreement   # extra arguments go to cargo test
#
# ORT_DYLIB_PATH already set: that library is used and nothing is installed.
# PYTHON picks the interpreter for the venv (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${ORT_DYLIB_PATH:-}" ]; then
    venv=.venv-ort
    # bin/pip, not bin/python: a venv made without ensurepip (python3-venv missing) has
    # bin/python but no pip, and would fail the same way on every later run.
    if [ ! -x "$venv/bin/pip" ]; then
        echo "test-ort: creating $venv" >&2
        "${PYTHON:-python3}" -m venv --clear "$venv"
    fi
    # --no-deps: only the shared library inside the wheel is used.
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
        -r scripts/requirements-ort.txt
    capi=$("$venv/bin/python" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("onnxruntime")
print(pathlib.Path(spec.origin).parent / "capi")
PY
)
    lib=$(ls "$capi"/libonnxruntime.so.* 2>/dev/null | head -n 1)
    if [ -z "$lib" ]; then
        echo "test-ort: no libonnxruntime.so.* in $capi" >&2
        exit 1
    fi
    export ORT_DYLIB_PATH="$lib"
fi
echo "test-ort: ORT_DYLIB_PATH=$ORT_DYLIB_PATH" >&2
cargo test --locked --features ort "$@"
