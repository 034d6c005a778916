#!/usr/bin/env bash
# Regenerates xen-sys/src/generated/ from the installed Xen 4.17 headers (Debian: libxen-dev,
# libclang-dev). With --check, regenerates into a temporary folder and fails if the committed
# bindings differ.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ "${1:-}" = "--check" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    cargo run --quiet --package xen-sys-gen -- "$tmp"
    if ! diff -qr xen-sys/src/generated "$tmp" >/dev/null; then
        diff -ru xen-sys/src/generated "$tmp" | head -50 || true
        echo "xen-sys bindings are stale: run xen-sys/regen.sh and commit the result" >&2
        exit 1
    fi
    echo "xen-sys bindings match the installed headers"
else
    cargo run --quiet --package xen-sys-gen -- xen-sys/src/generated
fi
