#!/usr/bin/env bash
# Tokenizes the SOTU corpus into two Megatron indexed datasets with the NeoX tokenizer: speeches of
# years <= 2000 for training, 2001-2021 for validation (unseen text, later register).
#   scripts/prepare_sotu.sh [OUT_DIR]   (default runs/data) -> OUT_DIR/sotu_train.{bin,idx}, sotu_val.{bin,idx}
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/runs/data}"
bin="${HLM_BIN:-$root/build/cpu/hybridlm}"
tok="$root/data/20B_tokenizer.json"
[ -x "$bin" ] || { echo "prepare_sotu: $bin not built (cmake --preset cpu && cmake --build --preset cpu)" >&2; exit 1; }
[ -f "$tok" ] || { echo "prepare_sotu: $tok missing: run scripts/fetch_data.sh" >&2; exit 1; }
mkdir -p "$out"
train=() val=()
for f in "$root"/data/sotu/*.txt; do
  year=$(basename "$f" | cut -c1-4)
  if [ "$year" -le 2000 ]; then train+=("--input" "$f"); else val+=("--input" "$f"); fi
done
"$bin" preprocess --tokenizer "$tok" "${train[@]}" --output-prefix "$out/sotu_train"
"$bin" preprocess --tokenizer "$tok" "${val[@]}" --output-prefix "$out/sotu_val"
