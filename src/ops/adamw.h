// AdamW (decoupled weight decay, bias-corrected, as torch.optim.AdamW) over flat parameter
// buffers, with a per-segment weight decay so norms, biases, A_log, D and dt_bias skip it.
#pragma once

#include <span>

#include "ops/dispatch.h"

namespace hlm {

struct AdamWHyper {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  int64_t step = 1;  // 1-based, after increment
};
struct AdamWSegment {
  int64_t offset;  // elements into the flat buffers
  int64_t size;
  float weight_decay;
};

// params, m, v: flat F32 (F64 allowed on the CPU) master buffers of equal numel; grads the same
// numel (F32, or F64 with F64 params). Gradients are multiplied by grad_scale first (clipping).
// Per element: p -= lr·wd·p; m = β1 m + (1-β1) g; v = β2 v + (1-β2) g²;
// p -= lr · (m / (1-β1^t)) / (sqrt(v / (1-β2^t)) + eps).
// params_lowp (BF16, same numel) receives the updated params when defined.
HLM_DECLARE_OP(void, adamw_step,
               (const Tensor& params, const Tensor& grads, const Tensor& m, const Tensor& v,
                const Tensor& params_lowp, std::span<const AdamWSegment> segments,
                const AdamWHyper& hyper, float grad_scale))

}  // namespace hlm
