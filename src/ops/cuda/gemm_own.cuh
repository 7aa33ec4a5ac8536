// Our own GEMM kernels behind cuda::matmul / linear_forward: the decode GEMV (M ≤ 8 rows, where
// cuBLASLt is poor) and the plain tiled GEMM that serves any shape, layout and alignment when
// cuBLASLt offers no algorithm. No library types here, so the host emulation (tools/cuda_emu) can
// check the kernels.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace hlm::cuda {

// A row-major device matrix: rows × cols, row r at data + r·ld elements.
struct GemmMat {
  const void* data;
  int64_t rows, cols, ld;
  DType dtype;
};

// Most rows of x the GEMV takes (the n-width of one mma tile).
constexpr int64_t kGemvMaxRows = 8;

// Whether gemv can compute y = x · wᵀ: 1 ≤ M ≤ 8 rows, BF16 x and w, K a multiple of 8, x and w
// 16-byte aligned with leading dimensions that keep every row so (x's ld is free when M = 1),
// y F32 / BF16 / F16 of any layout.
bool gemv_applies(const GemmMat& x, const GemmMat& w, const GemmMat& y);

// y[M,N] = alpha · x[M,K] · w[N,K]ᵀ + beta · y (+ bias[N]), each W element read once. M = 1: W
// streamed through shared memory by cp.async (PDL-launched); M > 1 (or HLM_GEMV=mma): 16-byte
// loads straight into the fragments of a tensor-core m16n8k16 product (W rows as the 16, x rows as
// the 8). fp32 accumulation in a fixed order (split-K partials summed in split order by the last
// block of each tile): deterministic. Requires gemv_applies. w_is_weight: w is a
// parameter no kernel of the stream writes while this runs (a projection's weight), so the kernel
// may start reading it before the previous kernel finishes (PDL, see common.cuh). act ≥ 0: that
// Activation applied to each output after rounding it to y's dtype (gemv_epilogue_act_applies).
void gemv(const GemmMat& x, const GemmMat& w, const GemmMat& y, float alpha, float beta,
          const void* bias, DType bias_dtype, bool w_is_weight = false, int act = -1);
// Whether gemv takes x (M = 1, not HLM_GEMV=mma) through the streaming kernel.
bool gemv_streams(const GemmMat& x);
// Whether gemv takes an activation epilogue for these operands (gemv_applies and gemv_streams).
bool gemv_epilogue_act_applies(const GemmMat& x, const GemmMat& w, const GemmMat& y);

// HLM_GEMV=mma in the environment: the tensor-core kernel at M = 1 too (benchmark comparison).
bool gemv_mma_forced();

// c = alpha · op(a) · op(b) + beta · c (+ bias[N] per column), any dtypes of F32 / BF16 / F16,
// fp32 accumulation in a fixed order. Slow (no tensor cores): the last resort.
void gemm_fallback(const GemmMat& a, bool ta, const GemmMat& b, bool tb, const GemmMat& c,
                   float alpha, float beta, const void* bias, DType bias_dtype);

}  // namespace hlm::cuda
