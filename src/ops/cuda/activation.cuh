// Device-side activation values shared by the activation kernels and the GEMV epilogue
// (linear_act_forward): fp32 math, the same expressions everywhere.
#pragma once

#include <cmath>

#include "ops/activation.h"
#include "ops/cuda/common.cuh"

namespace hlm::cuda {

inline constexpr float kSqrt2OverPi = 0.79788456080286535588f;
inline constexpr float kInvSqrt2 = 0.70710678118654752440f;
inline constexpr float kInvSqrt2Pi = 0.39894228040143267794f;
inline constexpr float kGeluCoeff = 0.044715f;

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

template <Activation A>
__device__ __forceinline__ float act_value(float x) {
  if constexpr (A == Activation::ReluSquared) {
    const float r = x > 0.0f ? x : 0.0f;
    return r * r;
  } else if constexpr (A == Activation::Gelu) {
    return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
  } else if constexpr (A == Activation::GeluTanh) {
    const float u = kSqrt2OverPi * (x + kGeluCoeff * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
  } else {
    return x * sigmoidf(x);
  }
}

// act_value for an activation known only at run time (not SwiGlu).
__device__ __forceinline__ float act_value_dyn(Activation a, float x) {
  switch (a) {
    case Activation::ReluSquared: return act_value<Activation::ReluSquared>(x);
    case Activation::Gelu: return act_value<Activation::Gelu>(x);
    case Activation::GeluTanh: return act_value<Activation::GeluTanh>(x);
    default: return act_value<Activation::Silu>(x);
  }
}

}  // namespace hlm::cuda
