// CPU Mamba-2 SSD scan: the sequential recurrence (the definition) and the chunked algorithm on
// BLAS GEMMs, each with its backward, plus the one-token decode step.
//
// Chunked algorithm, per (batch b, head h, chunk c of L ≤ Q tokens), with dt_i the clamped
// softplus, cs_i = Σ_{k≤i} dt_k·A the cumulative log-decay inside the chunk, seg_i the number of
// document starts in [chunk start, i] (seg 0 = the document that runs in from the previous chunk),
// and every decay exp(min(x, 0)):
//   intra   Y_i  = Σ_{j≤i, seg_j=seg_i} (C_i·B_j) e^{cs_i−cs_j} dt_j X_j       (M = CB ∘ L ∘ dt) X
//   inter   Y_i += e^{cs_i} C_i Hprevᵀ                          for the seg-0 prefix (i < Lc)
//   state   S    = Σ_{j ≥ j0} e^{cs_{L−1}−cs_j} dt_j X_jᵀ B_j  (j0: start of the chunk's last segment)
//   passing Hprev_{c+1} = g_c Hprev_c + S_c,  g_c = e^{cs_{L−1}} if the chunk has no document start
//           else 0;  Hprev_0 = h0 (or 0)
//   skip    Y_i += D·X_i
// The backward runs the same phases in reverse (see ssd_backward): chunk states and Hprev are
// recomputed, the state gradients dHend are passed backwards over chunks, and each chunk then
// produces dX, dB, dC, d(dt) and the decay gradients with GEMMs of the same shapes.
// C·Bᵀ is computed once per (batch, group, chunk) and shared by the group's heads.
#include "ops/ssd.h"

#include <vector>

#include "ops/cpu/common.h"

namespace hlm::cpu {

using namespace detail;

namespace {

// Validated views of the SSD inputs, T being the float type.
template <typename T>
struct SsdView {
  int64_t B = 0, T_ = 0, H = 0, P = 0, G = 0, N = 0, hpg = 0;
  RowView x{}, dt{}, Bm{}, Cm{};  // rows b*T + t
  const T* A_log = nullptr;
  const T* D = nullptr;
  const T* dt_bias = nullptr;
  const T* h0 = nullptr;  // [B,H,P,N] contiguous
  Tensor doc;
  T dt_min = 0, dt_max = 0;

