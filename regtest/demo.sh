#!/usr/bin/env bash
# The whole story in one command, on a private regtest chain of its own:
#
#   act one    micropayments: Alice (payer) buys a 1000-chunk file from Bob (payee) at 10 sat a
#              chunk over one channel with the default terms: 1000 payments, of which only the
#              checkpoints (one per 1% of the capacity paid) are countersigned and step down the
#              ladder; then they settle: two transactions on chain.
#   act two    the original scheme (--checkpoint-every 1: every payment countersigned, each on
#              its own rung). Alice vanishes after five payments: Bob's daemon broadcasts his
#              newest commitment by itself as soon as it is final.
#   act three  Bob vanishes after a checkpoint and a payment after it: Alice's `paychan watch`
#              broadcasts her newest checkpoint as soon as it is final, a step before the
#              refund at R.
#   act four   pay per request over HTTP: Bob's serve comes back as a 402 gateway in front of a
#              web API (python3's http.server), 25 sat a call; Alice's `paychan http` opens a
#              channel on the first 402 and pays each call with one signature; then they settle.
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
# Act one's file: many small chunks at a tiny price, so the totals start below Bob's dust limit
# (294 sat) and the 1000 payments use only a handful of rungs.
CHUNKS=1000
CHUNK_SIZE=1024
PRICE=10
CAPACITY=100000

work="" node_pid="" serve_pid="" watch_pid="" job_pid="" api_pid=""
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
    stop_pid "$api_pid"
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
act "Act one: micropayments. Alice buys the file chunk by chunk, then the channel settles"
say "  paychan fetch BOB film.bin --out film.bin --capacity $CAPACITY (the default terms: lifetime 1008"
say "  blocks, step 6, a checkpoint for every 1% of the capacity paid)"
t0=$SECONDS
mine_while fetch "chunks at" alice fetch "$bob_peer" film.bin --out "$work/downloads/film.bin" --capacity "$CAPACITY"
fetch_s=$((SECONDS - t0))
fetched=$(cat "$work/fetch.out")
f1_channel=$(field channel_id <<<"$fetched")
f1_settlement=$(field settlement_txid <<<"$fetched")
f1_payer=$(field payer_sat <<<"$fetched")
f1_payee=$(field payee_sat <<<"$fetched")
f1_funding=$(alice show "$f1_channel" | field funding_outpoint)
check_funding "$f1_funding" "$CAPACITY"
chunks=$(field chunks <<<"$fetched")
paid=$(field paid_sat <<<"$fetched")
((chunks == CHUNKS && paid == CHUNKS * PRICE && f1_payee == paid)) ||
    fail "fetch reports $chunks chunks, $paid sat paid, $f1_payee sat to Bob"
