// CPU cross-entropy over the vocabulary with an ignore index: per-row losses and log-sum-exp
// forward, softmax-minus-onehot backward (in place allowed).
#include "ops/loss.h"

#include <limits>

#include "ops/cpu/common.h"

namespace hlm::cpu {

using namespace detail;

namespace {
const int32_t* checked_targets(const Tensor& targets, int64_t M, int64_t V, int32_t ignore_index,
                               const char* op) {
  require_cpu(targets, op, "targets");
  require_dtype(targets, DType::I32, op, "targets");
  HLM_REQUIRE(targets.is_contiguous() && targets.numel() == M, ErrorKind::Internal,
              "{}: targets {} must be contiguous with {} entries", op, targets.describe(), M);
  const int32_t* p = targets.ptr<int32_t>();
  for (int64_t m = 0; m < M; ++m)
    HLM_CHECK_ARG(p[m] == ignore_index || (p[m] >= 0 && p[m] < V),
                  "{}: target {} at position {} is outside [0, {}) and not the ignore index {}",
                  op, p[m], m, V, ignore_index);
  return p;
}
}  // namespace

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int32_t ignore_index,
                           const Tensor& losses, const Tensor& lse) {
  const char* op = "cross_entropy_forward";
  require_cpu(logits, op, "logits");
  RowView L = as_rows(logits, 1, op);
  const int64_t M = L.rows, V = L.cols;
  const int32_t* tg = checked_targets(targets, M, V, ignore_index, op);
  require_cpu(losses, op, "losses");
  require_cpu(lse, op, "lse");
  require_dtype(losses, logits.dtype, op, "losses");
  require_dtype(lse, logits.dtype, op, "lse");
  HLM_REQUIRE(losses.is_contiguous() && losses.numel() == M && lse.is_contiguous() &&
                  lse.numel() == M,
              ErrorKind::Internal, "{}: losses {} and lse {} must be contiguous with {} entries",
              op, losses.describe(), lse.describe(), M);
  with_float_type(logits.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    T* lo = losses.ptr<T>();
    T* ls = lse.ptr<T>();
#pragma omp parallel for schedule(static) if (M * V > 16384)
    for (int64_t m = 0; m < M; ++m) {
      const T* x = L.row<T>(m);
      T mx = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : mx)
      for (int64_t v = 0; v < V; ++v) mx = std::max(mx, x[v]);
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t v = 0; v < V; ++v) sum += vexp(x[v] - mx);
      const T l = mx + std::log(sum);
      ls[m] = l;
      lo[m] = tg[m] == ignore_index ? T(0) : l - x[tg[m]];
    }
  });
}

void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                            int32_t ignore_index, float scale, const Tensor& dlogits) {
  const char* op = "cross_entropy_backward";
  require_cpu(logits, op, "logits");
  require_cpu(dlogits, op, "dlogits");
  require_dtype(dlogits, logits.dtype, op, "dlogits");
  RowView L = as_rows(logits, 1, op), DL = as_rows(dlogits, 1, op);
  const int64_t M = L.rows, V = L.cols;
  HLM_REQUIRE(DL.rows == M && DL.cols == V, ErrorKind::Internal, "{}: dlogits {} must match {}",
              op, dlogits.describe(), logits.describe());
  const int32_t* tg = checked_targets(targets, M, V, ignore_index, op);
  require_cpu(lse, op, "lse");
  require_dtype(lse, logits.dtype, op, "lse");
  HLM_REQUIRE(lse.is_contiguous() && lse.numel() == M, ErrorKind::Internal,
              "{}: lse {} must be contiguous with {} entries", op, lse.describe(), M);
  with_float_type(logits.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const T* ls = lse.ptr<T>();
    const T sc = static_cast<T>(scale);
#pragma omp parallel for schedule(static) if (M * V > 16384)
    for (int64_t m = 0; m < M; ++m) {
      const T* x = L.row<T>(m);
      T* d = DL.row<T>(m);  // may alias x: each element is read before it is written
      if (tg[m] == ignore_index) {
        std::fill(d, d + V, T(0));
        continue;
      }
      const T l = ls[m];
#pragma omp simd
      for (int64_t v = 0; v < V; ++v) d[v] = sc * vexp(x[v] - l);
      d[tg[m]] -= sc;
    }
  });
}

}  // namespace hlm::cpu
