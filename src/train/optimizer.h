// AdamW over the model's flat parameter buffer: moments in the master dtype, weight decay only on
// matrices (embeddings, linears, conv weights), never on norms, biases, A_log, D or dt_bias.
#pragma once

#include <vector>

#include "core/memory.h"
#include "model/params.h"
#include "ops/adamw.h"

namespace hlm {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

class AdamW {
 public:
  AdamW(const std::vector<ParamSpec>& table, Device device, DType dtype, AdamWConfig cfg);
  // One update of params (and its low-precision copy when defined) from grads at learning rate lr;
  // grads are scaled by grad_scale first (clipping).
  void step(const Tensor& params, const Tensor& grads, const Tensor& params_lowp, double lr,
            double grad_scale);
  int64_t steps_done() const { return step_; }
  void set_steps_done(int64_t s) { step_ = s; }
  Tensor m() const { return m_; }
  Tensor v() const { return v_; }
  const std::vector<AdamWSegment>& segments() const { return segments_; }
  const AdamWConfig& config() const { return cfg_; }

 private:
  AdamWConfig cfg_;
  std::vector<AdamWSegment> segments_;
  Buffer m_buf_, v_buf_;
  Tensor m_, v_;
  int64_t step_ = 0;
};

}  // namespace hlm
