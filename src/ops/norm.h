// RMSNorm and the Mamba-2 group-wise gated RMSNorm, forward and backward.
#pragma once

#include "ops/dispatch.h"

namespace hlm {

// y = x · rsqrt(mean(x²) + eps) · w over the last dim D. x, y [M,D] row views; w [D];
// rstd [M] (F32, or F64 when x is F64) is saved for the backward.
HLM_DECLARE_OP(void, rmsnorm_forward,
               (const Tensor& x, const Tensor& w, float eps, const Tensor& y, const Tensor& rstd))
// The pre-norm residual step in one pass (decode): x += d, stored in x's dtype exactly as
// add_scaled(d, 1, x) stores it, then y = rmsnorm(x) as rmsnorm_forward. x, d, y [M,D] row views.
HLM_DECLARE_OP(void, residual_rmsnorm_forward,
               (const Tensor& x, const Tensor& d, const Tensor& w, float eps, const Tensor& y,
                const Tensor& rstd))
// dx overwritten; dw accumulated.
HLM_DECLARE_OP(void, rmsnorm_backward,
               (const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                const Tensor& dx, const Tensor& dw))
// The pre-norm residual step's backward: dres += the gradient of the norm's input (the sum taken
// in float before dres is stored), dw accumulated; otherwise as rmsnorm_backward.
HLM_DECLARE_OP(void, residual_rmsnorm_backward,
               (const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                const Tensor& dres, const Tensor& dw))

// g = x · silu(z); within each group of `group_size` consecutive channels:
// y = g · rsqrt(mean(g²) + eps) · w. x, z, y [M,D] row views; w [D]; rstd [M, D/group_size].
HLM_DECLARE_OP(void, gated_rmsnorm_forward,
               (const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size, float eps,
                const Tensor& y, const Tensor& rstd))
// dx, dz overwritten; dw accumulated.
HLM_DECLARE_OP(void, gated_rmsnorm_backward,
               (const Tensor& dy, const Tensor& x, const Tensor& z, const Tensor& w,
                const Tensor& rstd, int64_t group_size, const Tensor& dx, const Tensor& dz,
                const Tensor& dw))

}  // namespace hlm
