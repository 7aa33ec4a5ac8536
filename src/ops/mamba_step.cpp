// mamba_step's checks and its unfused form (ops/ssd.h): the CPU twin is exactly the three ops in a
// row; the CUDA backend falls back to it where its fused kernel does not apply.
#include <string>

#include "ops/conv1d.h"
#include "ops/norm.h"
#include "ops/ssd.h"

namespace hlm {

namespace {

void require_shape(const Tensor& t, std::initializer_list<int64_t> shape, const char* what) {
  HLM_CHECK_ARG(t.defined(), "mamba_step: {} is not set", what);
  bool ok = t.ndim == static_cast<int>(shape.size());
  int d = 0;
  std::string want;
  for (int64_t s : shape) {
    ok = ok && t.shape[static_cast<size_t>(d++)] == s;
    want += fmt::format("{}{}", want.empty() ? "" : ",", s);
  }
  HLM_CHECK_ARG(ok, "mamba_step: {} has shape {}, expected [{}]", what, t.shape_str(), want);
}

}  // namespace

MambaStepViews mamba_step_views(const MambaStepParams& p, const Tensor& conv_state, const Tensor& ssm_state,
                                const MambaStepWork& work, const Tensor& out) {
  const int64_t H = p.heads, P = p.head_dim, G = p.groups, N = p.state_dim;
  HLM_CHECK_ARG(H > 0 && P > 0 && G > 0 && N > 0 && H % G == 0,
                "mamba_step: heads {} / head_dim {} / groups {} / state {} do not add up", H, P, G, N);
  const int64_t Di = H * P, Cd = Di + 2 * G * N;
  HLM_CHECK_ARG(p.norm_group > 0 && Di % p.norm_group == 0, "mamba_step: norm group {} does not divide {}",
                p.norm_group, Di);
  HLM_CHECK_ARG(p.zx.defined() && p.zx.ndim == 2, "mamba_step: zx must be [B, {}]", Di + Cd + H);
  const int64_t B = p.zx.size(0);
  require_shape(p.zx, {B, Di + Cd + H}, "zx");
  HLM_CHECK_ARG(p.conv_w.defined() && p.conv_w.ndim == 2, "mamba_step: conv_w must be [{}, K]", Cd);
  const int64_t K = p.conv_w.size(1);
  require_shape(p.conv_w, {Cd, K}, "conv_w");
  require_shape(conv_state, {B, Cd, K - 1}, "conv_state");
  require_shape(ssm_state, {B, H, P, N}, "ssm_state");
  require_shape(p.norm_w, {Di}, "norm_w");
  require_shape(work.xbc, {B, Cd}, "work.xbc");
  require_shape(work.y, {B, Di}, "work.y");
  require_shape(work.rstd, {B, Di / p.norm_group}, "work.rstd");
  require_shape(out, {B, Di}, "out");
  MambaStepViews v;
  v.z = p.zx.slice(1, 0, Di);
  v.xbc_raw = p.zx.slice(1, Di, Cd);
  v.step.x = work.xbc.slice(1, 0, Di).split_last({H, P});
  v.step.Bm = work.xbc.slice(1, Di, G * N).split_last({G, N});
  v.step.Cm = work.xbc.slice(1, Di + G * N, G * N).split_last({G, N});
  v.step.dt = p.zx.slice(1, Di + Cd, H);
  v.step.A_log = p.A_log;
  v.step.D = p.D;
  v.step.dt_bias = p.dt_bias;
  v.step.dt_min = p.dt_min;
  v.step.dt_max = p.dt_max;
  return v;
}

void mamba_step_unfused(const MambaStepParams& p, const MambaStepViews& v, const Tensor& conv_state,
                        const Tensor& ssm_state, const MambaStepWork& work, const Tensor& out) {
  conv1d_silu_update(v.xbc_raw, p.conv_w, p.conv_b, conv_state, work.xbc);
  ssd_step(v.step, ssm_state, work.y.split_last({p.heads, p.head_dim}));
  gated_rmsnorm_forward(work.y, v.z, p.norm_w, p.norm_group, p.norm_eps, out, work.rstd);
}

namespace cpu {
void mamba_step(const MambaStepParams& p, const Tensor& conv_state, const Tensor& ssm_state,
                const MambaStepWork& work, const Tensor& out) {
  HLM_CHECK_ARG(p.zx.device == Device::CPU, "mamba_step (CPU): zx is on {}", device_name(p.zx.device));
  mamba_step_unfused(p, mamba_step_views(p, conv_state, ssm_state, work, out), conv_state, ssm_state, work, out);
}
}  // namespace cpu

}  // namespace hlm
