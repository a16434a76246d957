#!/usr/bin/env bash
# Installs what building and testing boneage needs on a fresh Debian/Ubuntu machine:
# Rust components (rustfmt, clippy); gcc and libc6-dev (the linker, and the bundled
# SQLite's C build: rustup installs no C compiler); libclang-dev, which the `v4l` crate's
# build (bindgen over the kernel's V4L2 headers, from linux-libc-dev) needs; python3-venv
# for the ONNX Runtime check (scripts/test-ort.sh). Safe to run again; installs only what
# is missing.
# `--arm` adds the ARM cross toolchains, qemu-user and the Rust targets (scripts/test-arm.sh).
set -euo pipefail

pkgs=(gcc libc6-dev pkg-config libclang-dev linux-libc-dev python3-venv)
arm=0
[ "${1:-}" = "--arm" ] && arm=1
((arm)) && pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf
    libc6-dev-armhf-cross qemu-user)
need_apt=()
for pkg in "${pkgs[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
    echo "setup: installing ${need_apt[*]}" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}"
fi
if ! command -v cargo >/dev/null; then
    echo "setup: Rust is not installed; get it from https://rustup.rs" >&2
    exit 1
fi
if command -v rustup >/dev/null; then
    rustup component add rustfmt clippy >/dev/null 2>&1 || true
    if ((arm)); then
        rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf >/dev/null
    fi
fi
