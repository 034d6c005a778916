#!/usr/bin/env bash
# The main job: boots the simulated Xen host and drives domains through the xenctrl API,
# printing an xentop-like table and the host's free memory as it goes. Add --real in a Xen
# dom0 to use the real hypervisor instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
exec cargo run --quiet --release --package examples --bin demo -- "$@"