  const T* xr(int64_t b, int64_t t, int64_t h) const { return x.row<T>(b * T_ + t) + h * P; }
  T dt_raw(int64_t b, int64_t t, int64_t h) const { return dt.row<T>(b * T_ + t)[h]; }
  const T* br(int64_t b, int64_t t, int64_t g) const { return Bm.row<T>(b * T_ + t) + g * N; }
  const T* cr(int64_t b, int64_t t, int64_t g) const { return Cm.row<T>(b * T_ + t) + g * N; }
  T A(int64_t h) const { return -std::exp(A_log[h]); }
  T bias(int64_t h) const { return dt_bias ? dt_bias[h] : T(0); }
};

// Checks a [B,T,...] token-major tensor whose last `inner` dims are {dims} and returns its rows.
RowView token_rows(const Tensor& t, DType dtype, std::initializer_list<int64_t> dims, int inner,
                   const char* op, const char* name) {
  require(t, dtype, dims, op, name);
  return as_rows(t, inner, name);
}

void require_state(const Tensor& t, DType dtype, int64_t B, int64_t H, int64_t P, int64_t N,
                   const char* op, const char* name) {
  require(t, dtype, {B, H, P, N}, op, name);
  HLM_REQUIRE(t.is_contiguous(), ErrorKind::Internal, "{}: {} {} must be contiguous", op, name,
              t.describe());
}

template <typename T>
SsdView<T> ssd_view(const SsdParams& p, const char* op) {
  SsdView<T> v;
  const DType dt = p.x.dtype;
  require_cpu(p.x, op, "x");
  HLM_REQUIRE(p.x.ndim == 4, ErrorKind::Internal, "{}: x {} must be [B,T,H,P]", op, p.x.describe());
  v.B = p.x.size(0);
  v.T_ = p.x.size(1);
  v.H = p.x.size(2);
  v.P = p.x.size(3);
  require_cpu(p.Bm, op, "Bm");
  HLM_REQUIRE(p.Bm.ndim == 4, ErrorKind::Internal, "{}: Bm {} must be [B,T,G,N]", op,
              p.Bm.describe());
  v.G = p.Bm.size(2);
  v.N = p.Bm.size(3);
  HLM_REQUIRE(v.G >= 1 && v.H % v.G == 0, ErrorKind::Internal,
              "{}: {} heads are not a multiple of {} groups", op, v.H, v.G);
  v.hpg = v.H / v.G;
  HLM_CHECK_ARG(p.chunk >= 1, "{}: chunk size must be positive, got {}", op, p.chunk);
  const int64_t B = v.B, L = v.T_, H = v.H, P = v.P, G = v.G, N = v.N;
  v.x = token_rows(p.x, dt, {B, L, H, P}, 2, op, "x");
  v.dt = token_rows(p.dt, dt, {B, L, H}, 1, op, "dt");
  v.Bm = token_rows(p.Bm, dt, {B, L, G, N}, 2, op, "Bm");
  v.Cm = token_rows(p.Cm, dt, {B, L, G, N}, 2, op, "Cm");
  require(p.A_log, dt, {H}, op, "A_log");
  v.A_log = p.A_log.ptr<T>();
  if (p.D.defined()) {
    require(p.D, dt, {H}, op, "D");
    v.D = p.D.ptr<T>();
  }
  if (p.dt_bias.defined()) {
    require(p.dt_bias, dt, {H}, op, "dt_bias");
    v.dt_bias = p.dt_bias.ptr<T>();
  }
  if (p.doc.defined()) {
    require(p.doc, DType::I32, {B, L}, op, "doc");
    v.doc = p.doc;
  }
  if (p.h0.defined()) {
    require_state(p.h0, dt, B, H, P, N, op, "h0");
    v.h0 = p.h0.ptr<T>();
  }
  HLM_CHECK_ARG(p.dt_min <= p.dt_max, "{}: dt_min {} exceeds dt_max {}", op, p.dt_min, p.dt_max);
  v.dt_min = static_cast<T>(p.dt_min);
  v.dt_max = static_cast<T>(p.dt_max);
  return v;
}

// dt = clamp(softplus(raw + bias), lo, hi); *dsp = d dt / d raw (0 where clamped).
template <typename T>
inline T dt_post(T raw, T bias, T lo, T hi, T* dsp) {
  const T u = raw + bias;
  const T sp = softplus(u);
  if (sp < lo || sp > hi) {
    *dsp = T(0);
    return sp < lo ? lo : hi;
  }
  *dsp = u > T(20) ? T(1) : sigmoid(u);
  return sp;
}

template <typename T>
struct SsdGradViews {
  RowView dx{}, ddt{}, dBm{}, dCm{};
  T* dA_log = nullptr;
  T* dD = nullptr;
  T* ddt_bias = nullptr;
  T* dh0 = nullptr;
};

template <typename T>
SsdGradViews<T> grad_views(const SsdView<T>& v, const SsdGrads& g, DType dt, const char* op) {
  SsdGradViews<T> o;
  const int64_t B = v.B, T_ = v.T_, H = v.H, P = v.P, G = v.G, N = v.N;
  if (g.dx.defined()) o.dx = token_rows(g.dx, dt, {B, T_, H, P}, 2, op, "dx");
  if (g.ddt.defined()) o.ddt = token_rows(g.ddt, dt, {B, T_, H}, 1, op, "ddt");
  if (g.dBm.defined()) o.dBm = token_rows(g.dBm, dt, {B, T_, G, N}, 2, op, "dBm");
  if (g.dCm.defined()) o.dCm = token_rows(g.dCm, dt, {B, T_, G, N}, 2, op, "dCm");
  if (g.dA_log.defined()) {
    require(g.dA_log, dt, {H}, op, "dA_log");
    o.dA_log = g.dA_log.ptr<T>();
  }
  if (g.dD.defined()) {
    require(g.dD, dt, {H}, op, "dD");
    o.dD = g.dD.ptr<T>();
  }
  if (g.ddt_bias.defined()) {
    require(g.ddt_bias, dt, {H}, op, "ddt_bias");
    o.ddt_bias = g.ddt_bias.ptr<T>();
  }
  if (g.dh0.defined()) {
    require_state(g.dh0, dt, B, H, P, N, op, "dh0");
    o.dh0 = g.dh0.ptr<T>();
  }
  return o;
}

// Adds per-(task, head) partials of the parameter gradients in task order: [ntasks, H, 3] holding
// dA_log, dD, ddt_bias.
template <typename T>
void reduce_param_grads(const std::vector<T>& partial, int64_t ntasks, int64_t H,
                        const SsdGradViews<T>& o) {
  for (int64_t task = 0; task < ntasks; ++task)
    for (int64_t h = 0; h < H; ++h) {
      const T* p = partial.data() + (task * H + h) * 3;
      if (o.dA_log) o.dA_log[h] += p[0];
      if (o.dD) o.dD[h] += p[1];
      if (o.ddt_bias) o.ddt_bias[h] += p[2];
    }
}

// ---------------------------------------------------------------------------------------------
// Sequential recurrence: the definition.

// One token of the recurrence for one head: state ← a·state + dt·x Bᵀ, y = state·C + D·x.
template <typename T>
inline void recurrence_step(T* state, int64_t P, int64_t N, T a, T dt, const T* x, const T* Bv,
                            const T* Cv, T Dh, T* y) {
  for (int64_t p = 0; p < P; ++p) {
    T* row = state + p * N;
    const T xdt = dt * x[p];
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t n = 0; n < N; ++n) {
      row[n] = a * row[n] + xdt * Bv[n];
      acc += row[n] * Cv[n];
    }
    if (y) y[p] = acc + Dh * x[p];
  }
}

template <typename T>
void sequential_forward(const SsdView<T>& v, const RowView& Y, T* h_final) {
  const int64_t PN = v.P * v.N;
#pragma omp parallel
  {
    std::vector<T> state(static_cast<size_t>(PN));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < v.B * v.H; ++bh) {
      const int64_t b = bh / v.H, h = bh % v.H, g = h / v.hpg;
      const int32_t* doc = doc_row(v.doc, b);
      if (v.h0) {
        std::copy(v.h0 + bh * PN, v.h0 + (bh + 1) * PN, state.begin());
      } else {
        std::fill(state.begin(), state.end(), T(0));
      }
      const T A = v.A(h), bias = v.bias(h), Dh = v.D ? v.D[h] : T(0);
      for (int64_t t = 0; t < v.T_; ++t) {
        T dsp;
        const T dt = dt_post(v.dt_raw(b, t, h), bias, v.dt_min, v.dt_max, &dsp);
        const T a = doc_boundary(doc, t) ? T(0) : std::exp(std::min(dt * A, T(0)));
        recurrence_step(state.data(), v.P, v.N, a, dt, v.xr(b, t, h), v.br(b, t, g),
                        v.cr(b, t, g), Dh, Y.row<T>(b * v.T_ + t) + h * v.P);
      }
      if (h_final) std::copy(state.begin(), state.end(), h_final + bh * PN);
    }
  }
}

