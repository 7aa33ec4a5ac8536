#!/bin/bash
# Builds the host-emulation checks of our CUDA kernels (no GPU or nvcc needed):
#   tools/cuda_emu/build.sh [outdir] [extra g++ flags, e.g. -fsanitize=address]
# then run  <outdir>/ssd_emu_check [filter]  and  <outdir>/conv1d_emu_check.
set -e
cd "$(dirname "$0")/../.."
out=${1:-build/emu}
if [ $# -gt 0 ]; then shift; fi
mkdir -p "$out"
CXX=${CXX:-g++}
FLAGS="-std=c++20 -O2 -g -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas -Wno-clobbered $*"
INC="-Itools/cuda_emu/include -Isrc"
common="tools/cuda_emu/emu_runtime.cpp src/core/tensor.cpp src/core/dtype.cpp src/core/error.cpp"
objs=""
for f in tools/cuda_emu/common_stub.cpp src/ops/cuda/ssd.cu src/ops/cuda/ssd_fwd.cu src/ops/cuda/ssd_fwd_wg.cu src/ops/cuda/ssd_bwd.cu src/ops/cuda/ssd_bwd_wg.cu \
         src/ops/cuda/ssd_generic.cu src/ops/cuda/ssd_state.cu src/ops/cuda/ssd_step.cu src/ops/cuda/conv1d.cu src/ops/cuda/wgmma_check.cu src/ops/cuda/pipeline_check.cu $common; do
  [ -f "$f" ] || continue
  o="$out/$(basename "$f").o"
  if [ ! -f "$o" ] || [ "$f" -nt "$o" ] || [ -n "$(find src/ops/cuda tools/cuda_emu -newer "$o" -name '*.cuh' -o -newer "$o" -name '*.h' | head -1)" ]; then
    case "$f" in *.cu) lang="-x c++";; *) lang="";; esac
    echo "  CXX $f"
    while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-2}" ]; do wait -n; done  # shared machine: 2 jobs
    $CXX $FLAGS $INC $lang -c "$f" -o "$o" &
  fi
  objs="$objs $o"
done
wait
for t in ssd_emu_check conv1d_emu_check wgmma_emu_check pipeline_emu_check; do
  [ -f tools/cuda_emu/$t.cpp ] || continue
  echo "  LINK $t"
  $CXX $FLAGS $INC tools/cuda_emu/$t.cpp $objs -lfmt -o "$out/$t"
done
