#!/usr/bin/env bash
# The whole story in one command, on a private regtest chain of its own:
#
#   act one    Alice (payer) buys a 100-chunk file from Bob (payee), paying for each chunk as it
#              arrives over one channel, then settles: two transactions on chain.
#   act two    Alice vanishes after five payments: Bob's daemon broadcasts his newest commitment
#              by itself as soon as it is final.
#   act three  Bob vanishes: Alice's `paychan watch` broadcasts her refund at R.
#
# Usage: regtest/demo.sh   (see docs/demo.md)
#
# It finds or builds bitcoind (regtest/bitcoind.sh install), builds paychan (cargo build), and
# starts its own bitcoind on a free RPC port with a temporary data directory, so it never
# touches a node you run. Every outcome is checked against the node; any surprise stops the
# demo with a non-zero status. Whatever it started (bitcoind, serve, watch, background jobs,
# temporary files) is stopped and removed on success, on failure and on Ctrl-C. Needs python3.
set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

# An address none of the parties owns (P2WSH of the empty script): blocks that are not meant to
# pay anyone are mined to it.
BURN=bcrt1quwcvgs5clswpfxhm7nyfjmaeysn6us0yvjdexn9yjkv3k7zjhp2snwgpgy
CHUNKS=100
CHUNK_SIZE=16384
PRICE=1000

work="" node_pid="" serve_pid="" watch_pid="" job_pid=""
started=$SECONDS

now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
say() { printf '%s\n' "$*"; }
act() { printf '\n== %s\n' "$*"; }
fail() {
    printf 'demo.sh: FAILED: %s\n' "$*" >&2
    exit 1
}

# Stops a process we started: SIGTERM, then SIGKILL after 10 s.
# (stderr muted: bash reports a job killed by a signal, "Terminated", where it reaps it.)
stop_pid() {
    local pid=$1
    [[ -n $pid ]] || return 0
    {
        kill "$pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" || break
            sleep 0.1
        done
        kill -9 "$pid"
        wait "$pid"
    } 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    if ((status != 0 && status != 130)) && [[ -n $work && -s $work/serve.log ]]; then
        printf '\nthe last lines of Bob'\''s serve log:\n' >&2
        tail -n 8 "$work/serve.log" | sed 's/^/    /' >&2
    fi
    stop_pid "$job_pid"
    stop_pid "$watch_pid"
    stop_pid "$serve_pid"
    if [[ -n $node_pid ]]; then
        btc stop >/dev/null 2>&1
        for _ in $(seq 1 300); do
            kill -0 "$node_pid" 2>/dev/null || break
            sleep 0.1
        done
        stop_pid "$node_pid"
    fi
    [[ -n $work ]] && rm -rf "$work"
    if ((status == 0)); then
        say "stopped bitcoind and serve, removed $work"
    else
        say "demo.sh: stopped everything it started and removed its temporary directory (status $status)" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'printf "\ndemo.sh: interrupted\n" >&2; exit 130' INT TERM
# A command that fails outside a check (paychan prints its own `error: ...`): say where.
trap '((BASH_SUBSHELL == 0)) && printf "demo.sh: line %s: %s failed\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

command -v python3 >/dev/null || fail "python3 is needed (for JSON and a free port)"

# field PATH: prints a field of the JSON object on stdin (PATH like closing.txid or
# channels.0.channel_id); strings as they are, anything else as JSON (null, true, 5).
field() {
    python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v if isinstance(v, str) else json.dumps(v))' "$1"
}

btc() { "$BITCOIN_CLI" -regtest -datadir="$work/node" -rpcport="$rpc_port" "$@"; }
tip() { btc getblockcount; }
mine() { btc generatetoaddress "$1" "$BURN" >/dev/null; }
mine_to() {
    local now
    now=$(tip)
    ((now <= $1)) || fail "the tip $now is already past $1"
    ((now == $1)) || mine $(($1 - now))
}
alice() { "$PAYCHAN" --json --datadir "$work/alice" "$@"; }
bob() { "$PAYCHAN" --json --datadir "$work/bob" "$@"; }

# wait_for SECONDS WHAT COMMAND...: runs COMMAND every 0.1 s until it succeeds.
wait_for() {
    local within=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + within))
    until "$@"; do
        ((SECONDS < deadline)) || fail "$what: not within $within s"
        sleep 0.1
    done
}

# The txid of the transaction in the mempool spending OUTPOINT (txid:vout), or nothing.
mempool_spend() {
    btc gettxspendingprevout "[{\"txid\":\"${1%:*}\",\"vout\":${1#*:}}]" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)[0].get("spendingtxid", ""))'
}
# Succeeds once a transaction spending OUTPOINT is in the mempool.
spent_in_mempool() { [[ -n $(mempool_spend "$1") ]]; }