// Reverse-time recurrence. With dh the gradient w.r.t. h_t (dh_final at the end):
//   dh += dy_t C_tᵀ;  dC_t += h_tᵀ dy_t;  dx_t = dt·dh B_t + D dy_t;  dB_t += dt·dhᵀ x_t;
//   d(dt) = x_tᵀ dh B_t + a·A·⟨dh, h_{t−1}⟩;  dA += a·dt·⟨dh, h_{t−1}⟩;  dh ← a·dh
// (a = 0 at a document start). States are recomputed per segment of kSeg tokens from
// checkpoints stored by a first forward pass.
template <typename T>
void sequential_backward(const SsdView<T>& v, const RowView& DY, const T* dh_final,
                         const SsdGradViews<T>& o) {
  constexpr int64_t kSeg = 64;
  const int64_t B = v.B, T_ = v.T_, H = v.H, P = v.P, N = v.N, PN = P * N;
  const int64_t nseg = num_blocks(T_, kSeg);
  // Per-head dB, dC (heads of a group are summed afterwards) and parameter partials.
  std::vector<T> dBh(static_cast<size_t>(B * H * T_ * N)), dCh(dBh.size());
  std::vector<T> partial(static_cast<size_t>(B * H * H * 3), T(0));
#pragma omp parallel
  {
    std::vector<T> ckpt(static_cast<size_t>(std::max<int64_t>(nseg, 1) * PN));
    std::vector<T> hs(static_cast<size_t>(kSeg * PN)), dh(static_cast<size_t>(PN));
    std::vector<T> dxs(static_cast<size_t>(P));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H, g = h / v.hpg;
      const int32_t* doc = doc_row(v.doc, b);
      const T A = v.A(h), bias = v.bias(h), Dh = v.D ? v.D[h] : T(0);
      auto step_at = [&](int64_t t, T* dtv, T* dspv) {
        *dtv = dt_post(v.dt_raw(b, t, h), bias, v.dt_min, v.dt_max, dspv);
        return doc_boundary(doc, t) ? T(0) : std::exp(std::min(*dtv * A, T(0)));
      };
      // Pass 1: checkpoints h_{t0−1} at each segment start.
      T* state = hs.data();
      if (v.h0) {
        std::copy(v.h0 + bh * PN, v.h0 + (bh + 1) * PN, state);
      } else {
        std::fill(state, state + PN, T(0));
      }
      for (int64_t t = 0; t < T_; ++t) {
        if (t % kSeg == 0) std::copy(state, state + PN, ckpt.data() + (t / kSeg) * PN);
        T dt, dsp;
        const T a = step_at(t, &dt, &dsp);
        recurrence_step<T>(state, P, N, a, dt, v.xr(b, t, h), v.br(b, t, g), v.cr(b, t, g), T(0),
                           nullptr);
      }
      // Pass 2: segments in reverse, states recomputed, then the reverse-time recurrence.
      if (dh_final) {
        std::copy(dh_final + bh * PN, dh_final + (bh + 1) * PN, dh.begin());
      } else {
        std::fill(dh.begin(), dh.end(), T(0));
      }
      T* dB_head = dBh.data() + bh * T_ * N;
      T* dC_head = dCh.data() + bh * T_ * N;
      T dA = 0, dD = 0, dbias = 0;
      for (int64_t sgi = nseg - 1; sgi >= 0; --sgi) {
        const int64_t t0 = sgi * kSeg, t1 = std::min(T_, t0 + kSeg);
        const T* prev = ckpt.data() + sgi * PN;
        for (int64_t t = t0; t < t1; ++t) {
          T* cur = hs.data() + (t - t0) * PN;
          std::copy(prev, prev + PN, cur);
          T dt, dsp;
          const T a = step_at(t, &dt, &dsp);
          recurrence_step<T>(cur, P, N, a, dt, v.xr(b, t, h), v.br(b, t, g), v.cr(b, t, g),
                             T(0), nullptr);
          prev = cur;
        }
        for (int64_t t = t1 - 1; t >= t0; --t) {
          const T* ht = hs.data() + (t - t0) * PN;
          const T* hprev = t > t0 ? ht - PN : ckpt.data() + sgi * PN;
          T dt, dsp;
          const T a = step_at(t, &dt, &dsp);
          const T* x = v.xr(b, t, h);
          const T* Bv = v.br(b, t, g);
          const T* Cv = v.cr(b, t, g);
          const T* dy = DY.row<T>(b * T_ + t) + h * P;
          T* dBt = dB_head + t * N;
          T* dCt = dC_head + t * N;
          std::fill(dBt, dBt + N, T(0));
          std::fill(dCt, dCt + N, T(0));
          T ddt_in = 0, dalpha = 0;
          for (int64_t p = 0; p < P; ++p) {
            T* dhr = dh.data() + p * N;
            const T* hr = ht + p * N;
            const T* hpr = hprev + p * N;
            const T dyp = dy[p], xdt = dt * x[p];
            T vp = 0, da = 0;
#pragma omp simd reduction(+ : vp, da)
            for (int64_t n = 0; n < N; ++n) {
              dhr[n] += dyp * Cv[n];
              dCt[n] += hr[n] * dyp;
              vp += dhr[n] * Bv[n];
              dBt[n] += xdt * dhr[n];
              da += dhr[n] * hpr[n];
              dhr[n] *= a;
            }
            dxs[static_cast<size_t>(p)] = dt * vp + Dh * dyp;
            ddt_in += x[p] * vp;
            dalpha += da;
            dD += dyp * x[p];
          }
          if (o.dx.data) std::copy(dxs.begin(), dxs.end(), o.dx.template row<T>(b * T_ + t) + h * P);
          const T ddt_post = ddt_in + dalpha * a * A;
          dA += dalpha * a * dt;
          const T ddt_raw = ddt_post * dsp;
          if (o.ddt.data) o.ddt.template row<T>(b * T_ + t)[h] = ddt_raw;
          dbias += ddt_raw;
        }
      }
      if (o.dh0) std::copy(dh.begin(), dh.end(), o.dh0 + bh * PN);
      T* pp = partial.data() + (bh * H + h) * 3;
      pp[0] = dA * A;
      pp[1] = dD;
      pp[2] = dbias;
    }
  }
  // Heads of a group share B and C: sum their gradients in head order.
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < B * T_; ++r) {
    const int64_t b = r / T_, t = r % T_;
    for (int64_t g = 0; g < v.G; ++g) {
      T* dB = o.dBm.data ? o.dBm.template row<T>(r) + g * N : nullptr;
      T* dC = o.dCm.data ? o.dCm.template row<T>(r) + g * N : nullptr;
      if (dB) std::fill(dB, dB + N, T(0));
      if (dC) std::fill(dC, dC + N, T(0));
      for (int64_t h = g * v.hpg; h < (g + 1) * v.hpg; ++h) {
        const T* sb = dBh.data() + ((b * H + h) * T_ + t) * N;
        const T* sc = dCh.data() + ((b * H + h) * T_ + t) * N;
        for (int64_t n = 0; n < N; ++n) {
          if (dB) dB[n] += sb[n];
          if (dC) dC[n] += sc[n];
        }
      }
    }
  }
  reduce_param_grads(partial, B * H, H, o);
}

