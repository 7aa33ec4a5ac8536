// GEMM and the linear layer: matmul equals a naive product for every transpose and for row views;
// linear forward matches its formula; linear backward passes float64 finite differences, dx
// overwrites or accumulates as asked and dw / dbias accumulate.
#include <gtest/gtest.h>

#include "ops/activation.h"
#include "ops/gemm.h"
#include "test_util.h"

namespace hlm {
namespace {

using test::HostTensor;

// A [rows, cols] view into the first `cols` columns of a wider [rows, cols + pad] host tensor.
Tensor narrow(const HostTensor& wide, int64_t cols) { return wide.t.slice(1, 0, cols); }

TEST(Gemm, MatmulMatchesNaiveForAllTransposesAndRowViews) {
  for (DType dtype : {DType::F32, DType::F64}) {
    const int64_t M = 5, N = 7, K = 6;
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        HostTensor a = test::randn(dtype, {ta ? K : M, (ta ? M : K) + 3}, 1 + ta);
        HostTensor b = test::randn(dtype, {tb ? N : K, (tb ? K : N) + 2}, 3 + tb);
        HostTensor c = test::randn(dtype, {M, N + 1}, 5);
        HostTensor c0 = test::copy_of(c);
        const float alpha = 0.7f, beta = -0.3f;
        matmul(narrow(a, ta ? M : K), ta, narrow(b, tb ? K : N), tb, narrow(c, N), alpha, beta);
        const int64_t lda = a.t.size(1), ldb = b.t.size(1), ldc = c.t.size(1);
        double worst = 0;
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) {
            double s = 0;
            for (int64_t k = 0; k < K; ++k)
              s += (ta ? a.get(k * lda + i) : a.get(i * lda + k)) *
                   (tb ? b.get(j * ldb + k) : b.get(k * ldb + j));
            const double want = alpha * s + beta * c0.get(i * ldc + j);
            worst = std::max(worst, std::fabs(c.get(i * ldc + j) - want));
          }
        EXPECT_LT(worst, dtype == DType::F64 ? 1e-12 : 1e-5) << ta << tb;
        for (int64_t i = 0; i < M; ++i)  // the padding column is untouched
          EXPECT_EQ(c.get(i * ldc + N), c0.get(i * ldc + N));
      }
  }
}

TEST(Gemm, ShapeMismatchIsRejected) {
  HostTensor a(DType::F32, {3, 4}), b(DType::F32, {5, 2}), c(DType::F32, {3, 2});
  EXPECT_THROW(matmul(a.t, false, b.t, false, c.t, 1.0f, 0.0f), Error);
}

TEST(LinearGrad, FiniteDifferences) {
  const DType f = DType::F64;
  const int64_t B = 2, T = 3, K = 5, N = 4;
  HostTensor xw = test::randn(f, {B, T, K + 2}, 11);  // x is a column slice of a wider activation
  HostTensor w = test::randn(f, {N, K}, 12), bias = test::randn(f, {N}, 13);
  HostTensor gy = test::randn(f, {B, T, N}, 14);
  Tensor x = xw.t.slice(2, 1, K);
  HostTensor y(f, {B, T, N});
  auto loss = [&] {
    linear_forward(x, w.t, bias.t, y.t);
    return test::dot(y, gy);
  };
  HostTensor dx(f, {B, T, K}), dw(f, {N, K}), db(f, {N});
  for (int64_t i = 0; i < dw.t.numel(); ++i) dw.set(i, 0.5);
  for (int64_t i = 0; i < dx.t.numel(); ++i) dx.set(i, 1e9);  // overwritten
  linear_backward(gy.t, x, w.t, dx.t, dw.t, db.t, false);
  for (int64_t i = 0; i < dw.t.numel(); ++i) dw.set(i, dw.get(i) - 0.5);
  // dx lives on a compact tensor; check it through a compact copy of x
  HostTensor xc(f, {B, T, K});
  for (int64_t r = 0; r < B * T; ++r)
    for (int64_t k = 0; k < K; ++k) xc.set(r * K + k, xw.get(r * (K + 2) + 1 + k));
  auto loss_c = [&] {
    linear_forward(xc.t, w.t, bias.t, y.t);
    return test::dot(y, gy);
  };
  EXPECT_LT(test::fd_direction_error(xc, dx, loss_c, 1), 1e-6);
  EXPECT_LT(test::fd_direction_error(w, dw, loss, 2), 1e-6);
  EXPECT_LT(test::fd_direction_error(bias, db, loss, 3), 1e-6);
  // accumulate_dx adds
  HostTensor dx2 = test::copy_of(dx);
  linear_backward(gy.t, x, w.t, dx2.t, Tensor(), Tensor(), true);
  for (int64_t i = 0; i < dx.t.numel(); ++i) EXPECT_NEAR(dx2.get(i), 2 * dx.get(i), 1e-12);
}