[[ $(field resumed_from <<<"$fetched") == 0 ]] || fail "a fresh fetch resumed: $fetched"
say "  channel $f1_channel opened: funding ${f1_funding%:*} ($mined blocks mined until it confirmed)"
say "  $chunks chunks received, each paid as it arrived: $chunks off-chain payments of $PRICE sat"
say "  (the whole fetch, open included, took $fetch_s s)"
cmp -s "$work/shop/film.bin" "$work/downloads/film.bin" || fail "the downloaded file differs from Bob's"
sha=$(python3 -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$work/shop/film.bin")
[[ $(field sha256 <<<"$fetched") == "$sha" ]] || fail "fetch checked another hash than the file's"
say "  the downloaded file is byte for byte Bob's (sha256 $sha)"
# The default policy: a checkpoint once 1% of the capacity has been paid since the last one (the
# last payment is one when the total lands on a multiple of it).
every_sat=$((CAPACITY / 100))
f1_checkpoints=$((paid / every_sat))
bob_view=$(bob show "$f1_channel")
f1_refund=$(field refund_locktime <<<"$bob_view")
f1_rung_locktime=$(field current_locktime <<<"$bob_view")
[[ $(field paid_total_sat <<<"$bob_view") == "$paid" && $(field payments <<<"$bob_view") == "$CHUNKS" &&
    $(field checkpoints <<<"$bob_view") == "$f1_checkpoints" &&
    $(field checkpoint_paid_sat <<<"$bob_view") == $((f1_checkpoints * every_sat)) &&
    $(field checkpoint_policy.every_sat <<<"$bob_view") == "$every_sat" &&
    $(field checkpoint_policy.every_payments <<<"$bob_view") == null &&
    $f1_rung_locktime == $((f1_refund - 6 * f1_checkpoints)) ]] ||
    fail "Bob holds $(field paid_total_sat <<<"$bob_view") sat in $(field payments <<<"$bob_view") payments and $(field checkpoints <<<"$bob_view") checkpoints: $bob_view"
[[ $(alice show "$f1_channel" | field checkpoints) == "$f1_checkpoints" ]] || fail "Alice counts other checkpoints than Bob"
say "  Bob's show agrees: $paid sat in $CHUNKS payments, of which $f1_checkpoints checkpoints (policy: every $every_sat sat,"
say "  1% of the capacity). A payment is one signature of Alice's on the commitment at its rung's"
say "  locktime; a checkpoint is countersigned by Bob too, and the payments after it move one rung"
say "  (6 blocks) down: $CHUNKS payments used $f1_checkpoints rungs, the newest at $f1_rung_locktime (R = $f1_refund). Had every"
say "  payment been a checkpoint (act two's scheme), they would have needed $CHUNKS rungs: the default"
say "  terms have 166"
say "  the first $(((294 - 1) / PRICE)) totals ($PRICE to $(((294 - 1) / PRICE * PRICE)) sat) were below Bob's 294-sat dust limit: those"
say "  commitments had no output for him. None of the commitments was broadcast"
say "  the settlement (nLockTime 0, signed by both) is broadcast: $f1_settlement"
mine 1
confs=$(check_close "$f1_settlement" "$f1_funding" 0 "$f1_payer" "$f1_payee")
f1_fee=$((CAPACITY - f1_payer - f1_payee))
say "  $confs confirmation one block later: Bob gets $f1_payee sat ($CHUNKS x $PRICE), Alice $f1_payer sat back, $f1_fee sat fee"
say "  on chain for this channel: the funding and the settlement, nothing else"

# ---------------------------------------------------------------------------------------------
act "Act two: the original scheme; Alice vanishes, Bob's daemon closes with his newest commitment"
say "  every payment a checkpoint, as in the article where both sign every update; a short channel so"
say "  it ends quickly: paychan open BOB --capacity 100000 --lifetime 40 --step 2 --checkpoint-every 1"
open_channel open2 100000 --lifetime 40 --step 2 --checkpoint-every 1
f2_channel=$channel f2_funding=$funding f2_refund=$refund
for k in 1 2 3 4 5; do
    out=$(alice pay "$f2_channel" 2000)
    locktime=$(field locktime <<<"$out")
    [[ $(field payment <<<"$out") == "$k" && $(field checkpoint <<<"$out") == true &&
        $locktime == $((f2_refund - 2 * k)) && $(field checkpoint_locktime <<<"$out") == "$locktime" ]] ||
        fail "payment $k: $out (expected a checkpoint at R - $k*2)"
done
f2_locktime=$(alice show "$f2_channel" | field current_locktime)
((f2_locktime == locktime)) || fail "show says current_locktime $f2_locktime, pay said $locktime"
say "  Alice pays 5 x 2000 sat; each payment is a checkpoint on its own rung: commitment k is final"
say "  at L_k = R - 2k, so commitment 5 at $f2_locktime (R = $f2_refund)"
bob_view=$(bob show "$f2_channel")
[[ $(field paid_total_sat <<<"$bob_view") == 10000 && $(field payments <<<"$bob_view") == 5 &&
    $(field checkpoints <<<"$bob_view") == 5 ]] || fail "Bob holds $bob_view"
say "  then Alice vanishes. Bob holds commitment 5 (10000 sat to him, rung 5); the tip is $(tip)"
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
    $(field rung <<<"$closing") == 5 && $f2_payee == 10000 &&
    $(field height <<<"$closing") == $((f2_locktime + 1)) ]] || fail "Bob recorded $closing"
confs=$(check_close "$f2_txid" "$f2_funding" "$f2_locktime" "$f2_payer" "$f2_payee")
say "  one block later Bob records the close: kind commitment, rung 5, Bob $f2_payee sat, Alice $f2_payer sat"
say "  ($confs confirmation; the older commitments and Alice's refund, final only later, can no longer"
say "  spend the funding)"

