// CUDA fused AdamW matches the CPU op over segments with their own weight decay, with gradient
// scaling, over several steps, and writes the BF16 working copy.
#include <gtest/gtest.h>

#include <vector>

#include "cuda/cuda_test_util.h"
#include "ops/adamw.h"

namespace hlm::test {
namespace {

TEST(AdamWCuda, MatchesCpu) {
  HLM_REQUIRE_GPU();
  const int64_t n = 100003;
  // Odd sizes, a gap not covered by any segment (left untouched), an empty segment.
  std::vector<AdamWSegment> segs = {{0, 4097, 0.1f}, {4097, 0, 0.0f}, {4097, 33, 0.0f},
                                    {4200, 70000, 0.05f}, {74200, n - 74200, 0.0f}};
  HostTensor p = random_normal({n}, 1), m = random_normal({n}, 2, 0.01), v = random_uniform({n}, 3, 0.0, 1e-3);
  DeviceTensor gp = upload(p, DType::F32), gm = upload(m, DType::F32), gv = upload(v, DType::F32);
  DeviceTensor glow(DType::BF16, {n});
  poison(glow.t);
  HostTensor low(DType::BF16, {n});
  AdamWHyper hp;
  hp.lr = 3e-4f;
  hp.beta1 = 0.9f;
  hp.beta2 = 0.95f;
  hp.eps = 1e-8f;
  for (int64_t step = 1; step <= 3; ++step) {
    HostTensor g = random_normal({n}, 10 + static_cast<uint64_t>(step), 0.1);
    hp.step = step;
    hp.lr = 3e-4f * static_cast<float>(step);  // a schedule: lr changes every step
    const float gscale = step == 2 ? 0.5f : 1.0f;
    adamw_step(p.t, g.t, m.t, v.t, low.t, segs, hp, gscale);
    DeviceTensor gg = upload(g, DType::F32);
    adamw_step(gp.t, gg.t, gm.t, gv.t, glow.t, segs, hp, gscale);
    EXPECT_LT(rel_error(download(gp.t), p), 1e-6) << "params, step " << step;
    EXPECT_LT(rel_error(download(gm.t), m), 1e-6) << "m, step " << step;
    EXPECT_LT(rel_error(download(gv.t), v), 1e-6) << "v, step " << step;
  }
  HostTensor gl = download(glow.t);
  // The gap [4130, 4200) is in no segment: its BF16 copy stays poisoned (never written).
  int64_t mismatches = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool in_gap = i >= 4130 && i < 4200;
    if (in_gap) continue;
    if (gl.get(i) != low.get(i)) ++mismatches;
  }
  EXPECT_LE(mismatches, n / 1000) << "BF16 copies differ beyond rounding ties";
  for (int64_t i = 4130; i < 4200; ++i) gl.set(i, low.get(i));
  EXPECT_LT(rel_error(gl, low), 1e-2);
}

}  // namespace
}  // namespace hlm::test
