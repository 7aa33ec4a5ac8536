// CPU causal self-attention with GQA and document masking (forward saves the log-sum-exp, the
// backward recomputes the probabilities from it), GPT-NeoX rotary embedding, and decode attention
// over a KV cache. Scores and products go through BLAS per (batch, head, block of queries).
#include "ops/attention.h"

#include <limits>
#include <vector>

#include "ops/cpu/common.h"

namespace hlm::cpu {

using namespace detail;

namespace {

constexpr int64_t kQueryBlock = 64;

template <typename T>
struct AttnView {
  int64_t B = 0, T_ = 0, Hq = 0, Hkv = 0, E = 0, group = 0;
  RowView q{}, k{}, v{};  // rows b*T + t
  Tensor doc;
  std::vector<uint8_t> monotone;  // per row: doc ids never decrease, so a document is contiguous
  T scale = 1;
  const T* qr(int64_t b, int64_t t, int64_t h) const { return q.row<T>(b * T_ + t) + h * E; }
  const T* kr(int64_t b, int64_t t, int64_t h) const { return k.row<T>(b * T_ + t) + h * E; }
  const T* vr(int64_t b, int64_t t, int64_t h) const { return v.row<T>(b * T_ + t) + h * E; }
  // Keys a block of queries [i0, i1) may see start at klo: the start of i0's document when
  // documents are contiguous, else 0 (masking does the rest).
  int64_t key_start(int64_t b, int64_t i0) const {
    const int32_t* d = doc_row(doc, b);
    if (!d || !monotone[static_cast<size_t>(b)]) return 0;
    int64_t s = i0;
    while (s > 0 && d[s - 1] == d[i0]) --s;
    return s;
  }
};

template <typename T>
AttnView<T> attn_view(const AttentionParams& p, const char* op) {
  AttnView<T> a;
  require_cpu(p.q, op, "q");
  HLM_REQUIRE(p.q.ndim == 4, ErrorKind::Internal, "{}: q {} must be [B,T,Hq,E]", op, p.q.describe());
  a.B = p.q.size(0);
  a.T_ = p.q.size(1);
  a.Hq = p.q.size(2);
  a.E = p.q.size(3);
  require_cpu(p.k, op, "k");
  HLM_REQUIRE(p.k.ndim == 4, ErrorKind::Internal, "{}: k {} must be [B,T,Hkv,E]", op,
              p.k.describe());
  a.Hkv = p.k.size(2);
  HLM_REQUIRE(a.Hkv >= 1 && a.Hq % a.Hkv == 0, ErrorKind::Internal,
              "{}: {} query heads are not a multiple of {} KV heads", op, a.Hq, a.Hkv);
  a.group = a.Hq / a.Hkv;
  const DType dt = p.q.dtype;
  require(p.q, dt, {a.B, a.T_, a.Hq, a.E}, op, "q");
  require(p.k, dt, {a.B, a.T_, a.Hkv, a.E}, op, "k");
  require(p.v, dt, {a.B, a.T_, a.Hkv, a.E}, op, "v");
  a.q = as_rows(p.q, 2, "attention q");
  a.k = as_rows(p.k, 2, "attention k");
  a.v = as_rows(p.v, 2, "attention v");
  a.monotone.assign(static_cast<size_t>(a.B), 1);
  if (p.doc.defined()) {
    require(p.doc, DType::I32, {a.B, a.T_}, op, "doc");
    a.doc = p.doc;
    for (int64_t b = 0; b < a.B; ++b) {
      const int32_t* d = doc_row(p.doc, b);
      for (int64_t t = 1; t < a.T_; ++t)
        if (d[t] < d[t - 1]) a.monotone[static_cast<size_t>(b)] = 0;
    }
  }
  a.scale = static_cast<T>(p.scale);
  return a;
}

// Scaled scores of queries [i0, i1) against keys [klo, i1) into S [nq, nk], masked entries −inf.
template <typename T>
void block_scores(const AttnView<T>& a, int64_t b, int64_t h, int64_t i0, int64_t i1, int64_t klo,
                  T* S) {
  const int64_t nq = i1 - i0, nk = i1 - klo, hk = h / a.group;
  gemm(false, true, nq, nk, a.E, a.scale, a.qr(b, i0, h), a.q.ld, a.kr(b, klo, hk), a.k.ld, T(0),
       S, nk);
  const int32_t* d = doc_row(a.doc, b);
  const T ninf = -std::numeric_limits<T>::infinity();
  for (int64_t i = i0; i < i1; ++i) {
    T* s = S + (i - i0) * nk;
    std::fill(s + (i - klo) + 1, s + nk, ninf);  // causal
    if (d) {
      const int32_t di = d[i];
      for (int64_t j = klo; j <= i; ++j)
        if (d[j] != di) s[j - klo] = ninf;
    }
  }
}

}  // namespace

void attention_forward(const AttentionParams& p, const Tensor& out, const Tensor& lse) {
  const char* op = "attention_forward";
  with_float_type(p.q.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    AttnView<T> a = attn_view<T>(p, op);
    require(out, p.q.dtype, {a.B, a.T_, a.Hq, a.E}, op, "out");
    require(lse, p.q.dtype, {a.B, a.Hq, a.T_}, op, "lse");
    HLM_REQUIRE(lse.is_contiguous(), ErrorKind::Internal, "{}: lse {} must be contiguous", op,
                lse.describe());
    RowView O = as_rows(out, 2, "attention out");
    const int64_t nqb = num_blocks(a.T_, kQueryBlock), ntasks = a.B * a.Hq * nqb;
#pragma omp parallel
    {
      std::vector<T> S(static_cast<size_t>(kQueryBlock * a.T_));
#pragma omp for schedule(dynamic)
      for (int64_t task = 0; task < ntasks; ++task) {
        const int64_t b = task / (a.Hq * nqb), h = (task / nqb) % a.Hq, qb = task % nqb;
        const int64_t i0 = qb * kQueryBlock, i1 = std::min(a.T_, i0 + kQueryBlock);
        const int64_t klo = a.key_start(b, i0), nk = i1 - klo;
        block_scores(a, b, h, i0, i1, klo, S.data());
        T* lrow = lse.ptr<T>() + (b * a.Hq + h) * a.T_;
        for (int64_t i = i0; i < i1; ++i) {
          T* s = S.data() + (i - i0) * nk;
          T mx = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : mx)
          for (int64_t j = 0; j < nk; ++j) mx = std::max(mx, s[j]);
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t j = 0; j < nk; ++j) {
            s[j] = vexp(s[j] - mx);
            sum += s[j];
          }
          const T inv = T(1) / sum;
#pragma omp simd
          for (int64_t j = 0; j < nk; ++j) s[j] *= inv;
          lrow[i] = mx + std::log(sum);
        }
        gemm(false, false, i1 - i0, a.E, nk, T(1), S.data(), nk, a.vr(b, klo, h / a.group), a.v.ld,
             T(0), O.row<T>(b * a.T_ + i0) + h * a.E, O.ld);
      }
    }
  });
}

