// Cross-entropy over the vocabulary with an ignore index. The CUDA version streams the vocabulary
// in chunks in fp32 registers, so no fp32 copy of the logits is ever materialised.
#pragma once

#include "ops/dispatch.h"

namespace hlm {

constexpr int32_t kIgnoreIndex = -100;

// logits [M,V] row views; targets [M] I32. losses[m] = lse_m − logits[m, target_m] (0 when
// target_m == ignore_index); lse [M] = log Σ_v exp(logits[m,v]). losses and lse are F32 (F64 for
// F64 logits). A target outside [0, V) other than ignore_index is an error.
HLM_DECLARE_OP(void, cross_entropy_forward,
               (const Tensor& logits, const Tensor& targets, int32_t ignore_index,
                const Tensor& losses, const Tensor& lse))
// dlogits = scale · (softmax(logits) − onehot(target)), zero rows for ignored targets.
// dlogits may be the same memory as logits (in-place).
HLM_DECLARE_OP(void, cross_entropy_backward,
               (const Tensor& logits, const Tensor& targets, const Tensor& lse,
                int32_t ignore_index, float scale, const Tensor& dlogits))

}  // namespace hlm
