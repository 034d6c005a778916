#!/usr/bin/env bash
# Runs the whole test suite: unit, integration and doc tests of every crate, the C-interop
# tests (against Debian's Xen headers and C peers: xenstored, test-xenstore, xenstore-utils),
# and the XenAPI Python SDK tests of the toolstack.
#   XS_LONG_TESTS=1 scripts/test.sh   also runs the long randomized xenstore test (60 s).
# Real-Xen tests run inside a QEMU-booted Xen with `cargo xtask e2e` (see xtask/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --workspace --all-targets --no-fail-fast
cargo test --workspace --doc --no-fail-fast
# The toolstack's pool store, pools and HA against a real etcd (feature `etcd`, off by default).
cargo test -p toolstack --features etcd --test etcd_pool --test pool --test ha --no-fail-fast
