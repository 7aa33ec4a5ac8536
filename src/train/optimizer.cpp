// AdamW with per-parameter weight-decay segments.
#include "train/optimizer.h"

#include "ops/elementwise.h"

namespace hlm {

AdamW::AdamW(const std::vector<ParamSpec>& table, Device device, DType dtype, AdamWConfig cfg)
    : cfg_(cfg) {
  HLM_CHECK_ARG(cfg.beta1 >= 0 && cfg.beta1 < 1 && cfg.beta2 >= 0 && cfg.beta2 < 1,
                "AdamW betas must lie in [0, 1) (got {}, {})", cfg.beta1, cfg.beta2);
  HLM_CHECK_ARG(cfg.eps > 0, "AdamW eps must be positive (got {})", cfg.eps);
  HLM_CHECK_ARG(cfg.weight_decay >= 0, "weight decay must be >= 0 (got {})", cfg.weight_decay);
  for (const ParamSpec& s : table)
    segments_.push_back(AdamWSegment{s.offset, s.numel(),
                                     s.weight_decay() ? static_cast<float>(cfg.weight_decay) : 0.0f});
  const int64_t n = param_arena_numel(table);
  m_buf_ = Buffer(device, static_cast<size_t>(n) * dtype_size(dtype));
  v_buf_ = Buffer(device, static_cast<size_t>(n) * dtype_size(dtype));
  m_ = m_buf_.as(dtype, {n});
  v_ = v_buf_.as(dtype, {n});
  fill(m_, 0.0);
  fill(v_, 0.0);
}

void AdamW::step(const Tensor& params, const Tensor& grads, const Tensor& params_lowp, double lr,
                 double grad_scale) {
  ++step_;
  AdamWHyper h;
  h.lr = static_cast<float>(lr);
  h.beta1 = static_cast<float>(cfg_.beta1);
  h.beta2 = static_cast<float>(cfg_.beta2);
  h.eps = static_cast<float>(cfg_.eps);
  h.step = step_;
  adamw_step(params, grads, m_, v_, params_lowp, segments_, h, static_cast<float>(grad_scale));
}

}  // namespace hlm
