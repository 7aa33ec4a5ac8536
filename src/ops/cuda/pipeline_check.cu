// Test hook for warp_mma.cuh's mbarrier / named-barrier building blocks (see pipeline_check.h).
#include "ops/cuda/pipeline_check.h"

#include "core/error.h"
#include "ops/cuda/warp_mma.cuh"

namespace hlm::cuda {
namespace {

constexpr int kStages = 2;
constexpr int kConsumers = 64;  // warps 1 and 2
constexpr int kCols = kPipeTile / kConsumers;
// Shared memory: [kStages][kPipeTile] floats, then per stage a "full" and an "empty" mbarrier.
constexpr size_t kBarOff = size_t{kStages} * kPipeTile * 4;
constexpr size_t kSmem = kBarOff + 2 * kStages * 8;

__global__ void __launch_bounds__(96) pipeline_sum_kernel(const float* in, int tiles, float* out, int skip_full_wait) {
  unsigned char* sm = mma::dynamic_smem();
  auto* stage = reinterpret_cast<float*>(sm);
  auto* full = reinterpret_cast<uint64_t*>(sm + kBarOff);
  uint64_t* empty = full + kStages;
  const int tid = static_cast<int>(threadIdx.x);
  if (tid == 0)
    for (int s = 0; s < kStages; ++s) {
      mma::mbar_init(&full[s], 32);          // the producer warp's 32 cp.async arrivals
      mma::mbar_init(&empty[s], kConsumers);  // every consumer thread is done with the stage
    }
  __syncthreads();
  if (tid < 32) {  // producer
    for (int t = 0; t < tiles; ++t) {
      const int s = t % kStages, use = t / kStages;  // use-th fill of stage s
      if (use > 0) mma::mbar_wait(&empty[s], static_cast<unsigned>((use - 1) & 1));
      float* dst = stage + s * kPipeTile;
      const float* src = in + static_cast<int64_t>(t) * kPipeTile;
      for (int i = tid; i < kPipeTile / 4; i += 32) mma::cp_async16(dst + 4 * i, src + 4 * i, true);
      mma::cp_async_mbar_arrive(&full[s]);
    }
    // Producer tail: leave only once the consumers released every stage's last fill, so no copy
    // of this warp is still in flight when it exits.
    for (int s = 0; s < kStages && s < tiles; ++s)
      mma::mbar_wait(&empty[s], static_cast<unsigned>(((tiles - 1 - s) / kStages) & 1));
    return;
  }
  const int c = tid - 32;  // consumer thread: columns c·kCols ... + kCols - 1
  float acc[kCols] = {};
  for (int t = 0; t < tiles; ++t) {
    const int s = t % kStages, use = t / kStages;
    if (!(skip_full_wait && t == 0)) mma::mbar_wait(&full[s], static_cast<unsigned>(use & 1));
    const float* src = stage + s * kPipeTile + c * kCols;
#pragma unroll
    for (int j = 0; j < kCols; ++j) acc[j] += src[j];
    mma::mbar_arrive(&empty[s]);
  }
#pragma unroll
  for (int j = 0; j < kCols; ++j) out[c * kCols + j] = acc[j];
  mma::bar_sync(1, kConsumers);  // the consumers only (the producer warp has left): every column written
  if (c == 0) {
    float total = 0.f;  // in column order, as the reference adds
    for (int k = 0; k < kPipeTile; ++k) total += out[k];
    out[kPipeTile] = total;
  }
}

}  // namespace

std::vector<float> pipeline_sum(const std::vector<float>& in, int tiles, bool skip_full_wait) {
  HLM_CHECK_ARG(tiles > 0 && in.size() == static_cast<size_t>(tiles) * kPipeTile, "pipeline_sum: {} tiles, {} values",
                tiles, in.size());
  float *din = nullptr, *dout = nullptr;
  HLM_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&din), in.size() * 4));
  HLM_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&dout), (kPipeTile + 1) * 4));
  HLM_CUDA_CHECK(cudaMemcpy(din, in.data(), in.size() * 4, cudaMemcpyHostToDevice));
  HLM_CUDA_CHECK(cudaMemset(dout, 0xff, (kPipeTile + 1) * 4));  // NaN until written
  HLM_LAUNCH(pipeline_sum_kernel, dim3(1), dim3(96), kSmem, din, tiles, dout, skip_full_wait ? 1 : 0);
  HLM_CUDA_CHECK_LAUNCH();
  HLM_CUDA_CHECK(cudaStreamSynchronize(stream()));
  std::vector<float> out(kPipeTile + 1);
  HLM_CUDA_CHECK(cudaMemcpy(out.data(), dout, out.size() * 4, cudaMemcpyDeviceToHost));
  HLM_CUDA_CHECK(cudaFree(din));
  HLM_CUDA_CHECK(cudaFree(dout));
  return out;
}

}  // namespace hlm::cuda
