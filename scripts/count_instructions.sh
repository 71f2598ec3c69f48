#!/usr/bin/env bash
# Counts the instructions of one payment through the engine and of the raw cryptography (one
# ECDSA sign, one verify) with valgrind's callgrind. Instruction counts do not depend on the
# machine's load, so their ratio is a stable companion to the timed benchmark.
#
# Usage: scripts/count_instructions.sh [N]    (N payments per measurement, default 500)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-500}
command -v valgrind >/dev/null || { echo "error: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
cargo bench --bench payment --no-run >/dev/null 2>&1
bin=$(ls -t target/release/deps/payment-* | grep -v '\.d$' | head -1)
out=$(mktemp -d)
count() { # kind n -> total instructions (Ir)
  PAYCHAN_BENCH_ONLY=$1 PAYCHAN_BENCH_N=$2 valgrind --tool=callgrind \
    --callgrind-out-file="$out/cg.$1.$2" "$bin" >/dev/null 2>&1
  grep -m1 '^summary:' "$out/cg.$1.$2" | awk '{print $2}'
}
e0=$(count engine 0); e1=$(count engine "$n")
r0=$(count raw 0); r1=$(count raw "$n")
python3 - "$n" "$e0" "$e1" "$r0" "$r1" <<'PY'
import sys
n, e0, e1, r0, r1 = map(int, sys.argv[1:])
engine, raw = (e1 - e0) / n, (r1 - r0) / n
print(f"instructions per payment ({n} payments): engine {engine:,.0f}, raw crypto {raw:,.0f}, "
      f"ratio {engine / raw:.3f}")
PY
rm -rf "$out"
