// Test hook for wgmma.cuh (see wgmma_check.h): one block of one warpgroup.
#include "ops/cuda/wgmma_check.h"

#include "core/error.h"
#include "ops/cuda/wgmma.cuh"

namespace hlm::cuda {
namespace {

constexpr int kK = 64;
// Each operand gets 64 KB of shared memory: room for the addresses the swapped descriptors reach.
constexpr int kOperandBytes = 65536;

template <int N>
__global__ void __launch_bounds__(128) wgmma_product_kernel(int kind, const float* a, const float* b, float* d,
                                                            int swap) {
  using TileAK = wg::CoreTile<64, kK>;  // A [m][k]
  using TileAM = wg::CoreTile<kK, 64>;  // A [k][m]
  using TileBK = wg::CoreTile<N, kK>;   // B [n][k]
  using TileBM = wg::CoreTile<kK, N>;   // B [k][n]
  unsigned char* sm = mma::dynamic_smem();
  unsigned char* sa = sm;
  unsigned char* sb = sm + kOperandBytes;
  const bool a_mn = kind == 1, b_mn = kind == 1 || kind == 2, a_regs = kind >= 2;
  for (int i = static_cast<int>(threadIdx.x); i < 64 * kK; i += 128) {
    const int m = i / kK, k = i % kK;
    const int off = a_mn ? TileAM::offset(k, m) : TileAK::offset(m, k);
    *reinterpret_cast<mma::bf16_t*>(sa + off) = __float2bfloat16_rn(a[i]);
  }
  for (int i = static_cast<int>(threadIdx.x); i < kK * N; i += 128) {
    const int k = i / N, n = i % N;
    const int off = b_mn ? TileBM::offset(k, n) : TileBK::offset(n, k);
    *reinterpret_cast<mma::bf16_t*>(sb + off) = __float2bfloat16_rn(b[i]);
  }
  wg::fence_async_smem();
  __syncthreads();
  const uint32_t alb = a_mn ? TileAM::kMnMajorLbo : TileAK::kKMajorLbo;
  const uint32_t asb = a_mn ? TileAM::kMnMajorSbo : TileAK::kKMajorSbo;
  const uint32_t ast = a_mn ? TileAM::kMnMajorStep : TileAK::kKMajorStep;
  const uint32_t blb = b_mn ? TileBM::kMnMajorLbo : TileBK::kKMajorLbo;
  const uint32_t bsb = b_mn ? TileBM::kMnMajorSbo : TileBK::kKMajorSbo;
  const uint32_t bst = b_mn ? TileBM::kMnMajorStep : TileBK::kKMajorStep;
  const uint64_t da = wg::make_desc(wg::smem_addr(sa), swap ? asb : alb, swap ? alb : asb);
  const uint64_t db = wg::make_desc(wg::smem_addr(sb), swap ? bsb : blb, swap ? blb : bsb);
  const int lane = mma::lane_id(), w = static_cast<int>(threadIdx.x) / 32, g = lane / 4, q = lane % 4;
  float acc[N / 2];
#pragma unroll
  for (int i = 0; i < N / 2; ++i) acc[i] = 0.f;
  wg::fence();
  for (int ks = 0; ks < kK / 16; ++ks) {
    if (a_regs) {  // this warp's rows 16 w .., columns 16 ks .. of A as an mma.sync A fragment
      uint32_t fr[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int m = 16 * w + g + 8 * (r & 1), k = 16 * ks + 2 * q + (r >= 2 ? 8 : 0);
        fr[r] = mma::pack_bf16x2(a[m * kK + k], a[m * kK + k + 1]);
      }
      const uint64_t dbk = wg::desc_advance(db, ks * bst);
      if constexpr (N == 64) {
        if (b_mn) wg::wgmma_rs_n64<1>(acc, fr, dbk, true);
        else wg::wgmma_rs_n64<0>(acc, fr, dbk, true);
      } else {
        if (b_mn) wg::wgmma_rs_n128<1>(acc, fr, dbk, true);
        else wg::wgmma_rs_n128<0>(acc, fr, dbk, true);
      }
    } else {
      const uint64_t dak = wg::desc_advance(da, ks * ast), dbk = wg::desc_advance(db, ks * bst);
      if constexpr (N == 64) {
        if (a_mn) wg::wgmma_ss_n64<1, 1>(acc, dak, dbk, true);
        else wg::wgmma_ss_n64<0, 0>(acc, dak, dbk, true);
      } else {
        if (a_mn) wg::wgmma_ss_n128<1, 1>(acc, dak, dbk, true);
        else wg::wgmma_ss_n128<0, 0>(acc, dak, dbk, true);
      }
    }
  }
  wg::commit();
  wg::wait<0>();
  wg::pin(acc);
#pragma unroll
  for (int j = 0; j < N / 8; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) d[(16 * w + g + 8 * (i / 2)) * N + 8 * j + 2 * q + (i % 2)] = acc[4 * j + i];
}

}  // namespace

std::vector<float> wgmma_product(WgmmaKind kind, int n, const std::vector<float>& a, const std::vector<float>& b,
                                 bool swap_offsets) {
  HLM_CHECK_ARG(n == 64 || n == 128, "wgmma_product: n is {}, expected 64 or 128", n);
  HLM_CHECK_ARG(a.size() == size_t{64} * kK && b.size() == size_t{kK} * n, "wgmma_product: operand sizes");
  float *da = nullptr, *db = nullptr, *dd = nullptr;
  HLM_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&da), a.size() * 4));
  HLM_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&db), b.size() * 4));
  HLM_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&dd), size_t{64} * n * 4));
  HLM_CUDA_CHECK(cudaMemcpy(da, a.data(), a.size() * 4, cudaMemcpyHostToDevice));
  HLM_CUDA_CHECK(cudaMemcpy(db, b.data(), b.size() * 4, cudaMemcpyHostToDevice));
  HLM_CUDA_CHECK(cudaMemset(dd, 0xff, size_t{64} * n * 4));  // NaN until written
  const int smem = 2 * kOperandBytes;
  const int k = static_cast<int>(kind), s = swap_offsets ? 1 : 0;
  auto launch = [&](auto kernel) {
    HLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    HLM_LAUNCH(kernel, dim3(1), dim3(128), static_cast<size_t>(smem), k, da, db, dd, s);
  };
  if (n == 64)
    launch(wgmma_product_kernel<64>);
  else
    launch(wgmma_product_kernel<128>);
  HLM_CUDA_CHECK_LAUNCH();
  HLM_CUDA_CHECK(cudaStreamSynchronize(stream()));
  std::vector<float> d(size_t{64} * n);
  HLM_CUDA_CHECK(cudaMemcpy(d.data(), dd, d.size() * 4, cudaMemcpyDeviceToHost));
  HLM_CUDA_CHECK(cudaFree(da));
  HLM_CUDA_CHECK(cudaFree(db));
  HLM_CUDA_CHECK(cudaFree(dd));
  return d;
}

}  // namespace hlm::cuda