# ---------------------------------------------------------------------------------------------
act "Act three: Bob vanishes; Alice's watch takes her newest checkpoint, a step before R"
say "  the default step of 6 blocks and checkpoint policy (every 1000 sat, 1% of the capacity):"
say "  paychan open BOB --capacity 100000 --lifetime 40"
open_channel open3 100000 --lifetime 40
f3_channel=$channel f3_funding=$funding f3_refund=$refund
out=$(alice pay "$f3_channel" 3000)
f3_exit=$(field locktime <<<"$out")
[[ $(field payment <<<"$out") == 1 && $(field checkpoint <<<"$out") == true && $f3_exit == $((f3_refund - 6)) &&
    $(field checkpoint_locktime <<<"$out") == "$f3_exit" ]] || fail "pay 3000: $out (expected a checkpoint at R - 6)"
say "  Alice pays 3000 sat: at least 1000 sat since the last checkpoint, so a checkpoint, countersigned"
say "  by Bob: Alice now holds a fully signed commitment paying Bob 3000 sat, final at L_1 = R - 6 = $f3_exit"
out=$(alice pay "$f3_channel" 500)
f3_newest=$(field locktime <<<"$out")
[[ $(field payment <<<"$out") == 2 && $(field checkpoint <<<"$out") == false &&
    $f3_newest == $((f3_refund - 12)) && $(field checkpoint_locktime <<<"$out") == "$f3_exit" ]] ||
    fail "pay 500: $out (expected a plain payment at R - 12, the checkpoint staying at R - 6)"
bob_view=$(bob show "$f3_channel")
[[ $(field paid_total_sat <<<"$bob_view") == 3500 && $(field current_locktime <<<"$bob_view") == "$f3_newest" &&
    $(field checkpoints <<<"$bob_view") == 1 && $(field checkpoint_paid_sat <<<"$bob_view") == 3000 ]] ||
    fail "Bob holds $bob_view"
say "  then 500 sat more: a payment after the checkpoint, one rung down. Bob holds Alice's signature"
say "  on a commitment for 3500 sat final at L_2 = R - 12 = $f3_newest; Alice keeps her checkpoint"
say "  then Bob's serve is killed (kill -9) and never comes back"
{ kill -9 "$serve_pid" && wait "$serve_pid"; } 2>/dev/null || true
serve_pid=""
: >"$work/watch.out"
alice watch "$f3_channel" --poll-ms 100 >"$work/watch.out" 2>"$work/watch.err" &
watch_pid=$!
watch_line() { sed -n "${1}p" "$work/watch.out"; }
has_line() { [[ $(wc -l <"$work/watch.out") -ge $1 ]]; }
wait_for 10 "watch's first event" has_line 1
[[ $(watch_line 1 | field event) == watching && $(watch_line 1 | field channels.0.refund_locktime) == "$f3_refund" &&
    $(watch_line 1 | field channels.0.checkpoint_locktime) == "$f3_exit" ]] ||
    fail "watch began with $(watch_line 1)"
say "  paychan watch $f3_channel: watching, checkpoint locktime $f3_exit, refund locktime R = $f3_refund"
mine_to $((f3_exit - 1))
sleep 1
[[ $(wc -l <"$work/watch.out") == 1 && -z $(mempool_spend "$f3_funding") ]] ||
    fail "something happened before the checkpoint was final: $(cat "$work/watch.out")"
say "  mined to $((f3_exit - 1)): Bob's 3500-sat commitment has been final since block $f3_newest but Bob is gone;"
say "  Alice's checkpoint is not final yet: nothing broadcast"
mine 1
wait_for 10 "the watch's broadcast" has_line 2
sent=$(watch_line 2)
f3_txid=$(field txid <<<"$sent")
[[ $(field event <<<"$sent") == broadcast && $(field kind <<<"$sent") == checkpoint &&
    $(field tip <<<"$sent") == "$f3_exit" && $(mempool_spend "$f3_funding") == "$f3_txid" ]] ||
    fail "watch said $sent"
[[ $(btc getrawtransaction "$f3_txid" true | field locktime) == "$f3_exit" ]] ||
    fail "the transaction in the mempool is not Alice's checkpoint"
