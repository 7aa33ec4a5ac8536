// Test hook for the warpgroup MMA building blocks of wgmma.cuh: one warpgroup computes
// D[64][n] = A[64][64] B[64][n] (bf16 values given as floats, fp32 result) with the operands in
// the layout `kind` names. Used by tests/cuda/wgmma_cuda_test.cpp on the GPU and by the host
// emulation (tools/cuda_emu/wgmma_emu_check.cpp), so the descriptor layout the SSD kernels rely on
// is checked against the hardware.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

namespace hlm::cuda {

enum class WgmmaKind : int {
  kSmemKMajor = 0,   // A [m][k], B [n][k] in shared memory (K contiguous)
  kSmemMnMajor = 1,  // A [k][m], B [k][n] in shared memory (M / N contiguous, transposed)
  kRegsBMn = 2,      // A from registers, B [k][n]
  kRegsBK = 3,       // A from registers, B [n][k]
};

// n is 64 or 128. swap_offsets exchanges LBO and SBO in the descriptors (a diagnostic: with the
// layout right, the swapped run must give a wrong product).
std::vector<float> wgmma_product(WgmmaKind kind, int n, const std::vector<float>& a, const std::vector<float>& b,
                                 bool swap_offsets);

// Largest |A B - d| over the [64][n] product, against a float64 product of the same operands
// (infinity if d holds a NaN).
inline double wgmma_product_error(const std::vector<float>& a, const std::vector<float>& b,
                                  const std::vector<float>& d, int n) {
  double err = 0;
  for (int m = 0; m < 64; ++m)
    for (int j = 0; j < n; ++j) {
      double ref = 0;
      for (int k = 0; k < 64; ++k) ref += double(a[m * 64 + k]) * b[k * static_cast<size_t>(n) + j];
      const double e = std::fabs(ref - d[m * static_cast<size_t>(n) + j]);
      if (std::isnan(e)) return INFINITY;
      err = std::max(err, e);
    }
  return err;
}

}  // namespace hlm::cuda
