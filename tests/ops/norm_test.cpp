// RMSNorm and the group-wise gated RMSNorm: forward matches the formula (rstd saved), backward
// passes float64 finite differences for x, z and w on row views, dx / dz overwrite, dw accumulates;
// the fused residual + RMSNorm equals its two ops.
#include <gtest/gtest.h>

#include "ops/norm.h"
#include "test_util.h"

namespace hlm {
namespace {

using test::HostTensor;

TEST(Norm, RmsnormMatchesFormula) {
  const int64_t M = 5, D = 12;
  const float eps = 1e-5f;
  HostTensor x = test::randn(DType::F32, {M, D}, 1), w = test::randn(DType::F32, {D}, 2);
  HostTensor y(DType::F32, {M, D}), rstd(DType::F32, {M});
  rmsnorm_forward(x.t, w.t, eps, y.t, rstd.t);
  for (int64_t m = 0; m < M; ++m) {
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += x.get(m * D + i) * x.get(m * D + i);
    const double r = 1.0 / std::sqrt(ss / D + eps);
    EXPECT_NEAR(rstd.get(m), r, 1e-5 * r);
    for (int64_t i = 0; i < D; ++i) EXPECT_NEAR(y.get(m * D + i), x.get(m * D + i) * r * w.get(i), 1e-5);
  }
}

TEST(Norm, ResidualRmsnormEqualsAddThenNorm) {
  const int64_t M = 3, D = 10;
  const float eps = 1e-5f;
  HostTensor xw = test::randn(DType::F32, {M, D + 4}, 11), d = test::randn(DType::F32, {M, D}, 12);
  HostTensor w = test::randn(DType::F32, {D}, 13);
  Tensor xv = xw.t.slice(1, 1, D);  // the residual stream as a row view
  HostTensor ref(DType::F32, {M, D});
  for (int64_t m = 0; m < M; ++m)
    for (int64_t i = 0; i < D; ++i) ref.set(m * D + i, xw.get(m * (D + 4) + 1 + i) + d.get(m * D + i));
  HostTensor y(DType::F32, {M, D}), rstd(DType::F32, {M}), ry(DType::F32, {M, D}), rr(DType::F32, {M});
  residual_rmsnorm_forward(xv, d.t, w.t, eps, y.t, rstd.t);
  rmsnorm_forward(ref.t, w.t, eps, ry.t, rr.t);
  for (int64_t m = 0; m < M; ++m) {
    EXPECT_EQ(rstd.get(m), rr.get(m));
    EXPECT_EQ(xw.get(m * (D + 4)), test::randn(DType::F32, {M, D + 4}, 11).get(m * (D + 4)));  // outside the view
    for (int64_t i = 0; i < D; ++i) {
      EXPECT_EQ(xw.get(m * (D + 4) + 1 + i), ref.get(m * D + i));
      EXPECT_EQ(y.get(m * D + i), ry.get(m * D + i));
    }
  }
}

TEST(NormGrad, RmsnormFiniteDifferences) {
  const DType f = DType::F64;
  const int64_t B = 2, T = 3, D = 8;
  HostTensor xw = test::randn(f, {B, T, D + 3}, 3);
  Tensor xv = xw.t.slice(2, 2, D);  // a column slice of a wider activation
  HostTensor w = test::randn(f, {D}, 4), gy = test::randn(f, {B, T, D}, 5);
  HostTensor y(f, {B, T, D}), rstd(f, {B * T}), dx(f, {B, T, D}), dw(f, {D});
  for (int64_t i = 0; i < D; ++i) dw.set(i, 0.25);
  rmsnorm_forward(xv, w.t, 1e-5f, y.t, rstd.t);
  rmsnorm_backward(gy.t, xv, w.t, rstd.t, dx.t, dw.t);
  for (int64_t i = 0; i < D; ++i) dw.set(i, dw.get(i) - 0.25);
  HostTensor xc(f, {B, T, D});
  for (int64_t r = 0; r < B * T; ++r)
    for (int64_t i = 0; i < D; ++i) xc.set(r * D + i, xw.get(r * (D + 3) + 2 + i));
  auto loss = [&] {
    rmsnorm_forward(xc.t, w.t, 1e-5f, y.t, rstd.t);
    return test::dot(y, gy);
  };
  EXPECT_LT(test::fd_direction_error(xc, dx, loss, 1), 1e-6);
  EXPECT_LT(test::fd_direction_error(w, dw, loss, 2), 1e-6);
}

TEST(Norm, GatedRmsnormMatchesFormula) {
  const int64_t M = 3, D = 12, G = 4;
  const float eps = 1e-6f;
  HostTensor x = test::randn(DType::F32, {M, D}, 1), z = test::randn(DType::F32, {M, D}, 2);
  HostTensor w = test::randn(DType::F32, {D}, 3), y(DType::F32, {M, D}), rstd(DType::F32, {M, D / G});
  gated_rmsnorm_forward(x.t, z.t, w.t, G, eps, y.t, rstd.t);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < D / G; ++g) {
      double ss = 0, gate[G];
      for (int64_t k = 0; k < G; ++k) {
        const int64_t i = m * D + g * G + k;
        const double zz = z.get(i);
        gate[k] = x.get(i) * zz / (1 + std::exp(-zz));
        ss += gate[k] * gate[k];
      }
      const double r = 1 / std::sqrt(ss / G + eps);
      EXPECT_NEAR(rstd.get(m * (D / G) + g), r, 1e-5 * r);
      for (int64_t k = 0; k < G; ++k)
        EXPECT_NEAR(y.get(m * D + g * G + k), gate[k] * r * w.get(g * G + k), 2e-5);
    }
}

TEST(NormGrad, GatedRmsnormFiniteDifferences) {
  const DType f = DType::F64;
  const int64_t M = 4, D = 12, G = 6;
  HostTensor x = test::randn(f, {M, D}, 6), z = test::randn(f, {M, D}, 7), w = test::randn(f, {D}, 8);
  HostTensor gy = test::randn(f, {M, D}, 9);
  HostTensor y(f, {M, D}), rstd(f, {M, D / G}), dx(f, {M, D}), dz(f, {M, D}), dw(f, {D});
  gated_rmsnorm_forward(x.t, z.t, w.t, G, 1e-5f, y.t, rstd.t);
  gated_rmsnorm_backward(gy.t, x.t, z.t, w.t, rstd.t, G, dx.t, dz.t, dw.t);
  auto loss = [&] {
    gated_rmsnorm_forward(x.t, z.t, w.t, G, 1e-5f, y.t, rstd.t);
    return test::dot(y, gy);
  };
  EXPECT_LT(test::fd_direction_error(x, dx, loss, 1), 1e-6);
  EXPECT_LT(test::fd_direction_error(z, dz, loss, 2), 1e-6);
  EXPECT_LT(test::fd_direction_error(w, dw, loss, 3), 1e-6);
  HostTensor bad_rstd(f, {M, 3});
  EXPECT_THROW(gated_rmsnorm_forward(x.t, z.t, w.t, G, 1e-5f, y.t, bad_rstd.t), Error);
  EXPECT_THROW(gated_rmsnorm_forward(x.t, z.t, w.t, 5, 1e-5f, y.t, rstd.t), Error);
}

}  // namespace
}  // namespace hlm
