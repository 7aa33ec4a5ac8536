// CPU causal depthwise conv1d + bias + SiLU with document resets (the Mamba-2 short conv):
// forward, backward, the one-token decode update and the decode state after a prefill.
#include "ops/conv1d.h"

#include <vector>

#include "ops/cpu/common.h"

namespace hlm::cpu {

using namespace detail;

namespace {

struct ConvShape {
  int64_t B, T, C, K;
  RowView x;  // rows b*T + t
};

ConvShape conv_shape(const Tensor& x, const Tensor& w, const Tensor& bias, const char* op) {
  require_cpu(x, op, "x");
  HLM_REQUIRE(x.ndim == 3, ErrorKind::Internal, "{}: x {} must be [B,T,C]", op, x.describe());
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  require_cpu(w, op, "w");
  require_dtype(w, x.dtype, op, "w");
  HLM_REQUIRE(w.ndim == 2 && w.size(0) == C && w.size(1) >= 1 && w.is_contiguous(),
              ErrorKind::Internal, "{}: w {} must be contiguous [{},K]", op, w.describe(), C);
  if (bias.defined()) require(bias, x.dtype, {C}, op, "bias");
  return {B, T, C, w.size(1), as_rows(x, 1, op)};
}

void check_doc(const Tensor& doc, int64_t B, int64_t T, const char* op) {
  if (doc.defined()) {
    require_cpu(doc, op, "doc");
    require_dtype(doc, DType::I32, op, "doc");
    require_shape(doc, {B, T}, op, "doc");
  }
}

RowView checked_rows(const Tensor& t, const ConvShape& s, const char* op, const char* name) {
  require_cpu(t, op, name);
  require_dtype(t, s.x.dtype, op, name);
  require_shape(t, {s.B, s.T, s.C}, op, name);
  return as_rows(t, 1, op);
}

// First position of the document of each (b, t): the leftmost input a conv output may read.
std::vector<int64_t> doc_starts(const Tensor& doc, int64_t B, int64_t T) {
  std::vector<int64_t> start(static_cast<size_t>(B * T));
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* d = doc_row(doc, b);
    int64_t s = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (doc_boundary(d, t)) s = t;
      start[static_cast<size_t>(b * T + t)] = s;
    }
  }
  return start;
}

// w [C,K] transposed to [K,C] so the inner loops run over contiguous channels.
template <typename T>
std::vector<T> transpose_weights(const Tensor& w, int64_t C, int64_t K) {
  std::vector<T> wt(static_cast<size_t>(K * C));
  const T* wp = w.ptr<T>();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < K; ++k) wt[static_cast<size_t>(k * C + c)] = wp[c * K + k];
  return wt;
}

// Pre-activation u[c] = bias[c] + Σ_k w[c,k]·x[t-(K-1)+k, c] over inputs in t's document.
template <typename T>
void conv_preact(const ConvShape& s, const T* wt, const T* bias, int64_t b, int64_t t,
                 int64_t start, T* u) {
  if (bias) {
    std::copy(bias, bias + s.C, u);
  } else {
    std::fill(u, u + s.C, T(0));
  }
  for (int64_t k = std::max<int64_t>(0, start - t + s.K - 1); k < s.K; ++k) {
    const T* xr = s.x.row<T>(b * s.T + t - (s.K - 1) + k);
    const T* wk = wt + k * s.C;
#pragma omp simd
    for (int64_t c = 0; c < s.C; ++c) u[c] += wk[c] * xr[c];
  }
}

}  // namespace

void conv1d_silu_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& doc,
                         const Tensor& y) {
  const char* op = "conv1d_silu_forward";
  ConvShape s = conv_shape(x, w, bias, op);
  check_doc(doc, s.B, s.T, op);
  RowView Y = checked_rows(y, s, op, "y");
  std::vector<int64_t> start = doc_starts(doc, s.B, s.T);
  with_float_type(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> wt = transpose_weights<T>(w, s.C, s.K);
    const T* bp = bias.defined() ? bias.ptr<T>() : nullptr;
#pragma omp parallel for schedule(static) if (s.B * s.T * s.C > 16384)
    for (int64_t r = 0; r < s.B * s.T; ++r) {
      T* yr = Y.row<T>(r);
      conv_preact(s, wt.data(), bp, r / s.T, r % s.T, start[static_cast<size_t>(r)], yr);
#pragma omp simd
      for (int64_t c = 0; c < s.C; ++c) yr[c] = yr[c] * sigmoid(yr[c]);
    }
  });
}

