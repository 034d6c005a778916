#!/usr/bin/env bash
# Proves that the workspace builds, and the simulated-host demo runs, on a machine without
# Xen's headers, C libraries or libclang: inside a private mount namespace (root needed) it
# hides /usr/include/xen*, every libxen*.so* and libclang, then builds the whole workspace
# into a separate target folder and runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
target=${CARGO_TARGET_DIR:-target}/no-xen
exec unshare --mount --propagation private bash -euo pipefail -c '
    hide() { for f in "$@"; do
        [ -e "$f" ] || continue
        if [ -d "$f" ]; then mount -t tmpfs none "$f"; else mount --bind /dev/null "$f"; fi
    done; }
    hide /usr/include/xen /usr/include/xen*.h /usr/include/xenstore_lib.h \
        /usr/lib/x86_64-linux-gnu/libxen*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* \
        /usr/lib/llvm-*/lib/libclang*.so*
    test ! -s /usr/include/xenctrl.h
    echo "hidden: Xen headers, libxen*, libclang"
    CARGO_TARGET_DIR='"$target"' cargo build --quiet --workspace
    CARGO_TARGET_DIR='"$target"' cargo run --quiet --package examples --bin demo > /dev/null
    echo "no-xen build and demo: ok"
'
