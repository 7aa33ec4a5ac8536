// The device-neutral entry points: each picks the backend by the device of its main tensor.
#include "ops/dispatch.h"

#include "ops/activation.h"
#include "ops/adamw.h"
#include "ops/attention.h"
#include "ops/conv1d.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/gemm.h"
#include "ops/loss.h"
#include "ops/norm.h"
#include "ops/ssd.h"

namespace hlm {

void no_cuda_backend(const char* op) {
  fail(ErrorKind::Unsupported, "{}: tensor is on CUDA but this build has no CUDA backend", op);
}

void matmul(const Tensor& a, bool ta, const Tensor& b, bool tb, const Tensor& c, float alpha,
            float beta) {
  HLM_DISPATCH(c.device, matmul, a, ta, b, tb, c, alpha, beta);
}
void linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y) {
  HLM_DISPATCH(y.device, linear_forward, x, w, bias, y);
}
void linear_act_forward(const Tensor& x, const Tensor& w, const Tensor& bias, Activation act, const Tensor& y) {
  HLM_DISPATCH(y.device, linear_act_forward, x, w, bias, act, y);
}
void linear_residual_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual,
                             const Tensor& y) {
  HLM_DISPATCH(x.device, linear_residual_forward, x, w, bias, residual, y);
}
void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx,
                     const Tensor& dw, const Tensor& dbias, bool accumulate_dx) {
  HLM_DISPATCH(dy.device, linear_backward, dy, x, w, dx, dw, dbias, accumulate_dx);
}

void convert(const Tensor& src, const Tensor& dst) {
  // Host <-> device conversions go through a copy on the side that has the right dtype.
  HLM_REQUIRE(src.device == dst.device, ErrorKind::Internal, "convert across devices: {} -> {}",
              src.describe(), dst.describe());
  HLM_DISPATCH(dst.device, convert, src, dst);
}
void add_scaled(const Tensor& x, float alpha, const Tensor& y) {
  HLM_DISPATCH(y.device, add_scaled, x, alpha, y);
}
void fill(const Tensor& t, double value) { HLM_DISPATCH(t.device, fill, t, value); }
void fill_normal(const Tensor& t, uint64_t seed, uint64_t stream, float mean, float stddev) {
  HLM_DISPATCH(t.device, fill_normal, t, seed, stream, mean, stddev);
}
void scale_inplace(const Tensor& t, float s) { HLM_DISPATCH(t.device, scale_inplace, t, s); }
double sum_squares(const Tensor& t) { HLM_DISPATCH(t.device, sum_squares, t); }

void embedding_forward(const Tensor& ids, const Tensor& table, const Tensor& out) {
  HLM_DISPATCH(out.device, embedding_forward, ids, table, out);
}
void embedding_backward(const Tensor& ids, const Tensor& dout, const Tensor& dtable) {
  HLM_DISPATCH(dtable.device, embedding_backward, ids, dout, dtable);
}

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y,
                     const Tensor& rstd) {
  HLM_DISPATCH(x.device, rmsnorm_forward, x, w, eps, y, rstd);
}
void residual_rmsnorm_forward(const Tensor& x, const Tensor& d, const Tensor& w, float eps,
                              const Tensor& y, const Tensor& rstd) {
  HLM_DISPATCH(x.device, residual_rmsnorm_forward, x, d, w, eps, y, rstd);
}
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      const Tensor& dx, const Tensor& dw) {
  HLM_DISPATCH(x.device, rmsnorm_backward, dy, x, w, rstd, dx, dw);
}
void residual_rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                               const Tensor& dres, const Tensor& dw) {
  HLM_DISPATCH(x.device, residual_rmsnorm_backward, dy, x, w, rstd, dres, dw);
}
void gated_rmsnorm_forward(const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size,
                           float eps, const Tensor& y, const Tensor& rstd) {
  HLM_DISPATCH(x.device, gated_rmsnorm_forward, x, z, w, group_size, eps, y, rstd);
}
void gated_rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& z, const Tensor& w,
                            const Tensor& rstd, int64_t group_size, const Tensor& dx,
                            const Tensor& dz, const Tensor& dw) {
  HLM_DISPATCH(x.device, gated_rmsnorm_backward, dy, x, z, w, rstd, group_size, dx, dz, dw);
}