# check_close TXID FUNDING_OUTPOINT LOCKTIME PAYER_SAT PAYEE_SAT: checks, from the node's own
# copy, that TXID is confirmed, spends the funding outpoint, has that nLockTime and pays exactly
# those amounts (an amount of 0 is no output); prints its confirmations.
check_close() {
    btc getrawtransaction "$1" true | python3 -c '
import json, sys
tx = json.load(sys.stdin)
outpoint, locktime, payer, payee = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
spent = ["%s:%d" % (i["txid"], i["vout"]) for i in tx["vin"]]
values = sorted(round(o["value"] * 100_000_000) for o in tx["vout"])
problems = []
if spent != [outpoint]:
    problems.append("spends %s, not the funding %s" % (spent, outpoint))
if tx["locktime"] != locktime:
    problems.append("nLockTime %d, expected %d" % (tx["locktime"], locktime))
if values != sorted(v for v in (payer, payee) if v):
    problems.append("pays %s sat, expected payer %d and payee %d" % (values, payer, payee))
if tx.get("confirmations", 0) < 1:
    problems.append("not confirmed")
if problems:
    sys.exit(tx["txid"] + ": " + "; ".join(problems))
print(tx["confirmations"])' "$2" "$3" "$4" "$5"
}
confirmations() { btc getrawtransaction "$1" true | field confirmations; }

# check_funding OUTPOINT CAPACITY: checks that the funding output holds CAPACITY sat in a P2WSH
# (the 2-of-2) and is confirmed.
check_funding() {
    btc getrawtransaction "${1%:*}" true | python3 -c '
import json, sys
tx = json.load(sys.stdin)
out = tx["vout"][int(sys.argv[1])]
value = round(out["value"] * 100_000_000)
kind = out["scriptPubKey"]["type"]
if value != int(sys.argv[2]) or kind != "witness_v0_scripthash" or tx.get("confirmations", 0) < 1:
    sys.exit("funding %s: %d sat to a %s output, %d confirmations"
             % (tx["txid"], value, kind, tx.get("confirmations", 0)))' "${1#*:}" "$2"
}

# mine_while NAME STOP COMMAND...: runs COMMAND in the background (stdout to NAME.out, stderr to
# NAME.err) and mines a block every half second until its stderr contains STOP (or, if STOP is
# empty, until it exits): `open` and `fetch` wait for their funding to confirm. Sets `mined`.
mine_while() {
    local name=$1 stop=$2 rc=0 deadline=$((SECONDS + 120))
    shift 2
    : >"$work/$name.err"
    "$@" >"$work/$name.out" 2>"$work/$name.err" &
    job_pid=$!
    mined=0
    while kill -0 "$job_pid" 2>/dev/null; do
        if [[ -z $stop ]] || ! grep -q "$stop" "$work/$name.err"; then
            mine 1
            mined=$((mined + 1))
        fi
        ((SECONDS < deadline)) || fail "$name did not finish within 120 s"
        sleep 0.5
    done
    wait "$job_pid" || rc=$?
    job_pid=""
    if ((rc != 0)); then
        sed 's/^/    /' "$work/$name.err" >&2
        fail "$name failed (status $rc)"
    fi
}

# open_channel NAME CAPACITY TERMS...: Alice opens a channel to Bob; sets `channel`, `refund`
# (R) and `funding` (txid:vout).
open_channel() {
    local name=$1 capacity=$2
    shift 2
    mine_while "$name" "" alice open "$bob_peer" --capacity "$capacity" "$@"
    channel=$(field channel_id <"$work/$name.out")
    refund=$(field refund_locktime <"$work/$name.out")
    funding=$(alice show "$channel" | field funding_outpoint)
    [[ $(alice show "$channel" | field state) == open ]] || fail "channel $channel is not open"
    check_funding "$funding" "$capacity"
    say "  channel $channel: $capacity sat, funding ${funding%:*} confirmed ($mined blocks mined while open waited)"
}

# ---------------------------------------------------------------------------------------------
act "Setting up: a private regtest chain, Alice (payer) and Bob (payee)"
work=$(mktemp -d "${TMPDIR:-/tmp}/paychan-demo.XXXXXX")
mkdir -p "$work/node" "$work/shop" "$work/downloads"

