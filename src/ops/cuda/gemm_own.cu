// Our own GEMM kernels (see gemm_own.cuh): the plain tiled fallback GEMM.
#include "ops/cuda/gemm_own.cuh"

#include "ops/cuda/common.cuh"
#include "ops/cuda/warp_mma.cuh"

namespace hlm::cuda {

namespace {

// 0: none; else the bias dtype's code (read per element, so any float dtype works).
enum BiasKind : int { kNoBias = 0, kBiasF32 = 1, kBiasBF16 = 2, kBiasF16 = 3 };

int bias_kind(const void* bias, DType dtype) {
  if (!bias) return kNoBias;
  switch (dtype) {
    case DType::F32: return kBiasF32;
    case DType::BF16: return kBiasBF16;
    case DType::F16: return kBiasF16;
    default: fail(ErrorKind::Unsupported, "gemm: bias dtype {} is not supported", dtype_name(dtype));
  }
}

__device__ __forceinline__ float bias_at(const void* bias, int kind, int64_t n) {
  switch (kind) {
    case kBiasF32: return static_cast<const float*>(bias)[n];
    case kBiasBF16: return to_f32(static_cast<const __nv_bfloat16*>(bias)[n]);
    case kBiasF16: return to_f32(static_cast<const __half*>(bias)[n]);
    default: return 0.0f;
  }
}

// ---- fallback GEMM: 16 x 16 output tile per block, operands staged through shared memory ------

constexpr int kTile = 16;

template <typename TA, typename TC>
__global__ void __launch_bounds__(kTile* kTile)
    gemm_fallback_kernel(const TA* a, int64_t lda, bool ta, const TA* b, int64_t ldb, bool tb, TC* c,
                         int64_t ldc, int64_t M, int64_t N, int64_t K, float alpha, float beta,
                         const void* bias, int bkind) {
  __shared__ float as[kTile][kTile + 1];
  __shared__ float bs[kTile][kTile + 1];
  const int tx = static_cast<int>(threadIdx.x) % kTile, ty = static_cast<int>(threadIdx.x) / kTile;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kTile + ty;  // x: up to 2^31 - 1 tiles
  const int64_t col = static_cast<int64_t>(blockIdx.y) * kTile + tx;
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < K; k0 += kTile) {
    const int64_t ak = k0 + tx, bk = k0 + ty;
    // as[ty][tx] = op(a)[row, ak]; bs[ty][tx] = op(b)[bk, col]
    as[ty][tx] = (row < M && ak < K) ? to_f32(ta ? a[ak * lda + row] : a[row * lda + ak]) : 0.0f;
    bs[ty][tx] = (bk < K && col < N) ? to_f32(tb ? b[col * ldb + bk] : b[bk * ldb + col]) : 0.0f;
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTile; ++kk) acc += as[ty][kk] * bs[kk][tx];
    __syncthreads();
  }
  if (row < M && col < N) {
    TC* p = c + row * ldc + col;
    float v = alpha * acc;
    if (beta != 0.0f) v += beta * to_f32(*p);
    v += bias_at(bias, bkind, col);
    *p = from_f32<TC>(v);
  }
}

}  // namespace

void gemm_fallback(const GemmMat& a, bool ta, const GemmMat& b, bool tb, const GemmMat& c,
                   float alpha, float beta, const void* bias, DType bias_dtype) {
  const int64_t M = c.rows, N = c.cols, K = ta ? a.rows : a.cols;
  if (M == 0 || N == 0) return;
  const int bkind = bias_kind(bias, bias_dtype);
  HLM_REQUIRE(N <= int64_t{65535} * kTile, ErrorKind::Unsupported, "gemm_fallback: N={} is too large", N);
  const dim3 grid(grid_for(M, kTile), grid_for(N, kTile));
  dispatch_float(a.dtype, "gemm_fallback", [&]<typename TA>() {
    dispatch_float(c.dtype, "gemm_fallback", [&]<typename TC>() {
      auto* kernel = gemm_fallback_kernel<TA, TC>;
      HLM_LAUNCH(kernel, grid, dim3(kTile * kTile), 0,
                 static_cast<const TA*>(a.data), a.ld, ta, static_cast<const TA*>(b.data), b.ld, tb,
                 static_cast<TC*>(const_cast<void*>(c.data)), c.ld, M, N, K, alpha, beta, bias, bkind);
      HLM_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace hlm::cuda
