#!/usr/bin/env bash
# Installs what building and testing the project needs on Debian 12 (bookworm), idempotently.
#   scripts/deps.sh          build + test dependencies (Xen headers and user-space peers, libclang)
#   scripts/deps.sh --e2e    also what `cargo xtask e2e` needs on the host (QEMU, cpio, kmod)
#   scripts/deps.sh --ci     also the CI's own tools (cargo-deny; built once, minutes)
# Nothing Xen-specific is started: the packages provide headers, C libraries and C peers
# (xenstored, test-xenstore, xenstore-* clients) that the tests drive.
set -euo pipefail
e2e=0
ci=0
for arg in "$@"; do
    case "$arg" in
        --e2e) e2e=1 ;;
        --ci) ci=1 ;;
        *) echo "deps.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# protobuf-compiler: etcd-client's build script (toolstack feature `etcd`); etcd-server: the
# etcd the pool-store tests start on loopback; chromium: the headless browser the web page test
# loads the page in.
pkgs=(build-essential pkg-config libxen-dev libclang-dev xen-utils-4.17 xenstore-utils python3 python3-pip protobuf-compiler etcd-server chromium)
if [ "$e2e" = 1 ]; then
    pkgs+=(xz-utils binutils util-linux)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# QEMU for the real-Xen end-to-end run. Where qemu-utils came from bookworm-backports (as on
# this project's machines), bookworm's qemu-system-x86 conflicts with it: take backports' too,
# adding that source when it is missing.
need_qemu=0
if [ "$e2e" = 1 ] && ! command -v qemu-system-x86_64 >/dev/null; then
    need_qemu=1
fi
if [ "${#missing[@]}" -gt 0 ] || [ "$need_qemu" = 1 ]; then
    qemu_from_bpo=0
    if [ "$need_qemu" = 1 ] && dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo; then
        qemu_from_bpo=1
        if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
            printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' \
                'Suites: bookworm-backports' 'Components: main' \
                'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' |
                $sudo tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
        fi
    fi
    $sudo apt-get update -qq
    if [ "${#missing[@]}" -gt 0 ]; then
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
    if [ "$need_qemu" = 1 ]; then
        if [ "$qemu_from_bpo" = 1 ]; then
            $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                -t bookworm-backports qemu-system-x86
        else
            $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86
        fi
    fi
fi

# The official XenAPI Python SDK drives the toolstack's tests.
if ! python3 -c 'import XenAPI' 2>/dev/null; then
    python3 -m pip install --quiet --break-system-packages xenapi 2>/dev/null \
        || python3 -m pip install --quiet xenapi
fi

# Rust: a fresh Debian 12 has no recent toolchain; rustup brings the stable one.
if ! command -v cargo >/dev/null; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    fi
fi

# cargo-deny for the CI's licence/ban/source check (`deny.toml`).
if [ "$ci" = 1 ] && ! command -v cargo-deny >/dev/null && [ ! -x "$HOME/.cargo/bin/cargo-deny" ]; then
    PATH="$HOME/.cargo/bin:$PATH" cargo install --quiet cargo-deny --locked
fi