say "  regtest/bitcoind.sh install (finds bitcoind; on a machine without one, builds it once):"
regtest/bitcoind.sh install 2>&1 >"$work/bitcoind.path" | sed 's/^/    /'
BITCOIND=$(cat "$work/bitcoind.path")
BITCOIN_CLI="$(dirname "$BITCOIND")/bitcoin-cli"
[[ -x $BITCOIN_CLI ]] || BITCOIN_CLI=$(command -v bitcoin-cli) || fail "no bitcoin-cli next to $BITCOIND nor on PATH"

say "  cargo build (the paychan binary, debug):"
cargo build 2>&1 | sed 's/^/    /'
target_dir=$(cargo metadata --format-version 1 --no-deps | field target_directory)
PAYCHAN="$target_dir/debug/paychan"
[[ -x $PAYCHAN ]] || fail "no $PAYCHAN after cargo build"

# Our own node: the flags of `regtest/bitcoind.sh start`, on a free port (retried if another
# process takes it first) and a temporary data directory.
for attempt in 1 2 3; do
    rpc_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$BITCOIND" -regtest -datadir="$work/node" -listen=0 -rpcbind=127.0.0.1 -rpcallowip=127.0.0.1 \
        -rpcport="$rpc_port" -txindex=1 -printtoconsole=0 >/dev/null 2>&1 &
    node_pid=$!
    for _ in $(seq 1 300); do
        kill -0 "$node_pid" 2>/dev/null || break
        btc getblockcount >/dev/null 2>&1 && break 2
        sleep 0.1
    done
    stop_pid "$node_pid"
    node_pid=""
    ((attempt < 3)) || fail "bitcoind did not start (3 attempts)"
done
say "  bitcoind $("$BITCOIND" -version | sed -n '1s/.*version \([^ ]*\).*/\1/p'): pid $node_pid, RPC 127.0.0.1:$rpc_port, data in $work/node"
export PAYCHAN_RPC_URL="http://127.0.0.1:$rpc_port" PAYCHAN_RPC_COOKIE="$work/node/regtest/.cookie"
unset PAYCHAN_DATADIR PAYCHAN_NETWORK PAYCHAN_RPC_USER PAYCHAN_RPC_PASSWORD

alice init >/dev/null
bob_id=$(bob init | field node_id)
btc generatetoaddress 101 "$(alice address | field address)" >/dev/null
balance=$(alice balance | field confirmed_sat)
((balance >= 5000000000)) || fail "Alice's balance is $balance sat, less than a mature coinbase"
say "  mined 101 blocks to Alice's wallet: $balance sat spendable (tip $(tip))"

python3 -c 'import os, sys; sys.stdout.buffer.write(os.urandom(int(sys.argv[1])))' \
    $((CHUNKS * CHUNK_SIZE)) >"$work/shop/film.bin"
"$PAYCHAN" --json --datadir "$work/bob" serve --listen 127.0.0.1:0 --poll-ms 100 \
    --serve-dir "$work/shop" --price-per-chunk "$PRICE" --chunk-size "$CHUNK_SIZE" \
    >"$work/serve.out" 2>"$work/serve.log" &
serve_pid=$!
wait_for 30 "serve's announcement" test -s "$work/serve.out"
announced=$(head -n 1 "$work/serve.out")
bob_peer="$bob_id@$(field listen <<<"$announced")"
[[ $(field node_id <<<"$announced") == "$bob_id" ]] || fail "serve announced another node id"
say "  Bob runs paychan serve at $bob_peer (BOB below)"
say "  selling film.bin: $((CHUNKS * CHUNK_SIZE)) random bytes, $CHUNKS chunks of $CHUNK_SIZE bytes at $PRICE sat each"

# ---------------------------------------------------------------------------------------------
act "Act one: Alice buys the file chunk by chunk, then the channel settles"
say "  paychan fetch BOB film.bin --out film.bin --capacity 150000 (default lifetime 1008 blocks, step 6)"
t0=$SECONDS
mine_while fetch "chunks at" alice fetch "$bob_peer" film.bin --out "$work/downloads/film.bin" --capacity 150000
fetched=$(cat "$work/fetch.out")
f1_channel=$(field channel_id <<<"$fetched")
f1_settlement=$(field settlement_txid <<<"$fetched")
f1_payer=$(field payer_sat <<<"$fetched")
f1_payee=$(field payee_sat <<<"$fetched")
f1_funding=$(alice show "$f1_channel" | field funding_outpoint)
check_funding "$f1_funding" 150000
chunks=$(field chunks <<<"$fetched")
paid=$(field paid_sat <<<"$fetched")
((chunks == CHUNKS && paid == CHUNKS * PRICE && f1_payee == paid)) ||
    fail "fetch reports $chunks chunks, $paid sat paid, $f1_payee sat to Bob"