// ---------------------------------------------------------------------------------------------
// Chunked algorithm.

// Per-(b, h, chunk) scalars: clamped dt, its derivative, cumulative log-decay, segment ids.
template <typename T>
struct ChunkScalars {
  std::vector<T> dt, dsp, cs;
  std::vector<int32_t> seg;
  int64_t t0 = 0, L = 0;
  int64_t Lc = 0;  // tokens of the document that runs in from the previous chunk (a prefix)
  int64_t j0 = 0;  // first token of the chunk's last segment
  T A = 0;
  explicit ChunkScalars(int64_t Q)
      : dt(static_cast<size_t>(Q)), dsp(dt.size()), cs(dt.size()), seg(dt.size()) {}
  T chunk_decay() const { return Lc == L ? std::exp(std::min(cs[L - 1], T(0))) : T(0); }
};

template <typename T>
void prep_chunk(const SsdView<T>& v, int64_t Q, int64_t b, int64_t h, int64_t c,
                ChunkScalars<T>& s) {
  s.t0 = c * Q;
  s.L = std::min(Q, v.T_ - s.t0);
  s.A = v.A(h);
  const T bias = v.bias(h);
  const int32_t* doc = doc_row(v.doc, b);
  T acc = 0;
  int32_t seg = 0;
  s.Lc = 0;
  for (int64_t i = 0; i < s.L; ++i) {
    const int64_t t = s.t0 + i;
    if (doc_boundary(doc, t)) ++seg;
    s.seg[i] = seg;
    if (seg == 0) ++s.Lc;
    T dsp;
    const T dt = dt_post(v.dt_raw(b, t, h), bias, v.dt_min, v.dt_max, &dsp);
    s.dt[i] = dt;
    s.dsp[i] = dsp;
    acc += dt * s.A;
    s.cs[i] = acc;
  }
  s.j0 = s.L - 1;
  while (s.j0 > 0 && s.seg[s.j0 - 1] == s.seg[s.L - 1]) --s.j0;
}

// S [P,N] = Σ_{j ≥ j0} e^{cs_{L−1}−cs_j} dt_j X_jᵀ B_j, through the scaled copy xs [L,P].
template <typename T>
void chunk_state(const SsdView<T>& v, const ChunkScalars<T>& s, int64_t b, int64_t h, T* xs,
                 T* S) {
  const int64_t P = v.P, g = h / v.hpg, rows = s.L - s.j0;
  const T cl = s.cs[s.L - 1];
  for (int64_t j = s.j0; j < s.L; ++j) {
    const T w = vexp(std::min(cl - s.cs[j], T(0))) * s.dt[j];
    const T* x = v.xr(b, s.t0 + j, h);
    T* dst = xs + (j - s.j0) * P;
#pragma omp simd
    for (int64_t p = 0; p < P; ++p) dst[p] = w * x[p];
  }
  gemm(true, false, P, v.N, rows, T(1), xs, P, v.br(b, s.t0 + s.j0, g), v.Bm.ld, T(0), S, v.N);
}

// Hprev for every chunk, in place over the chunk states: states[c] ← Hprev_c, returns via
// `run` the state after the last chunk.
template <typename T>
void pass_states(T* states, const T* decay, int64_t nc, int64_t PN, const T* h0, T* run) {
  if (h0) {
    std::copy(h0, h0 + PN, run);
  } else {
    std::fill(run, run + PN, T(0));
  }
  for (int64_t c = 0; c < nc; ++c) {
    T* st = states + c * PN;
    const T gdec = decay[c];
#pragma omp simd
    for (int64_t i = 0; i < PN; ++i) {
      const T s = st[i];
      st[i] = run[i];
      run[i] = gdec * run[i] + s;
    }
  }
}

