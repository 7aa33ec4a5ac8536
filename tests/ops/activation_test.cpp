// MLP activations: values match their formulas (relu², exact and tanh GeLU, SiLU, SwiGLU), every
// backward passes float64 finite differences, and the float32 path agrees with float64.
#include <gtest/gtest.h>

#include "ops/activation.h"
#include "test_util.h"

namespace hlm {
namespace {

using test::HostTensor;

double reference(Activation a, double x) {
  switch (a) {
    case Activation::ReluSquared: return x > 0 ? x * x : 0;
    case Activation::Gelu: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case Activation::GeluTanh:
      return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    default: return x / (1 + std::exp(-x));
  }
}

const Activation kAll[] = {Activation::ReluSquared, Activation::Gelu, Activation::GeluTanh,
                           Activation::Silu, Activation::SwiGlu};

TEST(Activation, ValuesMatchFormulas) {
  EXPECT_NEAR(reference(Activation::Gelu, 1.0), 0.8413447460685429, 1e-15);
  EXPECT_NEAR(reference(Activation::GeluTanh, 1.0), 0.8411919906082768, 1e-15);
  for (DType dtype : {DType::F64, DType::F32}) {
    for (Activation a : kAll) {
      const int64_t M = 3, F = 40;
      HostTensor in = test::randn(dtype, {M, activation_input_width(a, F)}, 1, 3.0);
      HostTensor out(dtype, {M, F});
      activation_forward(a, in.t, out.t);
      const int64_t W = activation_input_width(a, F);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t i = 0; i < F; ++i) {
          const double x = in.get(m * W + i);
          const double want = a == Activation::SwiGlu ? reference(Activation::Silu, x) * in.get(m * W + F + i)
                                                      : reference(a, x);
          EXPECT_NEAR(out.get(m * F + i), want, (dtype == DType::F64 ? 1e-14 : 3e-6) * (1 + std::fabs(want)))
              << static_cast<int>(a);
        }
    }
  }
}

TEST(ActivationGrad, FiniteDifferences) {
  for (Activation a : kAll) {
    const int64_t M = 4, F = 9, W = activation_input_width(a, F);
    HostTensor in = test::randn(DType::F64, {M, W}, 2, 2.0);
    if (a == Activation::ReluSquared)  // keep away from the kink at 0
      for (int64_t i = 0; i < in.t.numel(); ++i)
        if (std::fabs(in.get(i)) < 1e-3) in.set(i, 0.5);
    HostTensor gy = test::randn(DType::F64, {M, F}, 3), out(DType::F64, {M, F}), din(DType::F64, {M, W});
    activation_backward(a, in.t, gy.t, din.t);
    auto loss = [&] {
      activation_forward(a, in.t, out.t);
      return test::dot(out, gy);
    };
    EXPECT_LT(test::fd_direction_error(in, din, loss, 4), 1e-6) << static_cast<int>(a);
  }
}

}  // namespace
}  // namespace hlm
