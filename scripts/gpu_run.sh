#!/usr/bin/env bash
# Runs on the GPU machine over the binaries scripts/gpu_stage.sh put in .gpu/bin: the CUDA tests,
# then the benchmarks with the PyTorch references of the same run. Each stage has a time limit;
# logs and JSON go to $OUT (bundled into results.tgz), a summary is printed last. HLM_TEST_FILTER
# narrows the tests stage (a gtest filter; default *Cuda*); HLM_SSD_BENCH_ARGS adds arguments to the
# SSD bench of the ssd, ssdbase and ssdalt stages (e.g. --forward-ab: the forward walks alone).
#   scripts/gpu_run.sh STAGE:SECONDS ...   stages: tests ssd ssdbase ssdalt ops torch layers mixer train decode ncu ncuws ncubw
set -u
HLM_SSD_BENCH_ARGS="${HLM_SSD_BENCH_ARGS:-}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export LD_LIBRARY_PATH="/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib:$root/.gpu/bin:${LD_LIBRARY_PATH:-}"
export HLM_SOURCE_DIR="$root" HLM_BINARY="$root/.gpu/bin/hybridlm" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/hlm_out}"
logs="$out/logs"
mkdir -p "$logs"
bin="$root/.gpu/bin"
py=/opt/torch/.venv/bin/python3
[ -x "$py" ] || py=python3

run_stage() {
  local name=$1 limit=$2
  local t0=$(date +%s)
  case "$name" in
    tests) timeout "$limit" stdbuf -oL "$bin/hybridlm_tests" --gtest_filter="${HLM_TEST_FILTER:-*Cuda*}" --gtest_color=no > "$logs/tests.log" 2>&1 ;;
    ssd) timeout "$limit" stdbuf -oL "$bin/bench_ssd_cuda" $HLM_SSD_BENCH_ARGS --json "$logs/ssd.json" > "$logs/ssd.log" 2>&1 ;;
    ssdbase|ssdalt) # the same bench over another build of libhlm.so (an A/B across builds): the
             # folder .gpu/base or .gpu/alt (its libhlm.so.xz unpacked), with the environment
             # HLM_BASE_ENV sets for ssdbase (e.g. a knob whose default changed since that build)
             base="$root/.gpu/${name#ssd}" env_set="${HLM_BASE_ENV:-}"
             [ "$name" = ssdalt ] && env_set=""
             [ -f "$base/libhlm.so" ] || xz -dk "$base/libhlm.so.xz"
             timeout "$limit" env $env_set LD_LIBRARY_PATH="$base:$LD_LIBRARY_PATH" stdbuf -oL \
               "$bin/bench_ssd_cuda" $HLM_SSD_BENCH_ARGS --json "$logs/ssd_${name#ssd}.json" > "$logs/ssd_${name#ssd}.log" 2>&1 ;;
    ops) timeout "$limit" stdbuf -oL "$bin/bench_ops_cuda" --json "$logs/ops.json" > "$logs/ops.log" 2>&1 ;;
    torch) timeout "$limit" "$py" bench/cuda/torch_reference.py --json "$logs/torch.json" > "$logs/torch.log" 2>&1 &&
           "$py" bench/cuda/compare.py "$logs/ops.json" "$logs/torch.json" > "$logs/compare.log" 2>&1 ;;
    ncu) # where the SSD kernels' warps stall (one launch of each, after the correctness checks)
         for k in ssd_fwd_fast_kernel ssd_bwd_chunk; do
           timeout "$((limit / 2))" ncu --clock-control none --section WarpStateStats --section SchedulerStats \
             --section LaunchStats --section Occupancy -k "regex:$k" --launch-skip 12 -c 1 \
             "$bin/bench_ssd_cuda" --quick --iters 5 > "$logs/ncu_$k.log" 2>&1
         done ;;
    ncuws) # the warp-specialised SSD walk (forward variant 2, or HLM_NCU_FWD_VARIANT, e.g. 5: the sm_90 default) at 64K: one launch
           # after two, with the per-instruction stall samples exported as CSV (SASS; sum them with
           # a few lines of Python, as bench/cuda/NOTES-ssd.md round 12 did for the backward)
           HLM_SSD_FWD_VARIANT=${HLM_NCU_FWD_VARIANT:-2} timeout "$limit" ncu --clock-control none --section WarpStateStats \
             --section SchedulerStats --section LaunchStats --section Occupancy --section SpeedOfLight \
             --section SourceCounters -k "regex:ssd_fwd_ws_kernel" --launch-skip 2 -c 1 --export "$logs/fwd_ws" \
             "$bin/bench_ssd_cuda" --profile 65536 > "$logs/ncu_ssd_fwd_ws_kernel.log" 2>&1
           ncu --import "$logs/fwd_ws.ncu-rep" > "$logs/ncu_ssd_fwd_ws_details.log" 2>&1
           ncu --import "$logs/fwd_ws.ncu-rep" --page source --csv --print-source sass 2>/dev/null | gzip > "$logs/fwd_ws_sass.csv.gz"
           rm -f "$logs/fwd_ws.ncu-rep" ;;
    ncubw) # the backward chunk kernel, variants 1 (the sm_90 default) and 3 (pipelined), or those
           # HLM_NCU_BWD_VARIANTS lists, at 4K, the bench's first backward launch after its two
           # checks: details and per-instruction samples
           for v in ${HLM_NCU_BWD_VARIANTS:-1 3}; do
             HLM_SSD_BWD_VARIANT=$v timeout "$((limit / 2))" ncu --clock-control none --section WarpStateStats \
               --section SchedulerStats --section LaunchStats --section Occupancy --section SpeedOfLight \
               --section SourceCounters -k "regex:ssd_bwd_chunk_wg_kernel" --launch-skip 2 -c 1 --export "$logs/bw$v" \
               "$bin/bench_ssd_cuda" --quick --iters 5 > /dev/null 2>&1
             ncu --import "$logs/bw$v.ncu-rep" > "$logs/ncu_bwd$v.log" 2>&1
             ncu --import "$logs/bw$v.ncu-rep" --page source --csv --print-source sass 2>/dev/null | gzip > "$logs/bwd${v}_sass.csv.gz"
             rm -f "$logs/bw$v.ncu-rep"
           done ;;
    layers|train|decode|mixer) timeout "$limit" stdbuf -oL "$bin/bench_model_cuda" "--$name" --json "$logs/$name.json" > "$logs/$name.log" 2>&1 ;;
    *) echo "unknown stage $name"; return 1 ;;
  esac
  local rc=$?
  echo "$name: rc=$rc in $(( $(date +%s) - t0 )) s" >> "$out/summary.txt"
}

nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv,noheader > "$out/summary.txt"
for spec in "$@"; do run_stage "${spec%%:*}" "${spec##*:}"; done
tar -czf "$out/results.tgz" -C "$out" logs
rm -rf "$logs"
# What matters most, last (the reply carries the end of the output).
tar -xzOf "$out/results.tgz" logs/tests.log 2>/dev/null | grep -E "^\[  (FAILED|PASSED|SKIPPED) |tests? ran" | tail -40
for f in ssd ssd_base ssd_alt ops compare layers mixer train decode ncu_ssd_fwd_fast_kernel ncu_ssd_bwd_chunk ncu_ssd_fwd_ws_kernel; do
  tar -xzOf "$out/results.tgz" "logs/$f.log" 2>/dev/null | tail -40
done
cat "$out/summary.txt"
