#!/usr/bin/env bash
# Sets up, builds and runs hybridlm's tests: the unit and integration tests under address +
# undefined sanitizers, then the release build with the CUDA backend (when nvcc exists), whose GPU
# tests skip with "skipped: no GPU" on a machine without one.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/setup.sh
scripts/fetch_data.sh
jobs=$(nproc)

echo "== asan build + tests"
cmake --preset asan >/dev/null
cmake --build --preset asan -j "$jobs"
(cd build/asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j "$jobs")

if [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "== cuda build (sm_90a) + tests"
  cmake --preset cuda >/dev/null
  cmake --build --preset cuda -j "$jobs"
  (cd build/cuda && ctest --output-on-failure -j "$jobs" | tee ctest.log)
  skipped=$(grep -c '\*\*\*Skipped' build/cuda/ctest.log || true)
  if [ "$skipped" -gt 0 ]; then  # say why, in the GPU tests' own words
    why=$(build/cuda/hybridlm_tests --gtest_filter='ActivationCuda.*' 2>&1 | grep -m1 '^skipped:' || true)
    echo "== $skipped GPU tests ${why:-skipped}"
  fi
else
  echo "== no nvcc at /usr/local/cuda/bin: release CPU build + tests"
  cmake --preset cpu >/dev/null
  cmake --build --preset cpu -j "$jobs"
  (cd build/cpu && ctest --output-on-failure -j "$jobs")
fi
echo "== all tests passed"
