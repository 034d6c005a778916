#!/usr/bin/env bash
# Short smoke run of every cargo-fuzz target in fuzz/ (libFuzzer; stable toolchain through
# RUSTC_BOOTSTRAP, as only stable Rust is installed). RUNS=N sets the iterations per target,
# SECS=N caps each target's fuzzing time (libFuzzer stops at whichever comes first and exits 0;
# the slowest target, xapi_request, builds a fresh server per input).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
runs=${RUNS:-20000}
secs=${SECS:-120}
command -v cargo-fuzz >/dev/null || cargo install --quiet cargo-fuzz --locked
targets=$(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz list)
for t in $targets; do
    echo "--- fuzz $t ($runs runs, at most $secs s)"
    (cd fuzz && RUSTC_BOOTSTRAP=1 timeout 900 cargo fuzz run "$t" -- -runs="$runs" \
        -max_total_time="$secs" -max_len=8192 2>&1 | tail -3)
done
echo "fuzz smoke: $(echo "$targets" | wc -w) targets ok"
