#!/bin/bash
# Mutation test of the barriers: removes each barrier of the given kernel files in turn (in a copy
# of the tree under ${TMPDIR:-/tmp}): every __syncthreads, named-barrier bar_sync and mbarrier wait
# (the call kept as a discarded expression), and runs ssd_emu_check under one-warp-at-a-time
# schedules; every line should read FAIL. Usage: tools/cuda_emu/mutate_barriers.sh [filter] file.cu...
#   e.g. tools/cuda_emu/mutate_barriers.sh fast64x128 src/ops/cuda/ssd_fwd.cu src/ops/cuda/ssd_state.cu
#   HLM_SSD_FWD_VARIANT=2 tools/cuda_emu/mutate_barriers.sh fast64x128 src/ops/cuda/ssd_fwd_wg.cu
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
filter=${1:-fast64x128}
shift
work=${TMPDIR:-/tmp}/hlm_mutate_$$
mkdir -p "$work" && cp -r "$src/src" "$src/tools" "$work/"
cd "$work"
for f in "$@"; do
  n=$(grep -cE "__syncthreads\(\);|mma::(bar_sync|mbar_wait)\(" "$src/$f")
  for i in $(seq 1 "$n"); do
    awk -v k="$i" '/__syncthreads\(\);|mma::(bar_sync|mbar_wait)\(/{c++; if(c==k){
        if (!sub(/__syncthreads\(\);/,"/*removed*/;")) sub(/mma::(bar_sync|mbar_wait)\(/,"/*removed*/(void)(")}}{print}' \
      "$src/$f" > "$f"
    line=$(grep -n "/\*removed\*/" "$f" | cut -d: -f1)
    JOBS=1 tools/cuda_emu/build.sh build/emu >/dev/null 2>&1 || { echo "$f #$i (line $line): build failed"; continue; }
    r=""
    for s in warp warprev; do
      if EMU_SCHED=$s timeout 300 build/emu/ssd_emu_check "$filter" >/dev/null 2>&1; then r="$r $s:pass"; else r="$r $s:FAIL"; fi
    done
    echo "$f barrier #$i (line $line):$r"
    cp "$src/$f" "$f"
  done
done
rm -rf "$work"