// Chunk-local states and decays for every (b, h, c): phase 1 of forward and backward.
template <typename T>
void all_chunk_states(const SsdView<T>& v, int64_t Q, int64_t nc, std::vector<T>& states,
                      std::vector<T>& decay) {
  const int64_t PN = v.P * v.N, ntasks = v.B * v.H * nc;
  states.assign(static_cast<size_t>(ntasks * PN), T(0));
  decay.assign(static_cast<size_t>(ntasks), T(0));
#pragma omp parallel
  {
    ChunkScalars<T> s(Q);
    std::vector<T> xs(static_cast<size_t>(Q * v.P));
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < ntasks; ++task) {
      const int64_t b = task / (v.H * nc), h = (task / nc) % v.H, c = task % nc;
      prep_chunk(v, Q, b, h, c, s);
      chunk_state(v, s, b, h, xs.data(), states.data() + task * PN);
      decay[static_cast<size_t>(task)] = s.chunk_decay();
    }
  }
}

// CB [L,L] = C Bᵀ for one (b, g, chunk).
template <typename T>
void chunk_cb(const SsdView<T>& v, int64_t b, int64_t g, int64_t t0, int64_t L, int64_t Q, T* CB) {
  gemm(false, true, L, L, v.N, T(1), v.cr(b, t0, g), v.Cm.ld, v.br(b, t0, g), v.Bm.ld, T(0), CB, Q);
}

// E_ij = e^{cs_i − cs_j} for j ≤ i in the same segment, else 0 (lower triangle of [L,L], ld Q).
template <typename T>
void chunk_decay_mask(const ChunkScalars<T>& s, int64_t Q, T* E) {
  for (int64_t i = 0; i < s.L; ++i) {
    T* e = E + i * Q;
    const T ci = s.cs[i];
    const int32_t si = s.seg[i];
#pragma omp simd
    for (int64_t j = 0; j <= i; ++j)
      e[j] = s.seg[j] == si ? vexp(std::min(ci - s.cs[j], T(0))) : T(0);
    std::fill(e + i + 1, e + s.L, T(0));
  }
}

template <typename T>
void chunked_forward(const SsdView<T>& v, int64_t Q, const RowView& Y, T* h_final) {
  const int64_t B = v.B, H = v.H, P = v.P, N = v.N, PN = P * N, nc = num_blocks(v.T_, Q);
  std::vector<T> states, decay;
  all_chunk_states(v, Q, nc, states, decay);
#pragma omp parallel
  {
    std::vector<T> run(static_cast<size_t>(PN));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      pass_states(states.data() + bh * nc * PN, decay.data() + bh * nc, nc, PN,
                  v.h0 ? v.h0 + bh * PN : nullptr, run.data());
      if (h_final) std::copy(run.begin(), run.end(), h_final + bh * PN);
    }
  }
  const int64_t ntasks = B * v.G * nc;
#pragma omp parallel
  {
    ChunkScalars<T> s(Q);
    std::vector<T> CB(static_cast<size_t>(Q * Q)), M(CB.size()), Cs(static_cast<size_t>(Q * N));
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < ntasks; ++task) {
      const int64_t b = task / (v.G * nc), g = (task / nc) % v.G, c = task % nc;
      const int64_t t0 = c * Q, L = std::min(Q, v.T_ - t0);
      chunk_cb(v, b, g, t0, L, Q, CB.data());
      for (int64_t h = g * v.hpg; h < (g + 1) * v.hpg; ++h) {
        prep_chunk(v, Q, b, h, c, s);
        chunk_decay_mask(s, Q, M.data());
        for (int64_t i = 0; i < L; ++i) {
          T* m = M.data() + i * Q;
          const T* cb = CB.data() + i * Q;
#pragma omp simd
          for (int64_t j = 0; j <= i; ++j) m[j] *= cb[j] * s.dt[j];
        }
        T* y0 = Y.row<T>(b * v.T_ + t0) + h * P;
        gemm(false, false, L, P, L, T(1), M.data(), Q, v.xr(b, t0, h), v.x.ld, T(0), y0, Y.ld);
        if (s.Lc > 0 && (c > 0 || v.h0)) {
          for (int64_t i = 0; i < s.Lc; ++i) {
            const T e = vexp(std::min(s.cs[i], T(0)));
            const T* cr = v.cr(b, t0 + i, g);
            T* dst = Cs.data() + i * N;
#pragma omp simd
            for (int64_t n = 0; n < N; ++n) dst[n] = e * cr[n];
          }
          const T* Hprev = states.data() + ((b * H + h) * nc + c) * PN;
          gemm(false, true, s.Lc, P, N, T(1), Cs.data(), N, Hprev, N, T(1), y0, Y.ld);
        }
        if (v.D) {
          const T Dh = v.D[h];
          for (int64_t i = 0; i < L; ++i) {
            T* y = y0 + i * Y.ld;
            const T* x = v.xr(b, t0 + i, h);
#pragma omp simd
            for (int64_t p = 0; p < P; ++p) y[p] += Dh * x[p];
          }
        }
      }
    }
  }
}

