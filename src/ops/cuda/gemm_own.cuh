// Our own GEMM kernels behind cuda::matmul / linear_forward: the plain tiled GEMM that serves any
// shape, layout and alignment when cuBLASLt offers no algorithm. No library types here, so the host emulation (tools/cuda_emu) can
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

// c = alpha · op(a) · op(b) + beta · c (+ bias[N] per column), any dtypes of F32 / BF16 / F16,
// fp32 accumulation in a fixed order. Slow (no tensor cores): the last resort.
void gemm_fallback(const GemmMat& a, bool ta, const GemmMat& b, bool tb, const GemmMat& c,
                   float alpha, float beta, const void* bias, DType bias_dtype);

}  // namespace hlm::cuda