TEST(Linear, ForwardMatchesFormulaInF32) {
  const int64_t M = 9, K = 13, N = 6;
  HostTensor x = test::randn(DType::F32, {M, K}, 1), w = test::randn(DType::F32, {N, K}, 2);
  HostTensor b = test::randn(DType::F32, {N}, 3), y(DType::F32, {M, N}), y2(DType::F32, {M, N});
  linear_forward(x.t, w.t, b.t, y.t);
  linear_forward(x.t, w.t, Tensor(), y2.t);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += x.get(m * K + k) * w.get(n * K + k);
      EXPECT_NEAR(y.get(m * N + n), s + b.get(n), 1e-5);
      EXPECT_NEAR(y2.get(m * N + n), s, 1e-5);
    }
}

// y = residual + x·wᵀ + b, out of place (residual untouched) and in place (residual = y).
TEST(Linear, ResidualForwardAddsTheResidual) {
  const int64_t M = 7, K = 11, N = 5;
  HostTensor x = test::randn(DType::F32, {M, K}, 4), w = test::randn(DType::F32, {N, K}, 5);
  HostTensor b = test::randn(DType::F32, {N}, 6), r = test::randn(DType::F32, {M, N}, 7);
  HostTensor plain(DType::F32, {M, N}), y(DType::F32, {M, N}), inplace = test::randn(DType::F32, {M, N}, 7);
  linear_forward(x.t, w.t, b.t, plain.t);
  linear_residual_forward(x.t, w.t, b.t, r.t, y.t);
  linear_residual_forward(x.t, w.t, b.t, inplace.t, inplace.t);
  for (int64_t i = 0; i < M * N; ++i) {
    EXPECT_EQ(y.get(i), static_cast<float>(plain.get(i) + r.get(i)));
    EXPECT_EQ(inplace.get(i), y.get(i));
  }
  HostTensor wrong(DType::F32, {M, N + 1});
  EXPECT_THROW(linear_residual_forward(x.t, w.t, b.t, wrong.t, y.t), Error);
}

// y = act(x·wᵀ + b): exactly the projection then the activation, for every elementwise
// activation in F32 and F64; SwiGlu (not elementwise) is refused.
TEST(Linear, ActivationForwardIsTheProjectionThenTheActivation) {
  const int64_t M = 3, K = 17, N = 10;
  for (DType dt : {DType::F32, DType::F64}) {
    HostTensor x = test::randn(dt, {M, K}, 8), w = test::randn(dt, {N, K}, 9), b = test::randn(dt, {N}, 10);
    for (Activation act : {Activation::ReluSquared, Activation::Gelu, Activation::GeluTanh, Activation::Silu}) {
      HostTensor fused(dt, {M, N}), proj(dt, {M, N}), two(dt, {M, N});
      linear_act_forward(x.t, w.t, b.t, act, fused.t);
      linear_forward(x.t, w.t, b.t, proj.t);
      activation_forward(act, proj.t, two.t);
      for (int64_t i = 0; i < M * N; ++i) EXPECT_EQ(fused.get(i), two.get(i)) << static_cast<int>(act);
    }
    HostTensor y(dt, {M, N});
    EXPECT_THROW(linear_act_forward(x.t, w.t, b.t, Activation::SwiGlu, y.t), Error);
  }
}

}  // namespace
}  // namespace hlm