// Chunked backward. Phases:
//  1. chunk states S_c (as the forward) and U_c = Σ_{i<Lc} e^{cs_i} dY_iᵀ C_i, per (b, h, c);
//  2. per (b, h): Hprev_c by the forward pass over chunks; dHend_c (gradient w.r.t. the state
//     after chunk c) backwards: dHend_{last} = dh_final, dHend_{c−1} = g_c dHend_c + U_c, and
//     dh0 = g_0 dHend_0 + U_0; the chunk-decay gradient g_c ⟨dHend_c, Hprev_c⟩;
//  3. per (b, g, c), heads of the group in turn:
//     dM = dY Xᵀ, dX = Mᵀ dY + e^{cs_{L−1}−cs_j} dt_j B_j dHendᵀ + D dY,
//     dCB += dM ∘ E ∘ dt,  dC = dCB B + e^{cs_i} dY Hprev,  dB = dCBᵀ C + e^{..} dt X dHend,
//     d(dt) from M and S directly, and from the cumulative decay cs through the reverse cumsum.
template <typename T>
void chunked_backward(const SsdView<T>& v, int64_t Q, const RowView& DY, const T* dh_final,
                      const SsdGradViews<T>& o) {
  const int64_t B = v.B, H = v.H, P = v.P, N = v.N, G = v.G, PN = P * N, nc = num_blocks(v.T_, Q);
  std::vector<T> states, decay;
  all_chunk_states(v, Q, nc, states, decay);
  std::vector<T> dstates(states.size()), gdec_grad(decay.size());
  const int64_t nbhc = B * H * nc;
#pragma omp parallel
  {
    ChunkScalars<T> s(Q);
    std::vector<T> Cs(static_cast<size_t>(Q * N));
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < nbhc; ++task) {
      const int64_t b = task / (H * nc), h = (task / nc) % H, c = task % nc, g = h / v.hpg;
      prep_chunk(v, Q, b, h, c, s);
      T* U = dstates.data() + task * PN;
      if (s.Lc == 0) {
        std::fill(U, U + PN, T(0));
        continue;
      }
      for (int64_t i = 0; i < s.Lc; ++i) {
        const T e = vexp(std::min(s.cs[i], T(0)));
        const T* cr = v.cr(b, s.t0 + i, g);
        T* dst = Cs.data() + i * N;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) dst[n] = e * cr[n];
      }
      gemm(true, false, P, N, s.Lc, T(1), DY.row<T>(b * v.T_ + s.t0) + h * P, DY.ld, Cs.data(), N,
           T(0), U, N);
    }
  }
#pragma omp parallel
  {
    std::vector<T> run(static_cast<size_t>(PN));
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      T* st = states.data() + bh * nc * PN;
      const T* dec = decay.data() + bh * nc;
      pass_states(st, dec, nc, PN, v.h0 ? v.h0 + bh * PN : nullptr, run.data());
      if (dh_final) {
        std::copy(dh_final + bh * PN, dh_final + (bh + 1) * PN, run.begin());
      } else {
        std::fill(run.begin(), run.end(), T(0));
      }
      for (int64_t c = nc - 1; c >= 0; --c) {
        T* ds = dstates.data() + (bh * nc + c) * PN;
        const T* hp = st + c * PN;
        const T gd = dec[c];
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < PN; ++i) {
          const T u = ds[i];
          ds[i] = run[i];
          dot += run[i] * hp[i];
          run[i] = gd * run[i] + u;
        }
        gdec_grad[static_cast<size_t>(bh * nc + c)] = gd * dot;
      }
      if (o.dh0) std::copy(run.begin(), run.end(), o.dh0 + bh * PN);
    }
  }
  const int64_t ntasks = B * G * nc;
  std::vector<T> partial(static_cast<size_t>(ntasks * H * 3), T(0));
