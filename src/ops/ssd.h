// The Mamba-2 SSD scan: chunked algorithm (the default, GEMM-shaped), the sequential recurrence
// (the definition, CPU only), their backward passes, and the one-token state update for decode.
//
// With dt_t = clamp(softplus(dt_raw_t + dt_bias), dt_min, dt_max) and A = -exp(A_log), per head h
// (group g = h / (H/G)):
//   h_t = exp(dt_t·A) · h_{t-1} + dt_t · x_t B_tᵀ        (state [P,N])
//   y_t = h_t C_t + D · x_t
// h_{-1} = h0 (zero when undefined). At a document boundary (doc[b,t] != doc[b,t-1]) the state
// restarts from zero: h_t = dt_t · x_t B_tᵀ. h0 therefore only reaches the row's first document.
#pragma once

#include <limits>

#include "ops/dispatch.h"

namespace hlm {

struct SsdParams {
  Tensor x;        // [B,T,H,P]
  Tensor dt;       // [B,T,H]   raw, before bias and softplus
  Tensor A_log;    // [H]
  Tensor Bm;       // [B,T,G,N]
  Tensor Cm;       // [B,T,G,N]
  Tensor D;        // [H] or undefined (no skip)
  Tensor dt_bias;  // [H] or undefined (zero)
  Tensor doc;      // [B,T] I32 or undefined (one document per row)
  Tensor h0;       // [B,H,P,N] or undefined (zero initial state)
  float dt_min = 0.0f;
  float dt_max = std::numeric_limits<float>::infinity();
  int64_t chunk = 128;  // Q, for the chunked algorithm
};

// Gradients; inputs' gradients are overwritten, parameters' (dA_log, dD, ddt_bias) accumulated.
// Any of them may be undefined (skipped).
struct SsdGrads {
  Tensor dx;        // [B,T,H,P]
  Tensor ddt;       // [B,T,H]   w.r.t. the raw dt
  Tensor dA_log;    // [H]
  Tensor dBm;       // [B,T,G,N]
  Tensor dCm;       // [B,T,G,N]
  Tensor dD;        // [H]
  Tensor ddt_bias;  // [H]
  Tensor dh0;       // [B,H,P,N]
};

// Chunked forward. y [B,T,H,P]; h_final [B,H,P,N] (state after the last position) or undefined.
HLM_DECLARE_OP(void, ssd_forward, (const SsdParams& p, const Tensor& y, const Tensor& h_final))
// Chunked backward; dh_final may be undefined (zero).
HLM_DECLARE_OP(void, ssd_backward,
               (const SsdParams& p, const Tensor& dy, const Tensor& dh_final, const SsdGrads& g))

namespace cpu {
// The definition: one step per token. Same contract as ssd_forward / ssd_backward.
void ssd_forward_sequential(const SsdParams& p, const Tensor& y, const Tensor& h_final);
void ssd_backward_sequential(const SsdParams& p, const Tensor& dy, const Tensor& dh_final,
                             const SsdGrads& g);
}  // namespace cpu

// One decode token. x [B,H,P], dt [B,H] raw, Bm / Cm [B,G,N]; state [B,H,P,N] (F32) is updated
// in place; y [B,H,P] = state·C + D·x.
struct SsdStepParams {
  Tensor x, dt, A_log, Bm, Cm, D, dt_bias;
  float dt_min = 0.0f;
  float dt_max = std::numeric_limits<float>::infinity();
};
HLM_DECLARE_OP(void, ssd_step, (const SsdStepParams& p, const Tensor& state, const Tensor& y))

// One decode token of the Mamba-2 mixer between its two projections, from in_proj's output
// zx [B, Di + Cd + H] = [z | x B C | dt] (Di = H·P, Cd = Di + 2·G·N) to the gated norm's output:
//   xbc = conv1d_silu_update(zx[:, Di:Di+Cd]) (conv_state [B,Cd,K-1] updated),
//   y   = ssd_step(xbc's x, B, C, dt = zx[:, Di+Cd:]) (ssm_state [B,H,P,N] F32 updated),
//   out = gated_rmsnorm(y, z = zx[:, :Di], norm_w, norm_group).
// xbc [B,Cd], y [B,Di] and rstd [B, Di/norm_group] are work space for the unfused path; the fused
// CUDA kernel (one launch where the shape allows it; opt-in, HLM_MAMBA_STEP=1 or 2: see
// ops/cuda/mamba_step.cu) leaves them unwritten.
struct MambaStepParams {
  Tensor zx;                 // [B, Di + Cd + H] (a row view)
  Tensor conv_w, conv_b;     // [Cd, K], [Cd] or undefined
  Tensor A_log, D, dt_bias;  // [H]; D and dt_bias may be undefined
  Tensor norm_w;             // [Di]
  int64_t heads = 0, head_dim = 0, groups = 0, state_dim = 0, norm_group = 0;
  float norm_eps = 1e-5f;
  float dt_min = 0.0f;
  float dt_max = std::numeric_limits<float>::infinity();
};
struct MambaStepWork {
  Tensor xbc, y, rstd;
};
HLM_DECLARE_OP(void, mamba_step,
               (const MambaStepParams& p, const Tensor& conv_state, const Tensor& ssm_state,
                const MambaStepWork& work, const Tensor& out))

// mamba_step's inputs checked (clear errors for shapes that do not add up) and cut into the views
// the three unfused ops take: z and xBC of zx, the ssd_step parameters over work.xbc.
struct MambaStepViews {
  Tensor z, xbc_raw;
  SsdStepParams step;
};
MambaStepViews mamba_step_views(const MambaStepParams& p, const Tensor& conv_state, const Tensor& ssm_state,
                                const MambaStepWork& work, const Tensor& out);
// The three ops in a row (dispatched by device) over views from mamba_step_views: the CPU twin,
// and the CUDA fallback.
void mamba_step_unfused(const MambaStepParams& p, const MambaStepViews& v, const Tensor& conv_state,
                        const Tensor& ssm_state, const MambaStepWork& work, const Tensor& out);

}  // namespace hlm
