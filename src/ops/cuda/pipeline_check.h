// Test hook for the producer / consumer building blocks of warp_mma.cuh (mbarriers, cp.async
// arriving on an mbarrier, named barriers): one block of three warps streams `tiles` tiles of
// kPipeTile floats through a two-stage ring — warp 0 fills a stage with cp.async and arrives on its
// "full" barrier, warps 1–2 wait for it, add the tile into their 16 columns each and arrive on its
// "empty" barrier — then the consumers reduce through shared memory behind a named barrier.
// out[c] = Σ_t in[t][c] (c < kPipeTile), out[kPipeTile] = Σ_c out[c], summed in a fixed order.
// Used by tests/cuda/wgmma_cuda_test.cpp on the GPU and by tools/cuda_emu/pipeline_emu_check.cpp,
// so the synchronisation a warp-specialised kernel relies on is checked on both.
#pragma once

#include <cstddef>
#include <vector>

namespace hlm::cuda {

constexpr int kPipeTile = 1024;  // floats per tile: 64 consumer threads × 16

// skip_full_wait = true: the consumers read the first tile's stage without waiting for it (a
// diagnostic for the emulator, where the copies land only when the stage's phase completes: the
// sums must then be wrong; only the first, so the phases cannot alias and nothing hangs).
std::vector<float> pipeline_sum(const std::vector<float>& in, int tiles, bool skip_full_wait);

// The sums pipeline_sum must give, in its order (float additions, so bitwise equal).
inline std::vector<float> pipeline_sum_reference(const std::vector<float>& in, int tiles) {
  std::vector<float> out(kPipeTile + 1, 0.f);
  for (int t = 0; t < tiles; ++t)
    for (int c = 0; c < kPipeTile; ++c) out[static_cast<size_t>(c)] += in[static_cast<size_t>(t) * kPipeTile + c];
  float total = 0.f;
  for (int c = 0; c < kPipeTile; ++c) total += out[static_cast<size_t>(c)];
  out[kPipeTile] = total;
  return out;
}

}  // namespace hlm::cuda