#pragma omp parallel
  {
    ChunkScalars<T> s(Q);
    const size_t QQ = static_cast<size_t>(Q * Q), QN = static_cast<size_t>(Q * N),
                 QP = static_cast<size_t>(Q * P);
    std::vector<T> CB(QQ), E(QQ), M(QQ), dM(QQ), dCB(QQ);
    std::vector<T> dCacc(QN), dBacc(QN), W(QN), T2(QN), T1(QP), dxs(QP);
    std::vector<T> dcs(static_cast<size_t>(Q)), ddt(dcs.size()), colsum(dcs.size());
#pragma omp for schedule(dynamic)
    for (int64_t task = 0; task < ntasks; ++task) {
      const int64_t b = task / (G * nc), g = (task / nc) % G, c = task % nc;
      const int64_t t0 = c * Q, L = std::min(Q, v.T_ - t0);
      chunk_cb(v, b, g, t0, L, Q, CB.data());
      std::fill(dCB.begin(), dCB.end(), T(0));
      std::fill(dCacc.begin(), dCacc.end(), T(0));
      std::fill(dBacc.begin(), dBacc.end(), T(0));
      const T* Bc = v.br(b, t0, g);
      const T* Cc = v.cr(b, t0, g);
      for (int64_t h = g * v.hpg; h < (g + 1) * v.hpg; ++h) {
        prep_chunk(v, Q, b, h, c, s);
        const int64_t bhc = (b * H + h) * nc + c;
        const T* X = v.xr(b, t0, h);
        const T* dY = DY.row<T>(b * v.T_ + t0) + h * P;
        T* dX = o.dx.data ? o.dx.template row<T>(b * v.T_ + t0) + h * P : dxs.data();
        const int64_t lddx = o.dx.data ? o.dx.ld : P;
        std::fill(dcs.begin(), dcs.end(), T(0));
        std::fill(ddt.begin(), ddt.end(), T(0));
        // Intra-chunk: M = CB ∘ E ∘ dt_j; dM = dY Xᵀ; dX = Mᵀ dY.
        chunk_decay_mask(s, Q, E.data());
        for (int64_t i = 0; i < L; ++i) {
          T* m = M.data() + i * Q;
          const T* e = E.data() + i * Q;
          const T* cb = CB.data() + i * Q;
#pragma omp simd
          for (int64_t j = 0; j < L; ++j) m[j] = cb[j] * e[j] * s.dt[j];
        }
        gemm(false, true, L, L, P, T(1), dY, DY.ld, X, v.x.ld, T(0), dM.data(), Q);
        gemm(true, false, L, P, L, T(1), M.data(), Q, dY, DY.ld, T(0), dX, lddx);
        // F = dM ∘ CB ∘ E: column sums give d(dt_j); F·dt_j is the log-decay gradient
        // (+ to cs_i, − to cs_j). dCB accumulates dM ∘ E ∘ dt_j over the group's heads.
        std::fill(colsum.begin(), colsum.end(), T(0));
        for (int64_t i = 0; i < L; ++i) {
          const T* dm = dM.data() + i * Q;
          const T* e = E.data() + i * Q;
          const T* cb = CB.data() + i * Q;
          T* dcb = dCB.data() + i * Q;
          T rowsum = 0;
#pragma omp simd reduction(+ : rowsum)
          for (int64_t j = 0; j <= i; ++j) {
            const T de = dm[j] * e[j];
            const T f = de * cb[j];
            colsum[j] += f;
            rowsum += f * s.dt[j];
            dcb[j] += de * s.dt[j];
          }
          dcs[i] += rowsum;
        }
        for (int64_t j = 0; j < L; ++j) {
          ddt[j] += colsum[j];
          dcs[j] -= colsum[j] * s.dt[j];
        }
        // State path: S = Σ_j w_j X_jᵀ B_j with w_j = e^{cs_{L−1}−cs_j} dt_j.
        const T* dHend = dstates.data() + bhc * PN;
        const int64_t j0 = s.j0, rows = L - j0;
        gemm(false, true, rows, P, N, T(1), Bc + j0 * v.Bm.ld, v.Bm.ld, dHend, N, T(0), T1.data(), P);
        gemm(false, false, rows, N, P, T(1), X + j0 * v.x.ld, v.x.ld, dHend, N, T(0), T2.data(), N);
        const T cl = s.cs[L - 1];
        T dcl = gdec_grad[static_cast<size_t>(bhc)];
        for (int64_t j = j0; j < L; ++j) {
          const T e = vexp(std::min(cl - s.cs[j], T(0)));
          const T w = e * s.dt[j];
          const T* t1 = T1.data() + (j - j0) * P;
          const T* x = X + j * v.x.ld;
          T* dx = dX + j * lddx;
          T q = 0;
#pragma omp simd reduction(+ : q)
          for (int64_t p = 0; p < P; ++p) {
            q += x[p] * t1[p];
            dx[p] += w * t1[p];
          }
          ddt[j] += e * q;
          dcl += w * q;
          dcs[j] -= w * q;
          const T* t2 = T2.data() + (j - j0) * N;
          T* db = dBacc.data() + j * N;
#pragma omp simd
          for (int64_t n = 0; n < N; ++n) db[n] += w * t2[n];
        }
        dcs[L - 1] += dcl;
        // Inter-chunk: Y_i += e^{cs_i} C_i Hprevᵀ for i < Lc.
        if (s.Lc > 0 && (c > 0 || v.h0)) {
          const T* Hprev = states.data() + bhc * PN;
          gemm(false, false, s.Lc, N, P, T(1), dY, DY.ld, Hprev, N, T(0), W.data(), N);
          for (int64_t i = 0; i < s.Lc; ++i) {
            const T e = vexp(std::min(s.cs[i], T(0)));
            const T* w = W.data() + i * N;
            const T* cr = Cc + i * v.Cm.ld;
            T* dc = dCacc.data() + i * N;
            T ds = 0;
#pragma omp simd reduction(+ : ds)
            for (int64_t n = 0; n < N; ++n) {
              ds += cr[n] * w[n];
              dc[n] += e * w[n];
            }
            dcs[i] += e * ds;
          }
        }
        // D skip.
        T dD = 0;
        const T Dh = v.D ? v.D[h] : T(0);
        for (int64_t i = 0; i < L; ++i) {
          const T* dy = dY + i * DY.ld;
          const T* x = X + i * v.x.ld;
          T* dx = dX + i * lddx;
#pragma omp simd reduction(+ : dD)
          for (int64_t p = 0; p < P; ++p) {
            dD += dy[p] * x[p];
            dx[p] += Dh * dy[p];
          }
        }
        // cs_i = Σ_{k≤i} dt_k A: reverse cumsum, then to dt and A; then through the softplus.
        T dla = 0, dA = 0, dbias = 0;
        for (int64_t k = L - 1; k >= 0; --k) {
          dla += dcs[k];
          const T dpost = ddt[k] + dla * s.A;
          dA += dla * s.dt[k];
          const T draw = dpost * s.dsp[k];
          if (o.ddt.data) o.ddt.template row<T>(b * v.T_ + t0 + k)[h] = draw;
          dbias += draw;
        }
        T* pp = partial.data() + (task * H + h) * 3;
        pp[0] = dA * s.A;
        pp[1] = dD;
        pp[2] = dbias;
      }
      // Group gradients of B and C: dC = dCB B + dCacc, dB = dCBᵀ C + dBacc.
      if (o.dCm.data) {
        T* dC0 = o.dCm.template row<T>(b * v.T_ + t0) + g * N;
        for (int64_t i = 0; i < L; ++i)
          std::copy(dCacc.data() + i * N, dCacc.data() + (i + 1) * N, dC0 + i * o.dCm.ld);
        gemm(false, false, L, N, L, T(1), dCB.data(), Q, Bc, v.Bm.ld, T(1), dC0, o.dCm.ld);
      }
      if (o.dBm.data) {
        T* dB0 = o.dBm.template row<T>(b * v.T_ + t0) + g * N;
        for (int64_t i = 0; i < L; ++i)
          std::copy(dBacc.data() + i * N, dBacc.data() + (i + 1) * N, dB0 + i * o.dBm.ld);
        gemm(true, false, L, N, L, T(1), dCB.data(), Q, Cc, v.Cm.ld, T(1), dB0, o.dBm.ld);
      }
    }
  }
  reduce_param_grads(partial, ntasks, H, o);
}