void conv1d_silu_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& doc,
                         const Tensor& y) {
  HLM_DISPATCH(x.device, conv1d_silu_forward, x, w, bias, doc, y);
}
void conv1d_silu_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& bias,
                          const Tensor& doc, const Tensor& dx, const Tensor& dw,
                          const Tensor& dbias) {
  HLM_DISPATCH(x.device, conv1d_silu_backward, dy, x, w, bias, doc, dx, dw, dbias);
}
void conv1d_silu_update(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& state,
                        const Tensor& y) {
  HLM_DISPATCH(x.device, conv1d_silu_update, x, w, bias, state, y);
}
void conv1d_state_from_sequence(const Tensor& x, const Tensor& doc, const Tensor& state) {
  HLM_DISPATCH(x.device, conv1d_state_from_sequence, x, doc, state);
}

void ssd_forward(const SsdParams& p, const Tensor& y, const Tensor& h_final) {
  HLM_DISPATCH(p.x.device, ssd_forward, p, y, h_final);
}
void ssd_backward(const SsdParams& p, const Tensor& dy, const Tensor& dh_final,
                  const SsdGrads& g) {
  HLM_DISPATCH(p.x.device, ssd_backward, p, dy, dh_final, g);
}
void ssd_step(const SsdStepParams& p, const Tensor& state, const Tensor& y) {
  HLM_DISPATCH(p.x.device, ssd_step, p, state, y);
}
void mamba_step(const MambaStepParams& p, const Tensor& conv_state, const Tensor& ssm_state,
                const MambaStepWork& work, const Tensor& out) {
  HLM_DISPATCH(p.zx.device, mamba_step, p, conv_state, ssm_state, work, out);
}

void attention_forward(const AttentionParams& p, const Tensor& out, const Tensor& lse) {
  HLM_DISPATCH(p.q.device, attention_forward, p, out, lse);
}
void attention_backward(const AttentionParams& p, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, const Tensor& dq, const Tensor& dk,
                        const Tensor& dv) {
  HLM_DISPATCH(p.q.device, attention_backward, p, out, lse, dout, dq, dk, dv);
}
void rope_apply(const Tensor& x, const Tensor& pos, float theta, int64_t rot_dim, bool inverse) {
  HLM_DISPATCH(x.device, rope_apply, x, pos, theta, rot_dim, inverse);
}
void attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                      const Tensor& start, const Tensor& len, float scale, const Tensor& out) {
  HLM_DISPATCH(q.device, attention_decode, q, k_cache, v_cache, start, len, scale, out);
}

void kv_cache_write(const Tensor& x, const Tensor& cache, const Tensor& len) {
  HLM_DISPATCH(cache.device, kv_cache_write, x, cache, len);
}

void activation_forward(Activation act, const Tensor& in, const Tensor& out) {
  HLM_DISPATCH(in.device, activation_forward, act, in, out);
}
void activation_backward(Activation act, const Tensor& in, const Tensor& dout, const Tensor& din) {
  HLM_DISPATCH(in.device, activation_backward, act, in, dout, din);
}

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int32_t ignore_index,
                           const Tensor& losses, const Tensor& lse) {
  HLM_DISPATCH(logits.device, cross_entropy_forward, logits, targets, ignore_index, losses, lse);
}
void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                            int32_t ignore_index, float scale, const Tensor& dlogits) {
  HLM_DISPATCH(logits.device, cross_entropy_backward, logits, targets, lse, ignore_index, scale,
               dlogits);
}

void adamw_step(const Tensor& params, const Tensor& grads, const Tensor& m, const Tensor& v,
                const Tensor& params_lowp, std::span<const AdamWSegment> segments,
                const AdamWHyper& hyper, float grad_scale) {
  HLM_DISPATCH(params.device, adamw_step, params, grads, m, v, params_lowp, segments, hyper,
               grad_scale);
}

}  // namespace hlm
