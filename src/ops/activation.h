// MLP activations: relu² (Nemotron-H), GeLU (exact and tanh), SiLU, SwiGLU.
#pragma once

#include "ops/dispatch.h"

namespace hlm {

enum class Activation : uint8_t {
  ReluSquared,  // relu(x)²
  Gelu,         // x · Φ(x), exact (erf)
  GeluTanh,     // tanh approximation
  Silu,         // x · sigmoid(x)
  SwiGlu,       // input [M, 2F] = [gate | up] → silu(gate) · up  [M, F]
};
// Width of the activation's input for an MLP of width F (2F for gated ones).
inline int64_t activation_input_width(Activation a, int64_t F) {
  return a == Activation::SwiGlu ? 2 * F : F;
}

// out [M,F] = act(in), in [M,F] (or [M,2F] for SwiGlu); row views.
HLM_DECLARE_OP(void, activation_forward, (Activation act, const Tensor& in, const Tensor& out))
// din (overwritten) from in and dout.
HLM_DECLARE_OP(void, activation_backward,
               (Activation act, const Tensor& in, const Tensor& dout, const Tensor& din))

}  // namespace hlm