// Output views shared by the forward entry points.
template <typename T>
void forward_outputs(const SsdView<T>& v, const Tensor& y, const Tensor& h_final, DType dt,
                     const char* op, RowView* Y, T** hf) {
  *Y = token_rows(y, dt, {v.B, v.T_, v.H, v.P}, 2, op, "y");
  *hf = nullptr;
  if (h_final.defined()) {
    require_state(h_final, dt, v.B, v.H, v.P, v.N, op, "h_final");
    *hf = h_final.ptr<T>();
  }
}

template <typename T>
void backward_inputs(const SsdView<T>& v, const Tensor& dy, const Tensor& dh_final, DType dt,
                     const char* op, RowView* DY, const T** dhf) {
  *DY = token_rows(dy, dt, {v.B, v.T_, v.H, v.P}, 2, op, "dy");
  *dhf = nullptr;
  if (dh_final.defined()) {
    require_state(dh_final, dt, v.B, v.H, v.P, v.N, op, "dh_final");
    *dhf = dh_final.ptr<T>();
  }
}

}  // namespace

void ssd_forward(const SsdParams& p, const Tensor& y, const Tensor& h_final) {
  const char* op = "ssd_forward";
  with_float_type(p.x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    SsdView<T> v = ssd_view<T>(p, op);
    RowView Y;
    T* hf;
    forward_outputs(v, y, h_final, p.x.dtype, op, &Y, &hf);
    chunked_forward(v, p.chunk, Y, hf);
  });
}

void ssd_backward(const SsdParams& p, const Tensor& dy, const Tensor& dh_final,
                  const SsdGrads& g) {
  const char* op = "ssd_backward";
  with_float_type(p.x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    SsdView<T> v = ssd_view<T>(p, op);
    RowView DY;
    const T* dhf;
    backward_inputs(v, dy, dh_final, p.x.dtype, op, &DY, &dhf);
    SsdGradViews<T> o = grad_views(v, g, p.x.dtype, op);
    chunked_backward(v, p.chunk, DY, dhf, o);
  });
}

void ssd_forward_sequential(const SsdParams& p, const Tensor& y, const Tensor& h_final) {
  const char* op = "ssd_forward_sequential";
  with_float_type(p.x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    SsdView<T> v = ssd_view<T>(p, op);
    RowView Y;
    T* hf;
    forward_outputs(v, y, h_final, p.x.dtype, op, &Y, &hf);
    sequential_forward(v, Y, hf);
  });
}

void ssd_backward_sequential(const SsdParams& p, const Tensor& dy, const Tensor& dh_final,
                             const SsdGrads& g) {
  const char* op = "ssd_backward_sequential";
  with_float_type(p.x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    SsdView<T> v = ssd_view<T>(p, op);
    RowView DY;
    const T* dhf;
    backward_inputs(v, dy, dh_final, p.x.dtype, op, &DY, &dhf);
    SsdGradViews<T> o = grad_views(v, g, p.x.dtype, op);
    sequential_backward(v, DY, dhf, o);
  });
}

void ssd_step(const SsdStepParams& p, const Tensor& state, const Tensor& y) {
  const char* op = "ssd_step";
  require_cpu(p.x, op, "x");
  HLM_REQUIRE(p.x.ndim == 3, ErrorKind::Internal, "{}: x {} must be [B,H,P]", op, p.x.describe());
  const int64_t B = p.x.size(0), H = p.x.size(1), P = p.x.size(2);
  require_cpu(p.Bm, op, "Bm");
  HLM_REQUIRE(p.Bm.ndim == 3, ErrorKind::Internal, "{}: Bm {} must be [B,G,N]", op,
              p.Bm.describe());
  const int64_t G = p.Bm.size(1), N = p.Bm.size(2);
  HLM_REQUIRE(G >= 1 && H % G == 0, ErrorKind::Internal, "{}: {} heads are not a multiple of {} groups",
              op, H, G);
  const DType dt = p.x.dtype;
  RowView X = token_rows(p.x, dt, {B, H, P}, 2, op, "x");
  RowView DT = token_rows(p.dt, dt, {B, H}, 1, op, "dt");
  RowView BM = token_rows(p.Bm, dt, {B, G, N}, 2, op, "Bm");
  RowView CM = token_rows(p.Cm, dt, {B, G, N}, 2, op, "Cm");
  RowView Y = token_rows(y, dt, {B, H, P}, 2, op, "y");
  require_state(state, dt, B, H, P, N, op, "state");
  require(p.A_log, dt, {H}, op, "A_log");
  if (p.D.defined()) require(p.D, dt, {H}, op, "D");
  if (p.dt_bias.defined()) require(p.dt_bias, dt, {H}, op, "dt_bias");
  with_float_type(dt, op, [&](auto tag) {
    using T = decltype(tag);
    const T* A_log = p.A_log.ptr<T>();
    const T* Dp = p.D.defined() ? p.D.ptr<T>() : nullptr;
    const T* bias = p.dt_bias.defined() ? p.dt_bias.ptr<T>() : nullptr;
    const T lo = static_cast<T>(p.dt_min), hi = static_cast<T>(p.dt_max);
    const int64_t hpg = H / G;
#pragma omp parallel for schedule(static) if (B * H * P * N > 16384)
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H, g = h / hpg;
      T dsp;
      const T dtv = dt_post(DT.row<T>(b)[h], bias ? bias[h] : T(0), lo, hi, &dsp);
      const T a = std::exp(std::min(dtv * -std::exp(A_log[h]), T(0)));
      recurrence_step(state.ptr<T>() + bh * P * N, P, N, a, dtv, X.row<T>(b) + h * P,
                      BM.row<T>(b) + g * N, CM.row<T>(b) + g * N, Dp ? Dp[h] : T(0),
                      Y.row<T>(b) + h * P);
    }
  });
}

}  // namespace hlm::cpu
