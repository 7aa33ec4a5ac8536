// Self-test of the emulation: an mma/ldmatrix GEMM (all four operand layouts) against a plain product.
#include <cstdio>
#include <random>
#include <vector>

#include "ops/cuda/warp_mma.cuh"

using namespace hlm::cuda::mma;

// C[M=32][N=32] = A[32][32] * B[32][32] with one block of 4 warps, each a 16x16 output tile.
// trans_a: A stored [k][m]; trans_b: B stored [k][n] (else [n][k]).
__global__ void gemm_kernel(const uint16_t* A, const uint16_t* B, float* C, int trans_a, int trans_b) {
  constexpr int LD = 40;
  auto* sa = reinterpret_cast<bf16_t*>(dynamic_smem());
  auto* sb = sa + 32 * LD;
  int tid = threadIdx.x;
  for (int i = tid; i < 32 * 32; i += blockDim.x) {
    int r = i / 32, c = i % 32;
    reinterpret_cast<uint16_t*>(sa)[r * LD + c] = A[i];
    reinterpret_cast<uint16_t*>(sb)[r * LD + c] = B[i];
  }
  __syncthreads();
  int warp = tid / 32;
  int m0 = (warp % 2) * 16, n0 = (warp / 2) * 16;
  float acc[2][4] = {};
  for (int k0 = 0; k0 < 32; k0 += 16) {
    uint32_t a[4];
    if (trans_a) load_a_t(a, sa, LD, m0, k0); else load_a(a, sa, LD, m0, k0);
    if (trans_b) mma_row<2, true>(acc, a, sb, LD, n0, k0); else mma_row<2, false>(acc, a, sb, LD, n0, k0);
  }
  for (int j = 0; j < 2; ++j)
    for (int i = 0; i < 4; ++i) C[acc_row(m0, i) * 32 + acc_col(n0 + 8 * j, i)] = acc[j][i];
}

// Same with odd tile count (3 n-tiles, uses the x2 path): C[16][24].
__global__ void gemm_odd_kernel(const uint16_t* A, const uint16_t* B, float* C, int trans_b) {
  constexpr int LD = 40;
  auto* sa = reinterpret_cast<bf16_t*>(dynamic_smem());
  auto* sb = sa + 32 * LD;
  for (int i = threadIdx.x; i < 32 * 32; i += blockDim.x) {
    reinterpret_cast<uint16_t*>(sa)[(i / 32) * LD + i % 32] = A[i];
    reinterpret_cast<uint16_t*>(sb)[(i / 32) * LD + i % 32] = B[i];
  }
  __syncthreads();
  float acc[3][4] = {};
  for (int k0 = 0; k0 < 32; k0 += 16) {
    uint32_t a[4];
    load_a(a, sa, LD, 0, k0);
    if (trans_b) mma_row<3, true>(acc, a, sb, LD, 0, k0); else mma_row<3, false>(acc, a, sb, LD, 0, k0);
  }
  for (int j = 0; j < 3; ++j)
    for (int i = 0; i < 4; ++i) C[acc_row(0, i) * 24 + acc_col(8 * j, i)] = acc[j][i];
}

int main() {
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> d(-8, 8);
  std::vector<uint16_t> A(1024), B(1024);
  std::vector<float> Af(1024), Bf(1024);
  for (int i = 0; i < 1024; ++i) {
    Af[i] = d(rng) * 0.25f; Bf[i] = d(rng) * 0.5f;
    A[i] = __float2bfloat16_rn(Af[i]).__x; B[i] = __float2bfloat16_rn(Bf[i]).__x;
  }
  int bad = 0;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      std::vector<float> C(1024, -1);
      ::emu::launch(gemm_kernel, dim3(1), dim3(128), 2 * 32 * 40 * 2, A.data(), B.data(), C.data(), ta, tb);
      for (int m = 0; m < 32; ++m)
        for (int n = 0; n < 32; ++n) {
          float ref = 0;
          for (int k = 0; k < 32; ++k) {
            float a = ta ? Af[k * 32 + m] : Af[m * 32 + k];
            float b = tb ? Bf[k * 32 + n] : Bf[n * 32 + k];
            ref += a * b;
          }
          if (ref != C[m * 32 + n]) { if (bad < 5) std::printf("ta%d tb%d (%d,%d) %g vs %g\n", ta, tb, m, n, C[m*32+n], ref); ++bad; }
        }
    }
  for (int tb = 0; tb < 2; ++tb) {
    std::vector<float> C(16 * 24, -1);
    ::emu::launch(gemm_odd_kernel, dim3(1), dim3(32), 2 * 32 * 40 * 2, A.data(), B.data(), C.data(), tb);
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 24; ++n) {
        float ref = 0;
        for (int k = 0; k < 32; ++k) ref += Af[m * 32 + k] * (tb ? Bf[k * 32 + n] : Bf[n * 32 + k]);
        if (ref != C[m * 24 + n]) { if (bad < 10) std::printf("odd tb%d (%d,%d) %g vs %g\n", tb, m, n, C[m*24+n], ref); ++bad; }
      }
  }
  std::printf("selftest: %s (%d mismatches)\n", bad ? "FAIL" : "ok", bad);
  return bad ? 1 : 0;
}