say "  channel $f1_channel opened: funding ${f1_funding%:*} ($mined blocks mined until it confirmed)"
say "  $chunks chunks received, each paid as it arrived: $chunks off-chain payments of $PRICE sat"
say "  (the whole fetch, open included, took $((SECONDS - t0)) s)"
cmp -s "$work/shop/film.bin" "$work/downloads/film.bin" || fail "the downloaded file differs from Bob's"
sha=$(python3 -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$work/shop/film.bin")
[[ $(field sha256 <<<"$fetched") == "$sha" ]] || fail "fetch checked another hash than the file's"
say "  the downloaded file is byte for byte Bob's (sha256 $sha)"
bob_view=$(bob show "$f1_channel")
[[ $(field paid_total_sat <<<"$bob_view") == "$paid" && $(field updates <<<"$bob_view") == "$CHUNKS" ]] ||
    fail "Bob holds $(field paid_total_sat <<<"$bob_view") sat in $(field updates <<<"$bob_view") updates"
say "  Bob's side agrees: $paid sat in $CHUNKS updates, each a commitment signed by both, none broadcast"
say "  the settlement (nLockTime 0, signed by both) is broadcast: $f1_settlement"
mine 1
confs=$(check_close "$f1_settlement" "$f1_funding" 0 "$f1_payer" "$f1_payee")
f1_fee=$((150000 - f1_payer - f1_payee))
say "  $confs confirmation one block later: Bob gets $f1_payee sat, Alice $f1_payer sat back, $f1_fee sat fee"
say "  on chain for this channel: the funding and the settlement, nothing else"

# ---------------------------------------------------------------------------------------------
act "Act two: Alice vanishes; Bob's daemon closes with his newest commitment"
say "  a short channel so it ends quickly: paychan open BOB --capacity 100000 --lifetime 40 --step 2"
open_channel open2 100000 --lifetime 40 --step 2
f2_channel=$channel f2_funding=$funding f2_refund=$refund
for k in 1 2 3 4 5; do
    out=$(alice pay "$f2_channel" 2000)
    locktime=$(field locktime <<<"$out")
    ((locktime == f2_refund - 2 * k)) || fail "commitment $k has locktime $locktime, not R - $k*2"
done
f2_locktime=$(alice show "$f2_channel" | field current_locktime)
((f2_locktime == locktime)) || fail "show says current_locktime $f2_locktime, pay said $locktime"
say "  Alice pays 5 x 2000 sat; commitment k is final at L_k = R - 2k, so commitment 5 at $f2_locktime (R = $f2_refund)"
[[ $(bob show "$f2_channel" | field paid_total_sat) == 10000 ]] || fail "Bob does not hold 10000 sat"
say "  then Alice vanishes. Bob holds commitment 5 (10000 sat to him); the tip is $(tip)"
mine_to $((f2_locktime - 1))
sleep 1
[[ -z $(mempool_spend "$f2_funding") ]] || fail "something spent the funding before commitment 5 was final"
say "  mined to $((f2_locktime - 1)): commitment 5 is not final yet, the mempool stays empty"
mine 1
t0=$(now_ms)
wait_for 10 "Bob's commitment in the mempool" spent_in_mempool "$f2_funding"
f2_txid=$(mempool_spend "$f2_funding")
[[ $(btc getrawtransaction "$f2_txid" true | field locktime) == "$f2_locktime" ]] ||
    fail "the transaction in the mempool is not commitment 5"
say "  mined block $f2_locktime: $(($(now_ms) - t0)) ms later Bob's serve broadcast commitment 5 by itself: $f2_txid"
mine 1
closed_by_bob() { [[ $(bob show "$f2_channel" | field closing) != null ]]; }
wait_for 10 "Bob's record of the close" closed_by_bob
closing=$(bob show "$f2_channel" | field closing)
f2_payer=$(field payer_sat <<<"$closing")
f2_payee=$(field payee_sat <<<"$closing")
[[ $(field txid <<<"$closing") == "$f2_txid" && $(field kind <<<"$closing") == commitment &&
    $(field update <<<"$closing") == 5 && $f2_payee == 10000 &&
    $(field height <<<"$closing") == $((f2_locktime + 1)) ]] || fail "Bob recorded $closing"
confs=$(check_close "$f2_txid" "$f2_funding" "$f2_locktime" "$f2_payer" "$f2_payee")
say "  one block later Bob records the close: kind commitment, update 5, Bob $f2_payee sat, Alice $f2_payer sat"
say "  ($confs confirmation; Alice's refund, final only at R = $f2_refund, can no longer spend the funding)"

# ---------------------------------------------------------------------------------------------
act "Act three: Bob vanishes; Alice's watch takes her money back at R"
say "  paychan open BOB --capacity 100000 --lifetime 40 --step 2"
open_channel open3 100000 --lifetime 40 --step 2
f3_channel=$channel f3_funding=$funding f3_refund=$refund
alice pay "$f3_channel" 3000 >/dev/null
say "  Alice pays 3000 sat. Then Bob's serve is killed (kill -9) and never comes back"
{ kill -9 "$serve_pid" && wait "$serve_pid"; } 2>/dev/null || true
serve_pid=""
: >"$work/watch.out"
alice watch "$f3_channel" --poll-ms 100 >"$work/watch.out" 2>"$work/watch.err" &
watch_pid=$!
watch_line() { sed -n "${1}p" "$work/watch.out"; }
has_line() { [[ $(wc -l <"$work/watch.out") -ge $1 ]]; }
wait_for 10 "watch's first event" has_line 1
[[ $(watch_line 1 | field event) == watching && $(watch_line 1 | field channels.0.refund_locktime) == "$f3_refund" ]] ||
    fail "watch began with $(watch_line 1)"
say "  paychan watch $f3_channel: watching, refund locktime R = $f3_refund"
mine_to $((f3_refund - 1))
sleep 1
[[ $(wc -l <"$work/watch.out") == 1 && -z $(mempool_spend "$f3_funding") ]] ||
    fail "something happened before R: $(cat "$work/watch.out")"
say "  mined to $((f3_refund - 1)): Bob's commitment is final but Bob is gone; the refund is not final yet: nothing broadcast"
mine 1
wait_for 10 "the watch's broadcast" has_line 2
sent=$(watch_line 2)
f3_txid=$(field txid <<<"$sent")
[[ $(field event <<<"$sent") == broadcast && $(field kind <<<"$sent") == refund &&
    $(field tip <<<"$sent") == "$f3_refund" && $(mempool_spend "$f3_funding") == "$f3_txid" ]] ||
    fail "watch said $sent"
say "  mined block R = $f3_refund: the watch broadcast the refund: $f3_txid"
mine 1
wait_for 10 "the watch's record of the close" has_line 3
closing=$(watch_line 3 | field closing)
f3_payer=$(field payer_sat <<<"$closing")
f3_payee=$(field payee_sat <<<"$closing")
[[ $(watch_line 3 | field event) == closed && $(field kind <<<"$closing") == refund &&
    $(field txid <<<"$closing") == "$f3_txid" && $f3_payee == 0 ]] || fail "watch said $(watch_line 3)"
watch_done() { ! kill -0 "$watch_pid" 2>/dev/null; }
wait_for 10 "the watch to exit" watch_done
rc=0
wait "$watch_pid" || rc=$?
watch_pid=""
((rc == 0)) || fail "watch exited with status $rc"
[[ $(watch_line 4 | field event) == "done" ]] || fail "watch ended with $(watch_line 4)"
confs=$(check_close "$f3_txid" "$f3_funding" "$f3_refund" "$f3_payer" 0)
say "  one block later ($confs confirmation) the watch records the close (kind refund: Alice $f3_payer sat, Bob 0) and exits"
say "  Bob held a commitment for 3000 sat but was not there to broadcast it: he gets nothing"

# ---------------------------------------------------------------------------------------------
act "Summary (tip $(tip)): every transaction since Alice's coins, as the node reports it"
# Count the non-coinbase transactions in every block after Alice's 101: exactly the three
# fundings and the three closes, or something else reached the chain.
onchain=0
for ((h = 102; h <= $(tip); h++)); do
    onchain=$((onchain + $(btc getblockstats "$h" '["txs"]' | field txs) - 1))
done
((onchain == 6)) || fail "$onchain transactions reached the chain, not 3 fundings and 3 closes"
row() { printf '  %-6s %-34s %-15s %7s %7s %6s\n' "$@"; }
row act "how the channel ended" "closing txid" Alice Bob confs
close_row() { row "$1" "$2" "${3:0:12}..." "$4" "$5" "$(confirmations "$3")"; }
close_row one "settled: $CHUNKS chunks, file checked" "$f1_settlement" "$f1_payer" "$f1_payee"
close_row two "Alice gone: Bob's commitment 5" "$f2_txid" "$f2_payer" "$f2_payee"
close_row three "Bob gone: Alice's refund at R" "$f3_txid" "$f3_payer" "$f3_payee"
say "  on chain: $onchain transactions (3 fundings, 3 closes); off chain: $((CHUNKS + 5 + 1)) payments"
say "  demo finished in $((SECONDS - started)) s; every check passed"
