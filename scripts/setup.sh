#!/usr/bin/env bash
# Installs what building and testing boneage needs on a fresh Debian/Ubuntu machine:
# Rust components (rustfmt, clippy), and libclang-dev, which the `v4l` crate's build
# (bindgen over the kernel's V4L2 headers, from linux-libc-dev) needs. Safe to run again;
# installs only what is missing.
# `--arm` adds the ARM cross toolchains, qemu-user and the Rust targets (scripts/test-arm.sh).
set -euo pipefail

pkgs=(pkg-config libclang-dev linux-libc-dev)
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