void conv1d_silu_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& bias,
                          const Tensor& doc, const Tensor& dx, const Tensor& dw,
                          const Tensor& dbias) {
  const char* op = "conv1d_silu_backward";
  ConvShape s = conv_shape(x, w, bias, op);
  check_doc(doc, s.B, s.T, op);
  RowView DY = checked_rows(dy, s, op, "dy");
  RowView DX{};
  if (dx.defined()) DX = checked_rows(dx, s, op, "dx");
  if (dw.defined()) require(dw, x.dtype, {s.C, s.K}, op, "dw");
  if (dbias.defined()) require(dbias, x.dtype, {s.C}, op, "dbias");
  std::vector<int64_t> start = doc_starts(doc, s.B, s.T);
  const int64_t rows = s.B * s.T, C = s.C, K = s.K;
  with_float_type(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> wt = transpose_weights<T>(w, C, K);
    const T* bp = bias.defined() ? bias.ptr<T>() : nullptr;
    // du = dy · silu'(u), u recomputed.
    std::vector<T> du(static_cast<size_t>(rows * C));
#pragma omp parallel for schedule(static) if (rows * C > 16384)
    for (int64_t r = 0; r < rows; ++r) {
      T* dur = du.data() + r * C;
      conv_preact(s, wt.data(), bp, r / s.T, r % s.T, start[static_cast<size_t>(r)], dur);
      const T* g = DY.row<T>(r);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const T sg = sigmoid(dur[c]);
        dur[c] = g[c] * sg * (T(1) + dur[c] * (T(1) - sg));
      }
    }
    // dx[t'] = Σ_j du[t'+j] · w[:, K-1-j] over outputs t'+j of the same document.
    if (dx.defined()) {
#pragma omp parallel for schedule(static) if (rows * C > 16384)
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t b = r / s.T, t = r % s.T;
        T* dxr = DX.row<T>(r);
        std::fill(dxr, dxr + C, T(0));
        for (int64_t j = 0; j < K && t + j < s.T; ++j) {
          if (start[static_cast<size_t>(b * s.T + t + j)] > t) break;
          const T* dur = du.data() + (r + j) * C;
          const T* wk = wt.data() + (K - 1 - j) * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) dxr[c] += dur[c] * wk[c];
        }
      }
    }
    if (!dw.defined() && !dbias.defined()) return;
    // Weight and bias gradients: per fixed row block, [K,C] then [C], summed in block order.
    const int64_t nblocks = num_blocks(rows);
    const int64_t stride = (K + 1) * C;
    std::vector<T> partial(static_cast<size_t>(nblocks * stride), T(0));
#pragma omp parallel for schedule(static) if (rows * C > 16384)
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      T* pw = partial.data() + blk * stride;
      T* pb = pw + K * C;
      for (int64_t r = blk * kReduceBlock; r < std::min(rows, (blk + 1) * kReduceBlock); ++r) {
        const int64_t b = r / s.T, t = r % s.T;
        const T* dur = du.data() + r * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) pb[c] += dur[c];
        for (int64_t k = std::max<int64_t>(0, start[static_cast<size_t>(r)] - t + K - 1); k < K;
             ++k) {
          const T* xr = s.x.row<T>(b * s.T + t - (K - 1) + k);
          T* pk = pw + k * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) pk[c] += dur[c] * xr[c];
        }
      }
    }
    std::vector<T> total(static_cast<size_t>(stride), T(0));
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      const T* p = partial.data() + blk * stride;
#pragma omp simd
      for (int64_t i = 0; i < stride; ++i) total[static_cast<size_t>(i)] += p[i];
    }
    if (dw.defined()) {
      T* dwp = dw.ptr<T>();
      for (int64_t c = 0; c < C; ++c)
        for (int64_t k = 0; k < K; ++k) dwp[c * K + k] += total[static_cast<size_t>(k * C + c)];
    }
    if (dbias.defined()) {
      T* dbp = dbias.ptr<T>();
      for (int64_t c = 0; c < C; ++c) dbp[c] += total[static_cast<size_t>(K * C + c)];
    }
  });
}

