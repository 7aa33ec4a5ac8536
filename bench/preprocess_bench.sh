#!/usr/bin/env bash
# Wall time of `hybridlm preprocess` on the whole SOTU corpus (tokenizer load, tokenizing, writing,
# fsync and rename), median of RUNS runs for each worker count.
#   bench/preprocess_bench.sh [RUNS] [WORKERS...]    (defaults: 7 runs; 1 and all cores)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${HLM_BIN:-$root/build/cpu/hybridlm}"
runs="${1:-7}"; shift || true
workers=("$@"); [ ${#workers[@]} -gt 0 ] || workers=(1 "$(nproc)")
out="$(mktemp -d)"; trap 'rm -rf "$out"' EXIT
mb=$(cat "$root"/data/sotu/*.txt | wc -c | awk '{printf "%.2f", $1/1e6}')
echo "corpus: $(ls "$root"/data/sotu/*.txt | wc -l) files, $mb MB; $(nproc) cores; $runs runs, median"
for w in "${workers[@]}"; do
  times=()
  for ((i = 0; i < runs; i++)); do
    s=$(date +%s.%N)
    "$bin" preprocess --tokenizer "$root/data/20B_tokenizer.json" --input "$root/data/sotu" \
      --output-prefix "$out/sotu" --workers "$w" 2>"$out/log"
    e=$(date +%s.%N)
    times+=("$(awk -v a="$s" -v b="$e" 'BEGIN {print b - a}')")
  done
  med=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf 'workers %s: wall %.3f s (%.1f MB/s incl. tokenizer load); last run: %s\n' "$w" "$med" \
    "$(awk -v m="$mb" -v t="$med" 'BEGIN {print m / t}')" "$(cat "$out/log")"
done
