#!/bin/bash
# Bounded training runs for benchmarks/README.md, "Decode cache and full-resolution films":
# the 224 px copies and their 1500 px stand-ins, each with the decode cache off, cold
# (emptied first) and warm (the same cache again), back to back and niced (the machine is
# shared). First: python benchmarks/decode_cache.py standins --work "$WORK"
# Usage: benchmarks/decode_cache.sh REP [REP...]   (KINDS="full small" reverses the order)
set -eu
cd "$(dirname "$0")/.."
WORK=${WORK:-/work/tmp-data/decode-bench}
OUT=$WORK/train.jsonl
mkdir -p "$WORK/runs"
for rep in "$@"; do
  for kind in ${KINDS:-small full}; do
    rm -rf "$WORK/cache-$kind-$rep"
    for cond in off cold warm; do
      cache=$WORK/cache-$kind-$rep; [ "$cond" = off ] && cache=off
      rm -rf "$WORK/runs/$kind-$cond-$rep"
      echo "{\"rep\": $rep, \"cond\": \"$cond\", \"load\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >> "$OUT"
      PYTHONPATH=$PWD nice -n 10 python benchmarks/decode_cache.py train --data "$WORK/$kind" \
        --cache "$cache" --epochs 3 --run-dir "$WORK/runs/$kind-$cond-$rep" >> "$OUT" 2>> "$WORK/train.log"
    done
  done
done
