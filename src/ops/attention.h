// Causal self-attention with GQA and document masking, its backward, RoPE, and decode attention
// over a KV cache.
#pragma once

#include "ops/dispatch.h"

namespace hlm {

// q [B,T,Hq,E], k / v [B,T,Hkv,E] (row views; Hq a multiple of Hkv, query head h reads KV head
// h / (Hq/Hkv)). Position t attends to t' ≤ t with doc[b,t'] == doc[b,t] (doc undefined: one
// document per row). softmax(scale · q kᵀ) v.
struct AttentionParams {
  Tensor q, k, v;
  Tensor doc;  // [B,T] I32 or undefined
  float scale = 1.0f;
};
// out [B,T,Hq,E]; lse [B,Hq,T] (F32, F64 for F64 inputs): log-sum-exp of the scaled scores,
// saved for the backward.
HLM_DECLARE_OP(void, attention_forward,
               (const AttentionParams& p, const Tensor& out, const Tensor& lse))
// dq, dk, dv overwritten.
HLM_DECLARE_OP(void, attention_backward,
               (const AttentionParams& p, const Tensor& out, const Tensor& lse, const Tensor& dout,
                const Tensor& dq, const Tensor& dk, const Tensor& dv))

// Rotary embedding (GPT-NeoX "rotate half" layout) on the first rot_dim channels of each head,
// in place. x [B,T,H,E]; pos [B,T] I32 (position within the document).
// inverse = true rotates by the negative angle (the backward of the forward rotation).
HLM_DECLARE_OP(void, rope_apply,
               (const Tensor& x, const Tensor& pos, float theta, int64_t rot_dim, bool inverse))

// Decode: q [B,Hq,E] (one token per row) against k_cache / v_cache [B,S,Hkv,E]; row b attends to
// cache positions [start[b], len[b]) (start / len [B] I32). out [B,Hq,E].
HLM_DECLARE_OP(void, attention_decode,
               (const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& start,
                const Tensor& len, float scale, const Tensor& out))

// Decode: appends one token's keys or values to a cache: cache[b, len[b]-1] = x[b] for x [B,H,E],
// cache [B,S,H,E], len [B] I32 (the length after the append, as attention_decode takes it). The
// position is read on the device, so a captured decode step replays correctly at every length.
HLM_DECLARE_OP(void, kv_cache_write, (const Tensor& x, const Tensor& cache, const Tensor& len))

}  // namespace hlm
