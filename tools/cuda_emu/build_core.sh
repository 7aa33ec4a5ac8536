#!/bin/bash
# Builds core_emu_check (the core ops' own kernels on the host emulation; no GPU or nvcc needed):
#   tools/cuda_emu/build_core.sh [outdir] [extra g++ flags]   then   <outdir>/core_emu_check [filter]
set -e
cd "$(dirname "$0")/../.."
out=${1:-build/emu}
if [ $# -gt 0 ]; then shift; fi
mkdir -p "$out"
CXX=${CXX:-g++}
FLAGS="-std=c++20 -O2 -g -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas -Wno-clobbered $*"
INC="-Itools/cuda_emu/include -Isrc"
objs=""
for f in tools/cuda_emu/common_stub.cpp tools/cuda_emu/core_stub.cpp src/ops/cuda/gemm_own.cu \
         src/ops/cuda/attention_decode.cu src/ops/cuda/norm.cu \
         tools/cuda_emu/emu_runtime.cpp src/core/tensor.cpp src/core/dtype.cpp src/core/error.cpp; do
  o="$out/core_$(basename "$f").o"
  if [ ! -f "$o" ] || [ "$f" -nt "$o" ] || [ -n "$(find src/ops/cuda tools/cuda_emu -newer "$o" -name '*.cuh' -o -newer "$o" -name '*.h' | head -1)" ]; then
    case "$f" in *.cu) lang="-x c++";; *) lang="";; esac
    echo "  CXX $f"
    while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-2}" ]; do wait -n; done  # shared machine: 2 jobs
    $CXX $FLAGS $INC $lang -c "$f" -o "$o" &
  fi
  objs="$objs $o"
done
wait
echo "  LINK core_emu_check"
$CXX $FLAGS $INC tools/cuda_emu/core_emu_check.cpp $objs -lfmt -o "$out/core_emu_check"
