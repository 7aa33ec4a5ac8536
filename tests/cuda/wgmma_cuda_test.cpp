// The warpgroup MMA building blocks (ops/cuda/wgmma.cuh) against a float64 product on the GPU:
// every operand layout the SSD kernels use (K-major and MN-major shared-memory operands, A from
// registers), N = 64 and 128, four k steps. The same hook runs on the host emulation
// (tools/cuda_emu/wgmma_emu_check), so emulation and hardware agree on the descriptor layout.
#include <random>
#include <vector>

#include "core/dtype.h"
#include "ops/cuda/wgmma_check.h"
#include "test_util.h"

namespace hlm {
namespace {

#ifdef HLM_CUDA
TEST(WgmmaCuda, Layouts) {
  HLM_REQUIRE_GPU();
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (int kind = 0; kind < 4; ++kind)
    for (int n : {64, 128}) {
      SCOPED_TRACE(testing::Message() << "kind " << kind << " n " << n);
      std::vector<float> a(64 * 64), b(64 * static_cast<size_t>(n));
      for (auto& v : a) v = bf16_bits_to_f32(f32_to_bf16_bits(nd(rng)));
      for (auto& v : b) v = bf16_bits_to_f32(f32_to_bf16_bits(nd(rng)));
      const auto k = static_cast<cuda::WgmmaKind>(kind);
      const double err = cuda::wgmma_product_error(a, b, cuda::wgmma_product(k, n, a, b, false), n);
      const double swapped = cuda::wgmma_product_error(a, b, cuda::wgmma_product(k, n, a, b, true), n);
      std::printf("wgmma kind %d n %d: max error %.3g (LBO/SBO swapped: %.3g)\n", kind, n, err, swapped);
      EXPECT_LT(err, 1e-3);
      EXPECT_GT(swapped, 1.0);
    }
}
#else
TEST(WgmmaCuda, Layouts) { HLM_REQUIRE_GPU(); }  // CPU-only build: the hook is not compiled
#endif

}  // namespace
}  // namespace hlm
