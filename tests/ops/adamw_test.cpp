// AdamW: three steps over two segments with different weight decay and a gradient scale match a
// hand-computed torch.optim.AdamW reference (float64 exactly, float32 closely), and the bf16 copy
// receives the rounded parameters.
#include <gtest/gtest.h>

#include "ops/adamw.h"
#include "test_util.h"

namespace hlm {
namespace {

using test::HostTensor;

TEST(AdamW, MatchesHandComputedReference) {
  for (DType dtype : {DType::F64, DType::F32}) {
    const int64_t n = 10;
    HostTensor p = test::randn(dtype, {n}, 1), m(dtype, {n}), v(dtype, {n}), lowp(DType::BF16, {n});
    std::vector<double> rp(static_cast<size_t>(n)), rm(rp.size(), 0.0), rv(rp.size(), 0.0);
    for (int64_t i = 0; i < n; ++i) rp[static_cast<size_t>(i)] = p.get(i);
    const AdamWSegment segs[] = {{0, 6, 0.1f}, {6, 4, 0.0f}};
    AdamWHyper hy;
    hy.lr = 0.01f;
    hy.beta1 = 0.9f;
    hy.beta2 = 0.95f;
    hy.eps = 1e-8f;
    const float grad_scale = 0.5f;
    for (int64_t step = 1; step <= 3; ++step) {
      HostTensor g = test::randn(dtype, {n}, 10 + static_cast<uint64_t>(step));
      hy.step = step;
      adamw_step(p.t, g.t, m.t, v.t, lowp.t, segs, hy, grad_scale);
      const double lr = hy.lr, b1 = hy.beta1, b2 = hy.beta2, eps = hy.eps;
      for (int64_t i = 0; i < n; ++i) {
        const size_t k = static_cast<size_t>(i);
        const double wd = i < 6 ? static_cast<double>(0.1f) : 0.0;
        const double gi = g.get(i) * grad_scale;
        rp[k] *= 1 - lr * wd;
        rm[k] = b1 * rm[k] + (1 - b1) * gi;
        rv[k] = b2 * rv[k] + (1 - b2) * gi * gi;
        const double mhat = rm[k] / (1 - std::pow(b1, static_cast<double>(step)));
        const double vhat = rv[k] / (1 - std::pow(b2, static_cast<double>(step)));
        rp[k] -= lr * mhat / (std::sqrt(vhat) + eps);
      }
    }
    const double tol = dtype == DType::F64 ? 1e-14 : 2e-6;
    for (int64_t i = 0; i < n; ++i) {
      const size_t k = static_cast<size_t>(i);
      EXPECT_NEAR(p.get(i), rp[k], tol * (1 + std::fabs(rp[k]))) << i;
      EXPECT_NEAR(m.get(i), rm[k], tol);
      EXPECT_NEAR(v.get(i), rv[k], tol);
      EXPECT_EQ(lowp.t.ptr<uint16_t>()[i], f32_to_bf16_bits(static_cast<float>(p.get(i))));
    }
  }
}

TEST(AdamW, RejectsMismatchedBuffers) {
  HostTensor p(DType::F32, {4}), g(DType::F32, {5}), m(DType::F32, {4}), v(DType::F32, {4});
  const AdamWSegment segs[] = {{0, 4, 0.0f}};
  EXPECT_THROW(adamw_step(p.t, g.t, m.t, v.t, Tensor(), segs, AdamWHyper{}, 1.0f), Error);
  HostTensor g4(DType::F32, {4});
  const AdamWSegment bad[] = {{2, 4, 0.0f}};
  EXPECT_THROW(adamw_step(p.t, g4.t, m.t, v.t, Tensor(), bad, AdamWHyper{}, 1.0f), Error);
}

}  // namespace
}  // namespace hlm
