// Cross-entropy: losses and lse match the formula, ignored targets give zero loss and zero
// gradient rows, the backward passes float64 finite differences and may run in place, large
// logits stay finite, and an out-of-range target is an InvalidArgument error.
#include <gtest/gtest.h>

#include "ops/loss.h"
#include "test_util.h"

namespace hlm {
namespace {

using test::HostTensor;

HostTensor targets_of(std::vector<int32_t> v) {
  HostTensor t(DType::I32, {static_cast<int64_t>(v.size())});
  for (size_t i = 0; i < v.size(); ++i) t.set(static_cast<int64_t>(i), v[i]);
  return t;
}

TEST(Loss, CrossEntropyMatchesFormulaWithIgnoreIndex) {
  for (DType dtype : {DType::F32, DType::F64}) {
    const int64_t M = 4, V = 4099;  // more than one 2048-wide block of the forward
    HostTensor logits = test::randn(dtype, {M, V}, 1, 2.0);
    HostTensor tg = targets_of({5, kIgnoreIndex, 4098, 2050});
    HostTensor losses(dtype, {M}), lse(dtype, {M});
    cross_entropy_forward(logits.t, tg.t, kIgnoreIndex, losses.t, lse.t);
    for (int64_t m = 0; m < M; ++m) {
      double s = 0;
      for (int64_t v = 0; v < V; ++v) s += std::exp(logits.get(m * V + v));
      const double l = std::log(s);
      const double tol = dtype == DType::F64 ? 1e-13 : 2e-6;
      EXPECT_NEAR(lse.get(m), l, tol * (1 + std::fabs(l)));
      const int32_t t = static_cast<int32_t>(tg.get(m));
      EXPECT_NEAR(losses.get(m), t == kIgnoreIndex ? 0.0 : l - logits.get(m * V + t), tol * 10);
    }
    HostTensor d(dtype, {M, V});
    cross_entropy_backward(logits.t, tg.t, lse.t, kIgnoreIndex, 0.5f, d.t);
    for (int64_t v = 0; v < V; ++v) EXPECT_EQ(d.get(1 * V + v), 0.0);
    // in place gives the same
    cross_entropy_backward(logits.t, tg.t, lse.t, kIgnoreIndex, 0.5f, logits.t);
    EXPECT_EQ(test::max_rel_error(logits, d), 0.0);
  }
}

TEST(LossGrad, CrossEntropyFiniteDifferences) {
  const int64_t M = 5, V = 11;
  const float scale = 0.2f;
  HostTensor logits = test::randn(DType::F64, {M, V}, 2, 1.5);
  HostTensor tg = targets_of({3, 10, kIgnoreIndex, 0, 3});
  HostTensor losses(DType::F64, {M}), lse(DType::F64, {M}), d(DType::F64, {M, V});
  cross_entropy_forward(logits.t, tg.t, kIgnoreIndex, losses.t, lse.t);
  cross_entropy_backward(logits.t, tg.t, lse.t, kIgnoreIndex, scale, d.t);
  auto loss = [&] {
    cross_entropy_forward(logits.t, tg.t, kIgnoreIndex, losses.t, lse.t);
    double s = 0;
    for (int64_t m = 0; m < M; ++m) s += scale * losses.get(m);
    return s;
  };
  EXPECT_LT(test::fd_direction_error(logits, d, loss, 5), 1e-6);
}

TEST(Loss, LargeLogitsStayFiniteAndBadTargetsAreRejected) {
  HostTensor logits(DType::F32, {2, 4});
  for (int64_t i = 0; i < 8; ++i) logits.set(i, i % 2 ? 1000.0 : -1000.0);
  HostTensor tg = targets_of({1, 2}), losses(DType::F32, {2}), lse(DType::F32, {2});
  cross_entropy_forward(logits.t, tg.t, kIgnoreIndex, losses.t, lse.t);
  EXPECT_NEAR(lse.get(0), 1000.0 + std::log(2.0), 1e-3);
  EXPECT_NEAR(losses.get(0), std::log(2.0), 1e-3);
  EXPECT_NEAR(losses.get(1), 2000.0 + std::log(2.0), 1e-2);
  HostTensor bad = targets_of({1, 4});
  try {
    cross_entropy_forward(logits.t, bad.t, kIgnoreIndex, losses.t, lse.t);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::InvalidArgument);
  }
}

}  // namespace
}  // namespace hlm
