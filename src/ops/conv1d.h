// Causal depthwise conv1d + bias + SiLU over time (the Mamba-2 short conv), with document resets,
// its backward, and the one-token update used in decode.
#pragma once

#include "ops/dispatch.h"

namespace hlm {

// y[b,t,c] = silu(bias[c] + Σ_k w[c,k] · x[b, t-(K-1)+k, c]), where an input position before the
// row start or before the start of t's document (doc[b,t'] != doc[b,t]) counts as zero.
// x, y [B,T,C] (row views: a column slice of a wider activation is fine); w [C,K]; bias [C] or
// undefined; doc [B,T] I32 or undefined (one document per row).
HLM_DECLARE_OP(void, conv1d_silu_forward,
               (const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& doc,
                const Tensor& y))
// dx overwritten; dw, dbias accumulated (undefined ones skipped).
HLM_DECLARE_OP(void, conv1d_silu_backward,
               (const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& bias,
                const Tensor& doc, const Tensor& dx, const Tensor& dw, const Tensor& dbias))

// Decode: state [B,C,K-1] holds the last K-1 inputs (oldest first). For x [B,C]:
// y = silu(bias + Σ_k w[:,k] · [state, x][:,k]); then the state shifts left and takes x.
HLM_DECLARE_OP(void, conv1d_silu_update,
               (const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& state,
                const Tensor& y))
// After a prefill: state[b,c,:] = the last K-1 inputs x[b, T-K+1 .., c] of each row, zero where
// that position is before the row start or belongs to an earlier document than position T-1.
HLM_DECLARE_OP(void, conv1d_state_from_sequence,
               (const Tensor& x, const Tensor& doc, const Tensor& state))

}  // namespace hlm
