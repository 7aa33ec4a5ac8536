// Checks the host emulation of wgmma (ops/cuda/wgmma.cuh) through hlm::cuda::wgmma_product: every
// operand layout at N = 64 and 128 against a float64 product; with LBO and SBO exchanged the product
// must be wrong (the layout matters). The GPU test (WgmmaCuda.Layouts) checks the same against the
// hardware.
#include <cstdio>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "ops/cuda/wgmma_check.h"

using namespace hlm;

int main() {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  auto bf = [&] { return bf16_bits_to_f32(f32_to_bf16_bits(nd(rng))); };
  int failures = 0;
  for (int kind = 0; kind < 4; ++kind)
    for (int n : {64, 128}) {
      std::vector<float> a(64 * 64), b(64 * static_cast<size_t>(n));
      for (auto& v : a) v = bf();
      for (auto& v : b) v = bf();
      for (bool swap : {false, true}) {
        const std::vector<float> d = cuda::wgmma_product(static_cast<cuda::WgmmaKind>(kind), n, a, b, swap);
        const double err = cuda::wgmma_product_error(a, b, d, n);
        const bool ok = swap ? err > 1.0 : err < 1e-3;
        failures += ok ? 0 : 1;
        std::printf("%s wgmma kind %d n %d%s: max error %.3g\n", ok ? "ok  " : "FAIL", kind, n,
                    swap ? " (LBO/SBO swapped: must be wrong)" : "", err);
      }
    }
  std::printf("%s\n", failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
