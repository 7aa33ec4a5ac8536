// The warpgroup MMA building blocks (ops/cuda/wgmma.cuh) against a float64 product on the GPU:
// every operand layout the SSD kernels use (K-major and MN-major shared-memory operands, A from
// registers), N = 64 and 128, four k steps. The same hook runs on the host emulation
// (tools/cuda_emu/wgmma_emu_check), so emulation and hardware agree on the descriptor layout.
// PipelineCuda: the producer / consumer synchronisation of warp_mma.cuh (mbarriers, cp.async
// arriving on an mbarrier, named barriers), likewise checked by tools/cuda_emu/pipeline_emu_check.
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "ops/cuda/pipeline_check.h"
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
TEST(PipelineCuda, ProducerConsumer) {
  HLM_REQUIRE_GPU();
  std::mt19937 rng(13);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (int tiles : {1, 2, 5, 64}) {
    SCOPED_TRACE(testing::Message() << tiles << " tiles");
    std::vector<float> in(static_cast<size_t>(tiles) * cuda::kPipeTile);
    for (auto& v : in) v = nd(rng);
    const std::vector<float> ref = cuda::pipeline_sum_reference(in, tiles);
    for (int rep = 0; rep < 3; ++rep) {  // every run bitwise the reference's float sums
      const std::vector<float> out = cuda::pipeline_sum(in, tiles, false);
      ASSERT_EQ(out.size(), ref.size());
      EXPECT_EQ(std::memcmp(out.data(), ref.data(), ref.size() * 4), 0) << "out[0] " << out[0] << " ref " << ref[0]
                                                                        << ", total " << out.back() << " ref " << ref.back();
    }
  }
}
#else
TEST(WgmmaCuda, Layouts) { HLM_REQUIRE_GPU(); }  // CPU-only build: the hooks are not compiled
TEST(PipelineCuda, ProducerConsumer) { HLM_REQUIRE_GPU(); }
#endif

}  // namespace
}  // namespace hlm