void conv1d_silu_update(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& state,
                        const Tensor& y) {
  const char* op = "conv1d_silu_update";
  require_cpu(x, op, "x");
  HLM_REQUIRE(x.ndim == 2, ErrorKind::Internal, "{}: x {} must be [B,C]", op, x.describe());
  const int64_t B = x.size(0), C = x.size(1);
  require_cpu(w, op, "w");
  require_dtype(w, x.dtype, op, "w");
  HLM_REQUIRE(w.ndim == 2 && w.size(0) == C && w.size(1) >= 1 && w.is_contiguous(),
              ErrorKind::Internal, "{}: w {} must be contiguous [{},K]", op, w.describe(), C);
  const int64_t K = w.size(1);
  if (bias.defined()) require(bias, x.dtype, {C}, op, "bias");
  require(state, x.dtype, {B, C, K - 1}, op, "state");
  HLM_REQUIRE(state.is_contiguous(), ErrorKind::Internal, "{}: state {} must be contiguous", op,
              state.describe());
  require(y, x.dtype, {B, C}, op, "y");
  RowView X = as_rows(x, 1, op), Y = as_rows(y, 1, op);
  with_float_type(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const T* wp = w.ptr<T>();
    const T* bp = bias.defined() ? bias.ptr<T>() : nullptr;
#pragma omp parallel for schedule(static) if (B * C * K > 16384)
    for (int64_t b = 0; b < B; ++b) {
      const T* xr = X.row<T>(b);
      T* yr = Y.row<T>(b);
      for (int64_t c = 0; c < C; ++c) {
        T* st = state.ptr<T>() + (b * C + c) * (K - 1);
        const T* wc = wp + c * K;
        T u = bp ? bp[c] : T(0);
        for (int64_t k = 0; k < K - 1; ++k) u += wc[k] * st[k];
        u += wc[K - 1] * xr[c];
        yr[c] = u * sigmoid(u);
        for (int64_t k = 0; k + 1 < K - 1; ++k) st[k] = st[k + 1];
        if (K > 1) st[K - 2] = xr[c];
      }
    }
  });
}

void conv1d_state_from_sequence(const Tensor& x, const Tensor& doc, const Tensor& state) {
  const char* op = "conv1d_state_from_sequence";
  require_cpu(x, op, "x");
  HLM_REQUIRE(x.ndim == 3, ErrorKind::Internal, "{}: x {} must be [B,T,C]", op, x.describe());
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  require_cpu(state, op, "state");
  require_dtype(state, x.dtype, op, "state");
  HLM_REQUIRE(state.ndim == 3 && state.size(0) == B && state.size(1) == C && state.is_contiguous(),
              ErrorKind::Internal, "{}: state {} must be contiguous [{},{},K-1]", op,
              state.describe(), B, C);
  check_doc(doc, B, T, op);
  const int64_t Km1 = state.size(2);
  RowView X = as_rows(x, 1, op);
  with_float_type(x.dtype, op, [&](auto tag) {
    using Tt = decltype(tag);
    for (int64_t b = 0; b < B; ++b) {
      // The last document of the row starts at `first`; earlier inputs are not part of its state.
      const int32_t* d = doc_row(doc, b);
      int64_t first = 0;
      for (int64_t t = T - 1; t > 0; --t)
        if (doc_boundary(d, t)) {
          first = t;
          break;
        }
      Tt* st = state.ptr<Tt>() + b * C * Km1;
      for (int64_t j = 0; j < Km1; ++j) {
        const int64_t t = T - Km1 + j;
        const bool valid = t >= first && t >= 0;
        const Tt* xr = valid ? X.row<Tt>(b * T + t) : nullptr;
        for (int64_t c = 0; c < C; ++c) st[c * Km1 + j] = valid ? xr[c] : Tt(0);
      }
    }
  });
}

}  // namespace hlm::cpu
