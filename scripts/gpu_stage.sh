#!/usr/bin/env bash
# Builds the GPU binaries (shared library, sm_90a) and stages them, stripped, with the two Debian
# libraries the GPU machine lacks, into .gpu/bin: the folder `device run` carries there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cmake --preset gpu >/dev/null
cmake --build --preset gpu -j "$(nproc)" --target hybridlm hybridlm_tests bench_ssd_cuda bench_ops_cuda bench_model_cuda
rm -rf .gpu/bin && mkdir -p .gpu/bin
cp build/gpu/libhlm.so build/gpu/hybridlm build/gpu/hybridlm_tests build/gpu/bench_ssd_cuda \
   build/gpu/bench_ops_cuda build/gpu/bench_model_cuda .gpu/bin/
strip .gpu/bin/*
cp -L /usr/lib/x86_64-linux-gnu/libfmt.so.9 /usr/lib/x86_64-linux-gnu/libutf8proc.so.2 .gpu/bin/
du -sh .gpu/bin
