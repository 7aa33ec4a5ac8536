// CPU MLP activations (relu², GeLU exact and tanh, SiLU, SwiGLU), forward and backward.
#include "ops/activation.h"

#include "ops/cpu/common.h"

namespace hlm::cpu {

using namespace detail;

namespace {

constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kGeluCoeff = 0.044715;

// One activation as value and derivative of a scalar.
template <typename T>
inline T act_value(Activation a, T x) {
  switch (a) {
    case Activation::ReluSquared: {
      const T r = x > T(0) ? x : T(0);
      return r * r;
    }
    case Activation::Gelu: return x * T(0.5) * (T(1) + std::erf(x * T(kInvSqrt2)));
    case Activation::GeluTanh: {
      const T u = T(kSqrt2OverPi) * (x + T(kGeluCoeff) * x * x * x);
      return T(0.5) * x * (T(1) + std::tanh(u));
    }
    default: return x * sigmoid(x);  // Silu (and SwiGlu's gate)
  }
}
template <typename T>
inline T act_derivative(Activation a, T x) {
  switch (a) {
    case Activation::ReluSquared: return x > T(0) ? T(2) * x : T(0);
    case Activation::Gelu:
      return T(0.5) * (T(1) + std::erf(x * T(kInvSqrt2))) +
             x * T(kInvSqrt2Pi) * std::exp(T(-0.5) * x * x);
    case Activation::GeluTanh: {
      const T u = T(kSqrt2OverPi) * (x + T(kGeluCoeff) * x * x * x);
      const T th = std::tanh(u);
      return T(0.5) * (T(1) + th) +
             T(0.5) * x * (T(1) - th * th) * T(kSqrt2OverPi) * (T(1) + T(3 * kGeluCoeff) * x * x);
    }
    default: {
      const T s = sigmoid(x);
      return s * (T(1) + x * (T(1) - s));
    }
  }
}

// Row loop with the activation a compile-time constant, so the switch leaves the inner loop.
template <typename T, Activation A, typename Fn>
void for_rows(int64_t rows, int64_t width, Fn&& fn) {
#pragma omp parallel for schedule(static) if (rows * width > 16384)
  for (int64_t r = 0; r < rows; ++r) fn(r);
}

struct ActRows {
  RowView in, other;
  int64_t F;
};
ActRows act_rows(Activation act, const Tensor& in, const Tensor& other, const char* other_name,
                 const char* op) {
  require_cpu(in, op, "in");
  require_cpu(other, op, other_name);
  require_dtype(other, in.dtype, op, other_name);
  RowView I = as_rows(in, 1, op), O = as_rows(other, 1, op);
  const int64_t F = O.cols;
  HLM_REQUIRE(I.rows == O.rows && I.cols == activation_input_width(act, F), ErrorKind::Internal,
              "{}: in {} does not match {} {}", op, in.describe(), other_name, other.describe());
  return {I, O, F};
}

template <typename T, Activation A>
void forward_impl(const ActRows& r) {
  const int64_t F = r.F;
  for_rows<T, A>(r.in.rows, F, [&](int64_t m) {
    const T* x = r.in.row<T>(m);
    T* y = r.other.row<T>(m);
    if constexpr (A == Activation::SwiGlu) {
#pragma omp simd
      for (int64_t i = 0; i < F; ++i) y[i] = x[i] * sigmoid(x[i]) * x[F + i];
    } else {
#pragma omp simd
      for (int64_t i = 0; i < F; ++i) y[i] = act_value(A, x[i]);
    }
  });
}

template <typename T, Activation A>
void backward_impl(const ActRows& r, const RowView& DIN) {
  const int64_t F = r.F;
  for_rows<T, A>(r.in.rows, F, [&](int64_t m) {
    const T* x = r.in.row<T>(m);
    const T* g = r.other.row<T>(m);
    T* dx = DIN.row<T>(m);
    if constexpr (A == Activation::SwiGlu) {
#pragma omp simd
      for (int64_t i = 0; i < F; ++i) {
        const T s = sigmoid(x[i]);
        dx[F + i] = g[i] * x[i] * s;
        dx[i] = g[i] * x[F + i] * s * (T(1) + x[i] * (T(1) - s));
      }
    } else {
#pragma omp simd
      for (int64_t i = 0; i < F; ++i) dx[i] = g[i] * act_derivative(A, x[i]);
    }
  });
}

template <typename T, typename Fn>
void with_activation(Activation act, Fn&& fn) {
  switch (act) {
    case Activation::ReluSquared: fn.template operator()<T, Activation::ReluSquared>(); return;
    case Activation::Gelu: fn.template operator()<T, Activation::Gelu>(); return;
    case Activation::GeluTanh: fn.template operator()<T, Activation::GeluTanh>(); return;
    case Activation::Silu: fn.template operator()<T, Activation::Silu>(); return;
    case Activation::SwiGlu: fn.template operator()<T, Activation::SwiGlu>(); return;
  }
  fail(ErrorKind::Internal, "activation: unknown kind {}", static_cast<int>(act));
}

}  // namespace

void activation_forward(Activation act, const Tensor& in, const Tensor& out) {
  const char* op = "activation_forward";
  ActRows r = act_rows(act, in, out, "out", op);
  with_float_type(in.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    with_activation<T>(act, [&]<typename U, Activation A>() { forward_impl<U, A>(r); });
  });
}

void activation_backward(Activation act, const Tensor& in, const Tensor& dout, const Tensor& din) {
  const char* op = "activation_backward";
  ActRows r = act_rows(act, in, dout, "dout", op);
  require_cpu(din, op, "din");
  require_dtype(din, in.dtype, op, "din");
  RowView DIN = as_rows(din, 1, op);
  HLM_REQUIRE(DIN.rows == r.in.rows && DIN.cols == r.in.cols, ErrorKind::Internal,
              "{}: din {} must match in {}", op, din.describe(), in.describe());
  with_float_type(in.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    with_activation<T>(act, [&]<typename U, Activation A>() { backward_impl<U, A>(r, DIN); });
  });
}

}  // namespace hlm::cpu