say "  mined block $f3_exit: the watch broadcast Alice's checkpoint: $f3_txid"
mine 1
wait_for 10 "the watch's record of the close" has_line 3
closing=$(watch_line 3 | field closing)
f3_payer=$(field payer_sat <<<"$closing")
f3_payee=$(field payee_sat <<<"$closing")
f3_fee=$((100000 - f3_payer - f3_payee))
[[ $(watch_line 3 | field event) == closed && $(field kind <<<"$closing") == commitment &&
    $(field rung <<<"$closing") == 1 && $(field txid <<<"$closing") == "$f3_txid" &&
    $(field height <<<"$closing") == $((f3_exit + 1)) && $f3_payee == 3000 ]] ||
    fail "watch said $(watch_line 3)"
((f3_fee > 0 && f3_fee < 1000)) || fail "the checkpoint pays Alice $f3_payer sat: a fee of $f3_fee sat"
watch_done() { ! kill -0 "$watch_pid" 2>/dev/null; }
wait_for 10 "the watch to exit" watch_done
rc=0
wait "$watch_pid" || rc=$?
watch_pid=""
((rc == 0)) || fail "watch exited with status $rc"
[[ $(watch_line 4 | field event) == "done" ]] || fail "watch ended with $(watch_line 4)"
confs=$(check_close "$f3_txid" "$f3_funding" "$f3_exit" "$f3_payer" "$f3_payee")
[[ -z $(mempool_spend "$f3_funding") ]] || fail "something else still spends the funding"
say "  one block later ($confs confirmation) the watch records the close (kind commitment, rung 1:"
say "  Bob $f3_payee sat, Alice $f3_payer sat, $f3_fee sat fee) and exits"
say "  Alice's money was back $((f3_refund - f3_exit)) blocks before R = $f3_refund: without a checkpoint her way out"
say "  would have been the refund at R. Bob gets exactly the checkpoint's 3000 sat: the 500 sat paid"
say "  after it were his only if he broadcast their commitment himself, and he was not there"

