// Matrix products: the GEMM behind every projection. CPU: OpenBLAS (F32, F64). CUDA: cuBLASLt
// (BF16 operands, F32 accumulation, BF16 or F32 output).
#pragma once

#include "ops/activation.h"
#include "ops/dispatch.h"

namespace hlm {

// c[M,N] = alpha · op(a) · op(b) + beta · c. Operands are 2-D row views (last dim packed, any row
// stride); op(a) is a [M,K] or, when trans_a, aᵀ of a [K,M]; likewise b.
HLM_DECLARE_OP(void, matmul,
               (const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c,
                float alpha, float beta))

// y[M,N] = x[M,K] · wᵀ (+ bias[N]), w in HF layout [N,K]; x and y are row views of any leading
// shape ([B,T,K] → M = B·T rows). bias may be undefined.
HLM_DECLARE_OP(void, linear_forward,
               (const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y))

// y = act(x · wᵀ (+ bias)) for an elementwise activation (not SwiGlu): the MLP's up projection in
// decode. Defined as linear_forward into y, then activation_forward in place — the product is
// rounded to y's dtype before the activation; on CUDA the one-row GEMV applies it in its epilogue.
HLM_DECLARE_OP(void, linear_act_forward,
               (const Tensor& x, const Tensor& w, const Tensor& bias, Activation act, const Tensor& y))

// y = residual + x · wᵀ (+ bias): the pre-norm block's output projection with its residual add
// (on CUDA in the GEMM's epilogue, residual read as C). residual has y's shape; it may be y itself.
HLM_DECLARE_OP(void, linear_residual_forward,
               (const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual,
                const Tensor& y))

// dx = dy · w (overwritten; added to dx when accumulate_dx); dw += dyᵀ · x; dbias += Σ_rows dy.
// Undefined dx / dw / dbias are skipped. Parameter gradients always accumulate.
HLM_DECLARE_OP(void, linear_backward,
               (const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx,
                const Tensor& dw, const Tensor& dbias, bool accumulate_dx))

}  // namespace hlm
