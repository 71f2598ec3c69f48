#!/usr/bin/env bash
# Times `paychan pay` end to end from the command line: N pay commands, one after another, each
# a new process (open the data dir, connect to the node, handshake with `serve`, sign, commit on
# both sides with fsync, acknowledgement). Runs against the demo node (started here if it is not
# running, and stopped again then) with throwaway data directories.
#
# Usage: scripts/cli_pay_latency.sh [N]    (default 100)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100}
cargo build --quiet
bin=$PWD/target/debug/paychan
work=$(mktemp -d)
started_node=
serve_pid=
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null || true
  [ -n "$started_node" ] && regtest/bitcoind.sh stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
if ! regtest/bitcoind.sh cli getblockcount >/dev/null 2>&1; then
  regtest/bitcoind.sh start >/dev/null 2>&1
  started_node=1
fi
export PAYCHAN_RPC_URL=http://127.0.0.1:${PAYCHAN_RPC_PORT:-18543}
export PAYCHAN_RPC_COOKIE=$PWD/regtest/.data/regtest/.cookie
json() { python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
node_id=$("$bin" --datadir "$work/payee" --json init | json node_id)
"$bin" --datadir "$work/payer" init >/dev/null
address=$("$bin" --datadir "$work/payer" address)
regtest/bitcoind.sh cli generatetoaddress 101 "$address" >/dev/null
"$bin" --datadir "$work/payee" --json serve --listen 127.0.0.1:0 --poll-ms 100 \
  >"$work/serve.out" 2>"$work/serve.log" &
serve_pid=$!
until [ -s "$work/serve.out" ]; do sleep 0.05; done
listen=$(head -1 "$work/serve.out" | json listen)
( sleep 1; regtest/bitcoind.sh cli generatetoaddress 1 "$address" >/dev/null ) &
channel=$("$bin" --datadir "$work/payer" --json open "$node_id@$listen" --capacity 10000000 \
  --lifetime 1008 --step 1 --feerate 2 2>"$work/open.log" | json channel_id)
start=$(date +%s.%N)
for _ in $(seq "$n"); do "$bin" --datadir "$work/payer" --json pay "$channel" 1000 >/dev/null; done
end=$(date +%s.%N)
paid=$("$bin" --datadir "$work/payee" --json show "$channel" | json paid_total_sat)
python3 -c "
n, t = $n, $end - $start
print(f'{n} pay commands in {t:.2f} s: {t / n * 1000:.1f} ms each (debug build); payee holds {$paid} sat')"