# ---------------------------------------------------------------------------------------------
act "Act four: pay per request over HTTP; Bob's serve is a 402 gateway in front of a web API"
API_PRICE=25
CALLS=20
mkdir -p "$work/api/v1"
printf '{"quote":"the newest state becomes final first"}\n' >"$work/api/v1/quote.json"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
api_port=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$work/api" "$api_port" >"$work/api.log" 2>&1 &
api_pid=$!
api_up() { python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$api_port" 2>/dev/null; }
wait_for 10 "the web API" api_up
say "  the web API: python3 -m http.server on 127.0.0.1:$api_port, serving /v1/quote.json for free"
"$PAYCHAN" --json --datadir "$work/bob" serve --listen 127.0.0.1:0 --poll-ms 100 \
    --http-listen 127.0.0.1:0 --upstream "http://127.0.0.1:$api_port" --price-per-request "$API_PRICE" \
    >"$work/serve4.out" 2>>"$work/serve.log" &
serve_pid=$!
wait_for 30 "serve's announcement" test -s "$work/serve4.out"
announced=$(head -n 1 "$work/serve4.out")
bob_peer="$bob_id@$(field listen <<<"$announced")"
gateway=$(field http <<<"$announced")
say "  Bob's serve is back: channels at $bob_peer, and an HTTP gateway at $gateway"
say "  in front of the API, at $API_PRICE sat a request (serve --http-listen --upstream --price-per-request)"
url="http://$gateway/v1/quote.json"
head402=$(curl -s -o /dev/null -D - "$url" | tr -d '\r')
[[ $(sed -n '1p' <<<"$head402") == "HTTP/1.1 402 Payment Required" ]] || fail "an unpaid call got: $head402"
[[ $(grep -i '^paychan-price:' <<<"$head402") == "paychan-price: $API_PRICE" &&
    $(grep -i '^paychan-peer:' <<<"$head402") == "paychan-peer: $bob_peer" ]] || fail "the 402 said: $head402"
grep -q '"GET /v1/quote.json' "$work/api.log" && fail "an unpaid call reached the API"
say "  curl $url (no payment):"
grep -i -e '^HTTP/' -e '^paychan-' <<<"$head402" | sed 's/^/    /'
say "  the API never saw that call"
say "  paychan http $url --capacity 20000: the first call opens a channel to the peer the 402 named"
mine_while http1 "" alice http "$url" --capacity 20000
first=$(cat "$work/http1.out")
f4_channel=$(field channel_id <<<"$first")
f4_funding=$(alice show "$f4_channel" | field funding_outpoint)
check_funding "$f4_funding" 20000
[[ $(field status <<<"$first") == 200 && $(field paid_sat <<<"$first") == "$API_PRICE" &&
    $(field body <<<"$first") == '{"quote":"the newest state becomes final first"}' ]] || fail "the first call: $first"
say "  channel $f4_channel opened ($mined blocks mined); the call was paid and answered:"
say "    $(field body <<<"$first")"
t0=$(now_ms)
for ((i = 2; i <= CALLS; i++)); do
    out=$(alice http "$url")
    [[ $(field status <<<"$out") == 200 && $(field channel_id <<<"$out") == "$f4_channel" &&
        $(field paid_total_sat <<<"$out") == $((i * API_PRICE)) ]] || fail "call $i: $out"
done
calls_ms=$(($(now_ms) - t0))
served=$(grep -c '"GET /v1/quote.json' "$work/api.log")
((served == CALLS)) || fail "the API served $served calls, not $CALLS"
say "  $((CALLS - 1)) more calls on the same channel (each a whole paychan process: $((calls_ms / (CALLS - 1))) ms a call);"
say "  each carries one signature of Alice's in its Paychan-Payment header, which Bob's gateway checks"
say "  and saves before it forwards the call. The API served exactly the $CALLS paid calls"
f4_checkpoints=$(alice show "$f4_channel" | field checkpoints)
((f4_checkpoints == CALLS * API_PRICE / (20000 / 100))) || fail "$f4_checkpoints checkpoints for $((CALLS * API_PRICE)) sat"
out=$(alice close "$f4_channel")
f4_settlement=$(field settlement_txid <<<"$out")
f4_payer=$(field payer_sat <<<"$out")
f4_payee=$(field payee_sat <<<"$out")
((f4_payee == CALLS * API_PRICE)) || fail "the settlement pays Bob $f4_payee sat, not $((CALLS * API_PRICE))"
mine 1
confs=$(check_close "$f4_settlement" "$f4_funding" 0 "$f4_payer" "$f4_payee")
say "  paychan close: the settlement is mined ($confs confirmation): Bob gets $f4_payee sat, $CALLS x $API_PRICE"

# ---------------------------------------------------------------------------------------------
act "Summary (tip $(tip)): every transaction since Alice's coins, as the node reports it"
# Count the non-coinbase transactions in every block after Alice's 101: exactly the four
# fundings and the four closes, or something else reached the chain.
onchain=0
for ((h = 102; h <= $(tip); h++)); do
    onchain=$((onchain + $(btc getblockstats "$h" '["txs"]' | field txs) - 1))
done
((onchain == 8)) || fail "$onchain transactions reached the chain, not 4 fundings and 4 closes"
row() { printf '  %-6s %-40s %-15s %7s %7s %6s\n' "$@"; }
row act "how the channel ended" "closing txid" Alice Bob confs
close_row() { row "$1" "$2" "${3:0:12}..." "$4" "$5" "$(confirmations "$3")"; }
close_row one "settled: $CHUNKS chunks, file checked" "$f1_settlement" "$f1_payer" "$f1_payee"
close_row two "Alice gone: Bob's commitment, rung 5" "$f2_txid" "$f2_payer" "$f2_payee"
close_row three "Bob gone: Alice's checkpoint, rung 1" "$f3_txid" "$f3_payer" "$f3_payee"
close_row four "settled: $CALLS paid HTTP calls" "$f4_settlement" "$f4_payer" "$f4_payee"
say "  on chain: $onchain transactions (4 fundings, 4 closes); off chain: $((CHUNKS + 5 + 2 + CALLS)) payments,"
say "  of which $((f1_checkpoints + 5 + 1 + f4_checkpoints)) checkpoints ($f1_checkpoints + 5 + 1 + $f4_checkpoints)"
say "  demo finished in $((SECONDS - started)) s; every check passed"
