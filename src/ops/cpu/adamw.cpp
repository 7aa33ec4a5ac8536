// CPU AdamW (torch.optim.AdamW semantics) over flat master buffers with per-segment weight decay.
#include "ops/adamw.h"

#include "ops/cpu/common.h"

namespace hlm::cpu {

using namespace detail;

void adamw_step(const Tensor& params, const Tensor& grads, const Tensor& m, const Tensor& v,
                const Tensor& params_lowp, std::span<const AdamWSegment> segments,
                const AdamWHyper& hyper, float grad_scale) {
  const char* op = "adamw_step";
  const int64_t n = params.numel();
  for (const Tensor* t : {&params, &grads, &m, &v}) {
    require_cpu(*t, op, "buffer");
    require_dtype(*t, params.dtype, op, "buffer");
    HLM_REQUIRE(t->is_contiguous() && t->numel() == n, ErrorKind::Internal,
                "{}: buffer {} must be contiguous with {} elements like params", op, t->describe(),
                n);
  }
  if (params_lowp.defined()) {
    require_cpu(params_lowp, op, "params_lowp");
    require_dtype(params_lowp, DType::BF16, op, "params_lowp");
    HLM_REQUIRE(params_lowp.is_contiguous() && params_lowp.numel() == n, ErrorKind::Internal,
                "{}: params_lowp {} must be contiguous with {} elements", op,
                params_lowp.describe(), n);
  }
  HLM_CHECK_ARG(hyper.step >= 1, "{}: step must be >= 1 (1-based), got {}", op, hyper.step);
  for (const AdamWSegment& s : segments)
    HLM_REQUIRE(s.offset >= 0 && s.size >= 0 && s.offset + s.size <= n, ErrorKind::Internal,
                "{}: segment [{}, +{}) outside the {} parameters", op, s.offset, s.size, n);
  with_float_type(params.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    // Bias corrections in double (as torch computes them on the host), then in T.
    const double t = static_cast<double>(hyper.step);
    const T bc1 = static_cast<T>(1.0 - std::pow(static_cast<double>(hyper.beta1), t));
    const T bc2_sqrt = static_cast<T>(std::sqrt(1.0 - std::pow(static_cast<double>(hyper.beta2), t)));
    const T lr = hyper.lr, b1 = hyper.beta1, b2 = hyper.beta2, eps = hyper.eps;
    const T gs = static_cast<T>(grad_scale);
    const T step_size = lr / bc1;
    T* p = params.ptr<T>();
    const T* g = grads.ptr<T>();
    T* mp = m.ptr<T>();
    T* vp = v.ptr<T>();
    bf16* lowp = params_lowp.defined() ? params_lowp.ptr<bf16>() : nullptr;
    for (const AdamWSegment& s : segments) {
      const T decay = T(1) - lr * static_cast<T>(s.weight_decay);
#pragma omp parallel for simd schedule(static) if (s.size > 32768)
      for (int64_t i = s.offset; i < s.offset + s.size; ++i) {
        const T gi = g[i] * gs;
        const T mi = b1 * mp[i] + (T(1) - b1) * gi;
        const T vi = b2 * vp[i] + (T(1) - b2) * gi * gi;
        mp[i] = mi;
        vp[i] = vi;
        const T pi = p[i] * decay - step_size * mi / (std::sqrt(vi) / bc2_sqrt + eps);
        p[i] = pi;
        if (lowp) lowp[i] = bf16(static_cast<float>(pi));
      }
    }
  });
}

}  // namespace hlm::cpu
