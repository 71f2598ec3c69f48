#!/usr/bin/env bash
# One regtest Bitcoin Core node for paychan's demos and tests.
#
#   regtest/bitcoind.sh install     find or build bitcoind + bitcoin-cli; prints the bitcoind path
#   regtest/bitcoind.sh start       start the demo node (datadir regtest/.data, RPC port below)
#   regtest/bitcoind.sh stop        stop it
#   regtest/bitcoind.sh cli ARGS    run bitcoin-cli against it
#
# install: uses $BITCOIND_EXE, or bitcoind on PATH, if present. Otherwise it builds Bitcoin Core
# from the source tree shipped in the crates.io crate libbitcoinkernel-sys 0.4.1 (no other source
# of bitcoind reaches these machines; see README) and caches the two binaries in
# ${XDG_CACHE_HOME:-$HOME/.cache}/paychan/bin, so the build (6-9 min on 2 cores) happens once.
set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${XDG_CACHE_HOME:-${HOME:?set HOME or XDG_CACHE_HOME}/.cache}/paychan"
BIN_DIR="$CACHE/bin"
DATADIR="$ROOT/regtest/.data"
# The demo node's fixed RPC port (regtest's default is 18443; this one avoids clashing with it).
RPC_PORT="${PAYCHAN_RPC_PORT:-18543}"
KERNEL_CRATE="libbitcoinkernel-sys"
KERNEL_VERSION="0.4.1"

log() { echo "bitcoind.sh: $*" >&2; }

# Prints the bitcoind to use, or fails (status 1) when there is none.
find_bitcoind() {
    if [[ -n "${BITCOIND_EXE:-}" ]]; then
        echo "$BITCOIND_EXE"
    elif command -v bitcoind >/dev/null 2>&1; then
        command -v bitcoind
    elif [[ -x "$BIN_DIR/bitcoind" ]]; then
        echo "$BIN_DIR/bitcoind"
    else
        return 1
    fi
}

# Prints the bitcoin-cli next to bitcoind (or on PATH), or exits with a message.
find_cli() {
    local exe
    exe="$(find_bitcoind)" || { log "no bitcoind found; run: regtest/bitcoind.sh install"; exit 1; }
    if [[ -x "$(dirname "$exe")/bitcoin-cli" ]]; then echo "$(dirname "$exe")/bitcoin-cli"
    elif command -v bitcoin-cli >/dev/null 2>&1; then command -v bitcoin-cli
    else log "no bitcoin-cli next to $exe nor on PATH"; exit 1
    fi
}

install_build_deps() {
    local missing=()
    for p in cmake libboost-dev libevent-dev pkg-config; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ "$(id -u)" -eq 0 ]]; then
        log "installing Debian build dependencies: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    else
        log "missing Debian packages: ${missing[*]}; run: sudo apt-get install ${missing[*]}"
        exit 1
    fi
}

fetch_source() {
    # Let cargo (the ordinary registry client) download the crate that carries Core's source.
    local manifest="$CACHE/fetch"
    mkdir -p "$manifest/src"
    cat >"$manifest/Cargo.toml" <<TOML
[package]
name = "paychan-fetch-bitcoin-core"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
$KERNEL_CRATE = "=$KERNEL_VERSION"
TOML
    : >"$manifest/src/lib.rs"
    cargo fetch --quiet --manifest-path "$manifest/Cargo.toml" >&2
    local home="${CARGO_HOME:-$HOME/.cargo}" src
    src="$(ls -d "$home"/registry/src/*/"$KERNEL_CRATE-$KERNEL_VERSION"/bitcoin 2>/dev/null | head -n1)"
    [[ -n "$src" && -f "$src/CMakeLists.txt" ]] || { log "Bitcoin Core source not found after cargo fetch"; exit 1; }
    echo "$src"
}

build_bitcoind() {
    install_build_deps
    local src build
    src="$(fetch_source)"
    build="$CACHE/build"
    log "building bitcoind from $src (once per machine; 6-9 minutes on 2 cores)"
    cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_DAEMON=ON -DBUILD_CLI=ON -DENABLE_WALLET=OFF -DWITH_EMBEDDED_ASMAP=OFF \
        -DENABLE_IPC=OFF -DENABLE_EXTERNAL_SIGNER=OFF -DBUILD_GUI=OFF -DBUILD_TESTS=OFF \
        -DBUILD_BENCH=OFF -DBUILD_TX=OFF -DBUILD_UTIL=OFF -DBUILD_WALLET_TOOL=OFF \
        -DBUILD_FUZZ_BINARY=OFF -DWITH_ZMQ=OFF -DBUILD_KERNEL_LIB=OFF >&2
    cmake --build "$build" -j"$(nproc)" --target bitcoind bitcoin-cli >&2
    mkdir -p "$BIN_DIR"
    # Copy, then rename, so an interrupted install never leaves a half-written binary.
    for b in bitcoind bitcoin-cli; do
        cp "$build/bin/$b" "$BIN_DIR/$b.tmp"
        mv "$BIN_DIR/$b.tmp" "$BIN_DIR/$b"
    done
}

cmd_install() {
    local exe
    if [[ -n "${BITCOIND_EXE:-}" && ! -x "$BITCOIND_EXE" ]]; then
        log "BITCOIND_EXE=$BITCOIND_EXE is not an executable file"
        exit 1
    fi
    if ! exe="$(find_bitcoind)"; then
        build_bitcoind
        exe="$BIN_DIR/bitcoind"
    fi
    find_cli >/dev/null
    "$exe" -version | sed -n 1p >&2
    echo "$exe"
}

cli() {
    local exe
    exe="$(find_cli)"
    "$exe" -regtest -datadir="$DATADIR" -rpcport="$RPC_PORT" "$@"
}

cmd_start() {
    local exe
    exe="$(find_bitcoind)" || { log "no bitcoind found; run: regtest/bitcoind.sh install"; exit 1; }
    mkdir -p "$DATADIR"
    if cli getblockcount >/dev/null 2>&1; then
        log "already running (RPC port $RPC_PORT, datadir $DATADIR)"
        return 0
    fi
    "$exe" -regtest -daemon -datadir="$DATADIR" -listen=0 -rpcbind=127.0.0.1 \
        -rpcallowip=127.0.0.1 -rpcport="$RPC_PORT" -txindex=1 >&2
    for _ in $(seq 1 100); do
        cli getblockcount >/dev/null 2>&1 && { log "started: RPC 127.0.0.1:$RPC_PORT, cookie $DATADIR/regtest/.cookie"; return 0; }
        sleep 0.1
    done
    log "bitcoind did not answer RPC within 10 s; see $DATADIR/regtest/debug.log"
    exit 1
}

cmd_stop() {
    if cli stop >/dev/null 2>&1; then
        for _ in $(seq 1 300); do
            [[ -e "$DATADIR/regtest/bitcoind.pid" ]] || { log "stopped"; return 0; }
            sleep 0.1
        done
        log "bitcoind still running 30 s after stop; see $DATADIR/regtest/debug.log"
        exit 1
    else
        log "not running"
    fi
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    cli) shift; cli "$@" ;;
    *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
