#!/usr/bin/env bash
# Long fuzz run of the cargo-fuzz targets in fuzz/ (not part of CI: hours on two cores).
# Every target runs RUNS executions (default 10 million) on inputs of up to MAX_LEN bytes
# (default 16384: room for several requests, each with a full 4 KiB XENSTORE_PAYLOAD_MAX
# payload and its header), one target after the other, and goes on after a crash. Each target
# starts fresh per input (see the targets' docs), so every crash file reproduces alone:
#   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <crash file>
# Ends with a table of executions, time and crashes per target; exits 1 if any target crashed.
#   TARGETS="xenstore_wire ring_back" scripts/fuzz-long.sh   only these targets
#   RUNS=1000000 MAX_LEN=8192 TIMEOUT=3600                   fewer runs, shorter inputs, a
#                                                            wall-clock limit per target (s)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1 # cargo-fuzz needs nightly flags; only stable Rust is installed
runs=${RUNS:-10000000}
max_len=${MAX_LEN:-16384}
timeout=${TIMEOUT:-0}
command -v cargo-fuzz >/dev/null || cargo install --quiet cargo-fuzz --locked
targets=${TARGETS:-$(cd fuzz && cargo fuzz list)}
logs=${LOG_DIR:-fuzz/artifacts/long}
mkdir -p "$logs"

crashed=0
summary=$(printf '| %-20s | %12s | %8s | %9s | %s |\n' target executions seconds "exec/s" result)
for t in $targets; do
    echo "--- fuzz-long $t: $runs runs, inputs up to $max_len bytes (log: $logs/$t.log)"
    (cd fuzz && cargo fuzz build -O "$t")
    start=$(date +%s)
    set +e
    (cd fuzz && cargo fuzz run -O "$t" -- -runs="$runs" -max_len="$max_len" \
        -max_total_time="$timeout" -timeout=60 -rss_limit_mb=4096 -print_final_stats=1) \
        > "$logs/$t.log" 2>&1
    rc=$?
    set -e
    secs=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n 1)
    if [ -z "$execs" ]; then
        # Killed before the final statistics: take the last progress line.
        execs=$(grep -o '#[0-9]*' "$logs/$t.log" | tail -n 1 | tr -d '#')
    fi
    if [ "$rc" = 0 ]; then
        result="0 crashes"
    else
        crashed=1
        artifact=$(grep -o 'Test unit written to [^ ]*' "$logs/$t.log" | tail -n 1)
        result="FAILED (rc=$rc) ${artifact:-see the log}"
    fi
    rate=$(( ${execs:-0} / (secs > 0 ? secs : 1) ))
    line=$(printf '| %-20s | %12s | %8s | %9s | %s |' "$t" "${execs:-?}" "$secs" "$rate" "$result")
    echo "$line"
    summary+=$'\n'"$line"
done
echo
echo "==== fuzz-long: $runs runs per target, -max_len=$max_len ===="
echo "$summary"
exit "$crashed"