void attention_backward(const AttentionParams& p, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, const Tensor& dq, const Tensor& dk,
                        const Tensor& dv) {
  const char* op = "attention_backward";
  with_float_type(p.q.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    AttnView<T> a = attn_view<T>(p, op);
    const DType dt = p.q.dtype;
    const int64_t B = a.B, T_ = a.T_, Hq = a.Hq, Hkv = a.Hkv, E = a.E;
    require(out, dt, {B, T_, Hq, E}, op, "out");
    require(dout, dt, {B, T_, Hq, E}, op, "dout");
    require(lse, dt, {B, Hq, T_}, op, "lse");
    HLM_REQUIRE(lse.is_contiguous(), ErrorKind::Internal, "{}: lse {} must be contiguous", op,
                lse.describe());
    RowView O = as_rows(out, 2, "attention out"), DO = as_rows(dout, 2, "attention dout");
    RowView DQ{}, DK{}, DV{};
    if (dq.defined()) {
      require(dq, dt, {B, T_, Hq, E}, op, "dq");
      DQ = as_rows(dq, 2, "attention dq");
    }
    if (dk.defined()) {
      require(dk, dt, {B, T_, Hkv, E}, op, "dk");
      DK = as_rows(dk, 2, "attention dk");
    }
    if (dv.defined()) {
      require(dv, dt, {B, T_, Hkv, E}, op, "dv");
      DV = as_rows(dv, 2, "attention dv");
    }
    // Per query head dK, dV (summed over the KV group afterwards, in head order).
    const size_t per_head = static_cast<size_t>(T_ * E);
    std::vector<T> dkh(static_cast<size_t>(B * Hq) * per_head),
        dvh(static_cast<size_t>(B * Hq) * per_head);
    const int64_t nqb = num_blocks(T_, kQueryBlock);
#pragma omp parallel
    {
      const size_t blk = static_cast<size_t>(kQueryBlock * T_);
      std::vector<T> S(blk), dP(blk), dqs(static_cast<size_t>(kQueryBlock * E)),
          Di(static_cast<size_t>(kQueryBlock));
#pragma omp for schedule(dynamic)
      for (int64_t bh = 0; bh < B * Hq; ++bh) {
        const int64_t b = bh / Hq, h = bh % Hq, hk = h / a.group;
        T* dK = dkh.data() + static_cast<size_t>(bh) * per_head;
        T* dV = dvh.data() + static_cast<size_t>(bh) * per_head;
        std::fill(dK, dK + per_head, T(0));
        std::fill(dV, dV + per_head, T(0));
        const T* lrow = lse.ptr<T>() + bh * T_;
        for (int64_t qb = 0; qb < nqb; ++qb) {
          const int64_t i0 = qb * kQueryBlock, i1 = std::min(T_, i0 + kQueryBlock);
          const int64_t nq = i1 - i0, klo = a.key_start(b, i0), nk = i1 - klo;
          block_scores(a, b, h, i0, i1, klo, S.data());
          const T* dO = DO.row<T>(b * T_ + i0) + h * E;
          gemm(false, true, nq, nk, E, T(1), dO, DO.ld, a.vr(b, klo, hk), a.v.ld, T(0), dP.data(),
               nk);
          for (int64_t i = 0; i < nq; ++i) {
            const T* o = O.row<T>(b * T_ + i0 + i) + h * E;
            const T* g = dO + i * DO.ld;
            T d = 0;
#pragma omp simd reduction(+ : d)
            for (int64_t e = 0; e < E; ++e) d += g[e] * o[e];
            Di[static_cast<size_t>(i)] = d;
          }
          for (int64_t i = 0; i < nq; ++i) {
            T* s = S.data() + i * nk;
            T* dp = dP.data() + i * nk;
            const T l = lrow[i0 + i], d = Di[static_cast<size_t>(i)];
#pragma omp simd
            for (int64_t j = 0; j < nk; ++j) {
              s[j] = vexp(s[j] - l);        // P
              dp[j] = s[j] * (dp[j] - d);  // dS (unscaled)
            }
          }
          T* dQ = DQ.data ? DQ.row<T>(b * T_ + i0) + h * E : dqs.data();
          gemm(false, false, nq, E, nk, a.scale, dP.data(), nk, a.kr(b, klo, hk), a.k.ld, T(0), dQ,
               DQ.data ? DQ.ld : E);
          gemm(true, false, nk, E, nq, a.scale, dP.data(), nk, a.qr(b, i0, h), a.q.ld, T(1),
               dK + klo * E, E);
          gemm(true, false, nk, E, nq, T(1), S.data(), nk, dO, DO.ld, T(1), dV + klo * E, E);
        }
      }
    }
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < B * T_; ++r) {
      const int64_t b = r / T_, t = r % T_;
      for (int64_t hk = 0; hk < Hkv; ++hk) {
        T* k_out = DK.data ? DK.row<T>(r) + hk * E : nullptr;
        T* v_out = DV.data ? DV.row<T>(r) + hk * E : nullptr;
        if (k_out) std::fill(k_out, k_out + E, T(0));
        if (v_out) std::fill(v_out, v_out + E, T(0));
        for (int64_t h = hk * a.group; h < (hk + 1) * a.group; ++h) {
          const size_t off = static_cast<size_t>(b * Hq + h) * per_head + static_cast<size_t>(t * E);
          for (int64_t e = 0; e < E; ++e) {
            if (k_out) k_out[e] += dkh[off + static_cast<size_t>(e)];
            if (v_out) v_out[e] += dvh[off + static_cast<size_t>(e)];
          }
        }
      }
    }
  });
}

