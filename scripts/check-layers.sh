#!/usr/bin/env bash
# The hypervisor-facing library crates build without their default features, and then pull
# neither the simulated host (xen-sim), binary-only crates (clap, tracing-subscriber) nor an
# async runtime (tokio): an embedder who runs only on Xen ships none of them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
crates=(xenctrl evtchn gnttab xenbus blkback netback xenconsoled)
args=()
for c in "${crates[@]}"; do args+=(-p "$c"); done
cargo build --quiet --no-default-features "${args[@]}"
status=0
for c in "${crates[@]}"; do
    tree=$(cargo tree -e normal --no-default-features -p "$c" --prefix none | sort -u)
    bad=$(grep -E '^(xen-sim|clap|tracing-subscriber|tokio) ' <<<"$tree" || true)
    if [ -n "$bad" ]; then
        echo "$c without default features pulls: $bad"
        status=1
    else
        echo "$c: $(wc -l <<<"$tree") crates, none of xen-sim, clap, tracing-subscriber, tokio"
    fi
done
exit $status
