#!/usr/bin/env bash
# `hybridlm preprocess` on the whole SOTU corpus, end to end (tokenizer load, tokenizing, writing,
# fsync, rename): median wall time and CPU time (user + sys; steadier on a shared machine) of RUNS
# runs for each worker count.
#   bench/bench_preprocess.sh [RUNS] [WORKERS...]    (defaults: 7 runs; 1 and all cores)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${HLM_BIN:-$root/build/cpu/hybridlm}"
runs="${1:-7}"; shift || true
workers=("$@"); [ ${#workers[@]} -gt 0 ] || workers=(1 "$(nproc)")
out="$(mktemp -d)"; trap 'rm -rf "$out"' EXIT
mb=$(cat "$root"/data/sotu/*.txt | wc -c | awk '{printf "%.2f", $1/1e6}')
echo "corpus: $(ls "$root"/data/sotu/*.txt | wc -l) files, $mb MB; $(nproc) cores; $runs runs, median"
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
TIMEFORMAT='%R %U %S'
for w in "${workers[@]}"; do
  : > "$out/times"
  for ((i = 0; i < runs; i++)); do
    { time "$bin" preprocess --tokenizer "$root/data/20B_tokenizer.json" --input "$root/data/sotu" \
        --output-prefix "$out/sotu" --workers "$w" 2>"$out/log"; } 2>>"$out/times"
  done
  wall=$(awk '{print $1}' "$out/times" | median)
  cpu=$(awk '{print $2 + $3}' "$out/times" | median)
  awk -v w="$w" -v t="$wall" -v c="$cpu" -v m="$mb" 'BEGIN {
    printf "workers %s: wall %.3f s (%.1f MB/s), CPU %.3f s (%.1f MB per CPU-second)\n", w, t, m / t, c, m / c }'
  echo "  last run: $(cat "$out/log")"
done