void rope_apply(const Tensor& x, const Tensor& pos, float theta, int64_t rot_dim, bool inverse) {
  const char* op = "rope_apply";
  require_cpu(x, op, "x");
  HLM_REQUIRE(x.ndim == 4, ErrorKind::Internal, "{}: x {} must be [B,T,H,E]", op, x.describe());
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), E = x.size(3);
  HLM_CHECK_ARG(rot_dim >= 0 && rot_dim <= E && rot_dim % 2 == 0,
                "{}: rotary dim {} must be even and at most the head dim {}", op, rot_dim, E);
  HLM_CHECK_ARG(theta > 0, "{}: rope theta must be positive, got {}", op, theta);
  require(pos, DType::I32, {B, T}, op, "pos");
  if (rot_dim == 0) return;
  RowView X = as_rows(x, 2, "rope x");
  const int64_t half = rot_dim / 2;
  // inv_freq_i = θ^(−2i/rot_dim); angles in double, then cos / sin in the tensor's type.
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    inv_freq[static_cast<size_t>(i)] =
        std::pow(static_cast<double>(theta), -2.0 * static_cast<double>(i) / static_cast<double>(rot_dim));
  const double sign = inverse ? -1.0 : 1.0;
  with_float_type(x.dtype, op, [&](auto tag) {
    using Tt = decltype(tag);
#pragma omp parallel
    {
      std::vector<Tt> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < B * T; ++r) {
        const int64_t b = r / T, t = r % T;
        const double ps = static_cast<double>(pos.ptr<int32_t>()[b * pos.stride[0] + t * pos.stride[1]]);
        for (int64_t i = 0; i < half; ++i) {
          const double ang = ps * inv_freq[static_cast<size_t>(i)];
          cs[static_cast<size_t>(i)] = static_cast<Tt>(std::cos(ang));
          sn[static_cast<size_t>(i)] = static_cast<Tt>(sign * std::sin(ang));
        }
        for (int64_t h = 0; h < H; ++h) {
          Tt* v = X.row<Tt>(r) + h * E;
#pragma omp simd
          for (int64_t i = 0; i < half; ++i) {
            const Tt x1 = v[i], x2 = v[i + half];
            v[i] = x1 * cs[static_cast<size_t>(i)] - x2 * sn[static_cast<size_t>(i)];
            v[i + half] = x2 * cs[static_cast<size_t>(i)] + x1 * sn[static_cast<size_t>(i)];
          }
        }
      }
    }
  });
}

void attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                      const Tensor& start, const Tensor& len, float scale, const Tensor& out) {
  const char* op = "attention_decode";
  require_cpu(q, op, "q");
  HLM_REQUIRE(q.ndim == 3, ErrorKind::Internal, "{}: q {} must be [B,Hq,E]", op, q.describe());
  const int64_t B = q.size(0), Hq = q.size(1), E = q.size(2);
  require_cpu(k_cache, op, "k_cache");
  HLM_REQUIRE(k_cache.ndim == 4, ErrorKind::Internal, "{}: k_cache {} must be [B,S,Hkv,E]", op,
              k_cache.describe());
  const int64_t S = k_cache.size(1), Hkv = k_cache.size(2);
  HLM_REQUIRE(Hkv >= 1 && Hq % Hkv == 0, ErrorKind::Internal,
              "{}: {} query heads are not a multiple of {} KV heads", op, Hq, Hkv);
  const DType dt = q.dtype;
  require(k_cache, dt, {B, S, Hkv, E}, op, "k_cache");
  require(v_cache, dt, {B, S, Hkv, E}, op, "v_cache");
  require(out, dt, {B, Hq, E}, op, "out");
  require(start, DType::I32, {B}, op, "start");
  require(len, DType::I32, {B}, op, "len");
  const int32_t* st = start.ptr<int32_t>();
  const int32_t* ln = len.ptr<int32_t>();
  for (int64_t b = 0; b < B; ++b) {
    const int32_t s0 = st[b * start.stride[0]], s1 = ln[b * len.stride[0]];
    HLM_CHECK_ARG(s0 >= 0 && s1 <= S && s0 <= s1,
                  "{}: row {}: cache range [{}, {}) is not inside [0, {})", op, b, s0, s1, S);
  }
  RowView Q = as_rows(q, 2, "decode q"), O = as_rows(out, 2, "decode out");
  RowView K = as_rows(k_cache, 2, "decode k_cache"), V = as_rows(v_cache, 2, "decode v_cache");
  const int64_t group = Hq / Hkv;
  with_float_type(dt, op, [&](auto tag) {
    using T = decltype(tag);
    const T sc = static_cast<T>(scale);
#pragma omp parallel
    {
      std::vector<T> w(static_cast<size_t>(S));
#pragma omp for schedule(static)
      for (int64_t bh = 0; bh < B * Hq; ++bh) {
        const int64_t b = bh / Hq, h = bh % Hq, hk = h / group;
        const int64_t s0 = st[b * start.stride[0]], s1 = ln[b * len.stride[0]];
        const T* qv = Q.row<T>(b) + h * E;
        T* o = O.row<T>(b) + h * E;
        std::fill(o, o + E, T(0));
        if (s1 <= s0) continue;
        T mx = -std::numeric_limits<T>::infinity();
        for (int64_t s = s0; s < s1; ++s) {
          const T* kv = K.row<T>(b * S + s) + hk * E;
          T d = 0;
#pragma omp simd reduction(+ : d)
          for (int64_t e = 0; e < E; ++e) d += qv[e] * kv[e];
          w[static_cast<size_t>(s)] = sc * d;
          mx = std::max(mx, sc * d);
        }
        T sum = 0;
        for (int64_t s = s0; s < s1; ++s) {
          w[static_cast<size_t>(s)] = vexp(w[static_cast<size_t>(s)] - mx);
          sum += w[static_cast<size_t>(s)];
        }
        const T inv = T(1) / sum;
        for (int64_t s = s0; s < s1; ++s) {
          const T* vv = V.row<T>(b * S + s) + hk * E;
          const T pw = w[static_cast<size_t>(s)] * inv;
#pragma omp simd
          for (int64_t e = 0; e < E; ++e) o[e] += pw * vv[e];
        }
      }
    }
  });
}

}  // namespace hlm::cpu
