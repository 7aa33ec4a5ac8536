// Test hook for the warpgroup MMA building blocks of wgmma.cuh: one warpgroup computes
// D[64][n] = A[64][64] B[64][n] (bf16 values given as floats, fp32 result) with the operands in
// the layout `kind` names. Used by tests/cuda/wgmma_cuda_test.cpp on the GPU and by the host
// emulation (tools/cuda_emu/wgmma_emu_check.cpp), so the descriptor layout the SSD kernels rely on
// is checked against the hardware.
#pragma once

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

}  // namespace hlm::cuda
