// Shared pieces of the CUDA SSD kernels: the launch descriptor, per-chunk dt / decay scan, tile
// loads, and the launchers each ssd_*.cu file instantiates. See ssd.cu for the algorithm.
#pragma once

#include <cstdlib>

#include <cstdint>

#include "ops/cuda/warp_mma.cuh"

namespace hlm::cuda::ssd {

using mma::bf16_t;

// Unroll factor of the k loops of the per-chunk products: full unrolling made the forward's chunk
// loop ~50 KB of SASS (more than the instruction caches close to the warps hold); the accumulator
// chains along k are sequential anyway, so 2 keeps the next fragment loads overlapped.
constexpr int kKUnroll = 2;

// Longest piece (chunks) of the segment-state products: its per-token coefficients sit in shared
// memory (64 chunks of 64 tokens: 16 KB).
constexpr int kMaxPieceChunks = 64;

// Element type of a scalar-valued tensor read or written one element at a time.
enum ScalarType : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

__device__ __forceinline__ float load_any(const void* p, int type, int64_t i) {
  if (type == kBF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  if (type == kF16) return __half2float(static_cast<const __half*>(p)[i]);
  return static_cast<const float*>(p)[i];
}
__device__ __forceinline__ void store_any(void* p, int type, int64_t i, float v) {
  if (type == kBF16)
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  else if (type == kF16)
    static_cast<__half*>(p)[i] = __float2half_rn(v);
  else
    static_cast<float*>(p)[i] = v;
}

// The state's 16-byte load and store (decode steps), optionally with the streaming (evict-first)
// cache hints: every element is read and written once per token.
__device__ __forceinline__ float4 load_state(const float4* p, bool stream) {
#ifndef HLM_CUDA_EMU
  if (stream) return __ldcs(p);
#endif
  (void)stream;
  return *p;
}
__device__ __forceinline__ void store_state(float4* p, const float4& v, bool stream) {
#ifndef HLM_CUDA_EMU
  if (stream) {
    __stcs(p, v);
    return;
  }
#endif
  (void)stream;
  *p = v;
}

// Host side of the SSD-family ops (SSD, conv1d, decode steps): a scalar tensor's ScalarType, with
// a clear error naming the op and the tensor for any other dtype.
inline int scalar_type(const Tensor& t, const char* op, const char* what) {
  switch (t.dtype) {
    case DType::F32: return kF32;
    case DType::BF16: return kBF16;
    case DType::F16: return kF16;
    default: fail(ErrorKind::Unsupported, "{} (CUDA): {} has dtype {}; expected F32, BF16 or F16", op, what, dtype_name(t.dtype));
  }
}
// An integer knob for A/B runs, read from the environment on each call.
inline int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

// One descriptor for every SSD kernel. Activations are row views: row b*T + t, `ld` elements apart;
// the column of (h, p) is h*P + p, of (g, n) g*N + n, of dt's h just h.
struct SsdArgs {
  const void* x = nullptr;
  int64_t ld_x = 0;
  const void* dt = nullptr;
  int64_t ld_dt = 0;
  int dt_type = kF32;
  const void* Bm = nullptr;
  int64_t ld_B = 0;
  const void* Cm = nullptr;
  int64_t ld_C = 0;
  const void* A_log = nullptr;
  int A_type = kF32;
  const void* D = nullptr;  // optional
  int D_type = kF32;
  const void* dt_bias = nullptr;  // optional
  int bias_type = kF32;
  const int32_t* doc = nullptr;  // optional, [B, T] rows ld_doc apart
  int64_t ld_doc = 0;
  const float* h0 = nullptr;  // optional, [B,H,P,N] contiguous
  int B = 0, T = 0, H = 0, G = 0, P = 0, N = 0;
  float dt_min = 0.f, dt_max = 0.f;
  // forward outputs
  void* y = nullptr;
  int64_t ld_y = 0;
  float* h_final = nullptr;  // optional
  // backward inputs / outputs (each output optional)
  const void* dy = nullptr;
  int64_t ld_dy = 0;
  const float* dh_final = nullptr;
  void* dx = nullptr;
  int64_t ld_dx = 0;
  void* ddt = nullptr;
  int64_t ld_ddt = 0;
  int ddt_type = kF32;
  void* dBm = nullptr;
  int64_t ld_dB = 0;
  void* dCm = nullptr;
  int64_t ld_dC = 0;
  float* dh0 = nullptr;
  // workspace of the backward: states entering / gradients leaving each chunk, [B,H,C,P,N] bf16,
  // and per-(b, chunk, h) partial sums of dA, dD, ddt_bias. With core_states each [P,N] state is
  // stored as 8 x 8 core matrices (StateFrag::store_bf16_core) for the wgmma chunk kernels.
  bf16_t* ws_hin = nullptr;
  bf16_t* ws_dhout = nullptr;
  bool core_states = false;
  bool ws_late_copy = false;  // forward variant 2: y copy-out under the Yo product (HLM_SSD_WS_LATE_COPY)
  float* ws_part = nullptr;
  int nchunks = 0;
  // Chunk-parallel split: the chunks of a row are cut into nseg segments of seg_chunks chunks, and
  // each segment into pps pieces of piece_chunks chunks (the last ones may be shorter or empty).
  // Direction 0 (states) needs the pieces of segments 0 .. nseg-2, direction 1 (state gradients)
  // those of segments 1 .. nseg-1: piece slot s' = s - dir. ws_piece [ndir][B][nseg-1][pps][H][P][N]
  // fp32 holds each piece's local state (from zero), ws_piece_gamma [ndir][B][nseg-1][pps][H] its
  // total decay; the state pass turns them into ws_seg [ndir][B][nseg][H][P][N]: the state entering
  // (direction 0) or the gradient leaving (direction 1) each segment.
  int nseg = 1, seg_chunks = 0;
  int pps = 1, piece_chunks = 0;
  // Forward walk: 1 the wgmma walk (sm_90a, P = 64), 2 its warp-specialised form (also heads per
  // group even), 3 that with the consumers' chunk reordered, 4 3 with y stored by TMA, 5 (the sm_90
  // default) 4 with x, B and C loaded by TMA (ssd.cu's forward_variant); mma.sync block shapes (P <= 64 only; else
  // 11): 11 one head, 8 warps (2 blocks/SM); 21 two heads per warp, 8 warps; 12 one head per group
  // of 8 warps, 16 warps. Heads of one group.
  int fwd_variant = 11;
  // Backward chunk gradients: 0 the mma.sync kernel (ssd_bwd.cu), 1 the wgmma kernel, 2 its
  // warp-specialised form (ssd_bwd_wg.cu; sm_90a, P = 64).
  int bwd_variant = 0;
  int sweep_heads = 1;  // heads per sweep block: 2 (of one group, on 16 warps) or 1
  float* ws_seg = nullptr;
  float* ws_piece = nullptr;
  float* ws_piece_gamma = nullptr;
};

// Offset (floats) of the [P, N] state of (dir, b, segment s, h) in SsdArgs::ws_seg.
__host__ __device__ __forceinline__ int64_t seg_state_offset(const SsdArgs& a, int dir, int b, int s, int h) {
  return (((static_cast<int64_t>(dir) * a.B + b) * a.nseg + s) * a.H + h) * a.P * a.N;
}
// Index of (dir, b, piece slot s' = s - dir, piece j, h) in ws_piece_gamma; times P N in ws_piece.
__host__ __device__ __forceinline__ int64_t piece_index(const SsdArgs& a, int dir, int b, int sp, int j, int h) {
  return (((static_cast<int64_t>(dir) * a.B + b) * (a.nseg - 1) + sp) * a.pps + j) * a.H + h;
}

// Head h's A = -exp(A_log) and dt bias (0 without one).
__device__ __forceinline__ float head_A(const SsdArgs& a, int h) { return -expf(load_any(a.A_log, a.A_type, h)); }
__device__ __forceinline__ float head_bias(const SsdArgs& a, int h) {
  return a.dt_bias ? load_any(a.dt_bias, a.bias_type, h) : 0.f;
}

// dt = clamp(softplus(raw + bias), dt_min, dt_max); dsp = d dt / d raw (zero where clamped).
__device__ __forceinline__ void dt_from_raw(float raw, float bias, float dt_min, float dt_max,
                                            float* dt, float* dsp) {
  float u = raw + bias;
  float sp = u > 20.f ? u : log1pf(expf(u));
  float sig = 1.f / (1.f + expf(-u));
  if (sp < dt_min) {
    *dt = dt_min;
    *dsp = 0.f;
  } else if (sp > dt_max) {
    *dt = dt_max;
    *dsp = 0.f;
  } else {
    *dt = sp;
    *dsp = sig;
  }
}

// Per-chunk scalars of one head, computed by one warp (chunk_scan_warp).
// cum[t] = sum_{r<=t} dt_r A (fp32, within the chunk); seg[t] = number of document boundaries in
// (chunk start .. t]; w[s] = decay from s to the chunk end (0 across a boundary); eoff[t] = decay
// from the chunk start to t (0 after a boundary); gamma = decay over the whole chunk.
template <int Q>
struct ChunkScan {
  float dt[Q], dsp[Q], cum[Q], w[Q], eoff[Q], wdt[Q];
  int seg[Q];
  float gamma;
  float pad_[3];
};

// One warp's scan of a head's chunk, in registers: lane l holds tokens E l .. E l + E - 1 (E = Q /
// 32) — dt (and d dt / d raw), cum and seg as ChunkScan defines them — and every lane the chunk's
// totals cend = cum[Q - 1], send = seg[Q - 1].
template <int Q>
struct ScanLanes {
  static constexpr int E = Q / 32;
  float dt[E], dsp[E], cum[E];
  int sg[E];
  float cend;
  int send;
};
template <int Q>
__device__ __forceinline__ ScanLanes<Q> chunk_scan_lanes(const float* raw, const int* bnd, int len, float A,
                                                         float bias, float dt_min, float dt_max) {
  static_assert(Q % 32 == 0, "chunk must be a multiple of 32");
  constexpr int E = Q / 32;
  const int lane = mma::lane_id();
  ScanLanes<Q> l;
  float run = 0.f;
  int srun = 0;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    int t = lane * E + e;
    if (t < len) {
      dt_from_raw(raw[t], bias, dt_min, dt_max, &l.dt[e], &l.dsp[e]);
      srun += bnd[t];
    } else {
      l.dt[e] = 0.f;
      l.dsp[e] = 0.f;
    }
    run += l.dt[e] * A;
    l.cum[e] = run;
    l.sg[e] = srun;
  }
  float inc = run;
  int sinc = srun;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    float v = __shfl_up_sync(0xffffffffu, inc, off);
    int sv = __shfl_up_sync(0xffffffffu, sinc, off);
    if (lane >= off) {
      inc += v;
      sinc += sv;
    }
  }
  float excl = __shfl_up_sync(0xffffffffu, inc, 1);
  int sexcl = __shfl_up_sync(0xffffffffu, sinc, 1);
  if (lane == 0) {
    excl = 0.f;
    sexcl = 0;
  }
#pragma unroll
  for (int e = 0; e < E; ++e) {
    l.cum[e] += excl;
    l.sg[e] += sexcl;
  }
  l.cend = __shfl_sync(0xffffffffu, l.cum[E - 1], 31);
  l.send = __shfl_sync(0xffffffffu, l.sg[E - 1], 31);
  return l;
}

// kGrad = false (forward, sweeps): d dt / d raw is not needed (left unwritten) and the decays use
// the fast exponential (arguments <= 0, results in [0, 1]: absolute error ~1e-7).
template <int Q, bool kGrad = true>
__device__ __forceinline__ void chunk_scan_warp(ChunkScan<Q>& s, const float* raw, const int* bnd,
                                                int len, float A, float bias, float dt_min,
                                                float dt_max) {
  constexpr int E = Q / 32;
  const int lane = mma::lane_id();
  const ScanLanes<Q> l = chunk_scan_lanes<Q>(raw, bnd, len, A, bias, dt_min, dt_max);
  const float cend = l.cend;
  const int send = l.send;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    int t = lane * E + e;
    s.dt[t] = l.dt[e];
    if constexpr (kGrad) s.dsp[t] = l.dsp[e];
    s.cum[t] = l.cum[e];
    s.seg[t] = l.sg[e];
    const float w = l.sg[e] == send ? (kGrad ? expf(fminf(cend - l.cum[e], 0.f)) : __expf(fminf(cend - l.cum[e], 0.f)))
                                    : 0.f;
    s.w[t] = w;
    s.wdt[t] = w * l.dt[e];
    s.eoff[t] = l.sg[e] == 0 ? (kGrad ? expf(fminf(l.cum[e], 0.f)) : __expf(fminf(l.cum[e], 0.f))) : 0.f;
  }
  if (lane == 0) s.gamma = send == 0 ? (kGrad ? expf(fminf(cend, 0.f)) : __expf(fminf(cend, 0.f))) : 0.f;
}

// The forward walk's scan in factored form (variant 7), one head per warp, chunks in order. The
// walk keeps its state scaled: the accumulators hold H / Gam, Gam the product of the chunks' decays
// since the last rescale (`gam`, carried by the caller from chunk to chunk, 1 at a segment start),
// so a chunk whose decay only lowers Gam needs no pass over the accumulators. Per chunk c (Gam_in
// entering it, Gam_out leaving it):
//   H/Gam_out = rho H/Gam_in + (x wdt)ᵀ B:  rho = 1 and Gam_out = Gam_in gamma while that stays >=
//             kFactorGamFloor in a fast chunk; else rho = Gam_in gamma (0 across a boundary) and
//             Gam_out = 1. wdt[t] = w[t] dt[t] / Gam_out.
//   fast chunks (Gam_in exp(cum_end) >= kFactorFastFloor; kFastChunk): M[t, s] = exp(cum_t - cum_s)
//             dt_s G[t, s] = pre[t] fcol[s] G[t, s], with pre[t] = exp(cum_t) Gam_in and fcol[s] =
//             exp(-cum_s) dt_s / Gam_in, so y[t] = pre[t] (C_t (H/Gam_in) + sum_s fcol[s] G[t, s]
//             x[s]): one multiplication per element of M and no exponential. With a document
//             boundary in the chunk (kFastDocChunk; cum runs on across it, as ChunkScan's) the same,
//             with M masked to s and t in one document (seg) and C_t (H/Gam_in) to the rows t of
//             the first (seg[t] = 0).
//   steep chunks without a boundary (kFastMidChunk: too steep for the above, cum_end >= -150 and
//             sigma = exp(cum_end / 2) Gam_in >= kFactorSigmaFloor): the factors taken about the
//             chunk's middle, pre[t] = exp(cum_t - cum_end / 2), fcol[s] = exp(cum_end / 2 -
//             cum_s) dt_s, and Yo's rows scaled by sigma before the y product: y[t] = pre[t]
//             (sigma C_t (H/Gam_in) + sum_s fcol[s] G[t, s] x[s]).
//   other chunks (kExactChunk): M as ChunkScan's (dt, cum, seg) and y[t] = pre[t] C_t (H/Gam_in) +
//             (M x)[t], with pre[t] = eoff[t] Gam_in.
// The floors keep the factors normal floats: pre >= e^-75, fcol <= e^75 dt. A chunk after a
// rescale (Gam_in = 1, as after every boundary) is fast if exp(cum_end) >= e^-75, and kFastMidChunk
// down to e^-150.
constexpr float kFactorFastFloor = 0x1p-108f;   // ~e^-75
constexpr float kFactorSigmaFloor = 0x1p-100f;  // ~e^-69
constexpr float kFactorGamFloor = 0x1p-40f;
enum FactoredChunk : int { kExactChunk = 0, kFastChunk = 1, kFastDocChunk = 2, kFastMidChunk = 3 };
template <int Q>
struct FactoredScan {
  float dt[Q], cum[Q], pre[Q], wdt[Q], fcol[Q];
  int seg[Q];
  float rho, gam;  // the accumulators' factor before this chunk's update (1: none); Gam_out
  int fast;        // the chunk's kind: kExactChunk, kFastChunk, kFastDocChunk, kFastMidChunk
  float sigma;     // kFastMidChunk: Yo's factor
};
template <int Q>
__device__ __forceinline__ void chunk_scan_factored_warp(FactoredScan<Q>& s, const float* raw, const int* bnd, int len,
                                                         float A, float bias, float dt_min, float dt_max, float& gam) {
  constexpr int E = Q / 32;
  const int lane = mma::lane_id();
  const ScanLanes<Q> l = chunk_scan_lanes<Q>(raw, bnd, len, A, bias, dt_min, dt_max);
  const float decay = __expf(fminf(l.cend, 0.f));  // over the chunk, across boundaries
  const float gamma = l.send == 0 ? decay : 0.f;
  const float g_in = gam, gg = g_in * gamma;
  const bool fast = g_in * decay >= kFactorFastFloor;
  const float half_cend = 0.5f * fmaxf(l.cend, -150.f);
  const float sigma = __expf(half_cend) * g_in;
  const bool mid = !fast && l.send == 0 && l.cend >= -150.f && sigma >= kFactorSigmaFloor;
  const bool keep = fast && gg >= kFactorGamFloor;  // gg = 0 across a boundary
  const float rho = keep ? 1.f : gg, g_out = keep ? gg : 1.f;
  const float inv_in = 1.f / g_in, inv_out = 1.f / g_out;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int t = lane * E + e;
    const float cum = l.cum[e], dt = l.dt[e];
    s.dt[t] = dt;
    s.cum[t] = cum;
    s.seg[t] = l.sg[e];
    const float w = l.sg[e] == l.send ? __expf(fminf(l.cend - cum, 0.f)) : 0.f;
    s.wdt[t] = w * dt * inv_out;
    s.pre[t] = mid ? __expf(cum - half_cend) : (fast || l.sg[e] == 0 ? __expf(fminf(cum, 0.f)) : 0.f) * g_in;
    s.fcol[t] = mid ? __expf(half_cend - cum) * dt : fast ? __expf(-cum) * dt * inv_in : 0.f;
  }
  if (lane == 0) {
    s.rho = rho;
    s.gam = g_out;
    s.fast = mid ? kFastMidChunk : fast ? (l.send == 0 ? kFastChunk : kFastDocChunk) : kExactChunk;
    s.sigma = sigma;
  }
  gam = g_out;
}

// Raw dt and document-boundary flag of position t of row b (zero past the row end).
__device__ __forceinline__ float raw_dt_at(const SsdArgs& a, int b, int t, int h) {
  if (t >= a.T) return 0.f;
  return load_any(a.dt, a.dt_type, (static_cast<int64_t>(b) * a.T + t) * a.ld_dt + h);
}
__device__ __forceinline__ int boundary_at(const SsdArgs& a, int b, int t) {
  if (a.doc == nullptr || t <= 0 || t >= a.T) return 0;
  const int32_t* d = a.doc + static_cast<int64_t>(b) * a.ld_doc;
  return d[t] != d[t - 1] ? 1 : 0;
}

// Queues cp.async copies of rows [row0, row0 + kRows) x columns [0, kCols) of a bf16 row view
// into S (pitch kLd); rows >= valid_rows are zero-filled. Thread i copies the 16-byte pieces
// i, i + kThreads, ...: one row and column for the thread, rows kThreads / (kCols / 8) apart, so
// the addresses are one 64-bit product per call plus a constant stride (the per-piece index
// arithmetic and 64-bit products were ~15 % of the forward walk's instructions).
template <int kRows, int kCols, int kLd, int kThreads>
__device__ __forceinline__ void load_tile_async(bf16_t* S, const bf16_t* base, int64_t ld,
                                                int64_t row0, int valid_rows) {
  static_assert(kCols % 8 == 0, "tile width must be a multiple of 8");
  constexpr int kPieces = kCols / 8;
  constexpr int kTotal = kRows * kPieces;
  static_assert(kThreads % kPieces == 0, "whole rows per pass of the threads");
  constexpr int kRowStep = kThreads / kPieces;
  const int r0 = static_cast<int>(threadIdx.x) / kPieces, c = (static_cast<int>(threadIdx.x) % kPieces) * 8;
  const bf16_t* first = base + row0 * ld + c;  // a valid row for the zero-filled ones
  const bf16_t* src = first + r0 * ld;
  const int64_t step = kRowStep * ld;
  bf16_t* dst = S + r0 * kLd + c;
#pragma unroll
  for (int k = 0; k * kThreads < kTotal; ++k) {
    const int r = r0 + k * kRowStep;
    if (kTotal % kThreads != 0 && r >= kRows) break;
    const bool valid = r < valid_rows;
    mma::cp_async16(dst + k * kRowStep * kLd, valid ? src + k * step : first, valid);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}
// Sum over the 4 lanes that share a row of an accumulator fragment (same g).
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v;
}
// Sum over the 8 lanes that share a column pair of an accumulator fragment (same q).
__device__ __forceinline__ float column_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 4);
  v += __shfl_xor_sync(0xffffffffu, v, 8);
  v += __shfl_xor_sync(0xffffffffu, v, 16);
  return v;
}

// The end of one head's d(dt) epilogue in the backward chunk kernels, one warp (lane holds tokens
// lane Q/32 + e): dcum_t (from the head's row partials) plus, on the last token, vs + gamma gsum
// (sum_s v_s and <dHout, Hin>); da = reverse cumulative sum of dcum; d(dt)_t = (xrow(t) + A da_t)
// d dt / d raw, stored for the chunk's len tokens (rows row0 + t, column h); the head's partial
// sums of dA (da dt), dD (ddiag(t) = dy_t . x_t) and ddt_bias (d(dt)) into part (if not null).
template <int Q, class XRow, class DDiag>
__device__ __forceinline__ void dt_epilogue_tail(const SsdArgs& a, const ChunkScan<Q>& sc, float (&dcum)[Q / 32],
                                                 float vs, float gsum, float A, XRow&& xrow, DDiag&& ddiag, int len,
                                                 int64_t row0, int h, float* part) {
  constexpr int E = Q / 32;
  const int lane = mma::lane_id();
  if (lane == 31) dcum[E - 1] += vs + sc.gamma * gsum;
  // da_s = sum_{t >= s} dcum_t
  float suf[E], run = 0.f;
#pragma unroll
  for (int e = E - 1; e >= 0; --e) {
    run += dcum[e];
    suf[e] = run;
  }
  float inc = run;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const float v = __shfl_down_sync(0xffffffffu, inc, off);
    if (lane + off < 32) inc += v;
  }
  float after = __shfl_down_sync(0xffffffffu, inc, 1);
  if (lane == 31) after = 0.f;
  float pA = 0.f, pB = 0.f, pD = 0.f;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int t = lane * E + e;
    const float da = suf[e] + after;
    const float graw = (xrow(t) + A * da) * sc.dsp[t];
    if (a.ddt && t < len) store_any(a.ddt, a.ddt_type, (row0 + t) * a.ld_ddt + h, graw);
    pA += da * sc.dt[t];
    pB += graw;
    pD += ddiag(t);
  }
  pA = warp_sum(pA);
  pB = warp_sum(pB);
  pD = warp_sum(pD);
  if (lane == 0 && part) {
    part[0] = pA;
    part[1] = pD;
    part[2] = pB;
  }
}

// Tiling of the tensor-core kernels: 8 warps; chunk Q rows split in Q/16 row blocks of 16, the
// warps of one row block split the columns. State tiles [P, N] split 2 (or 1) x 4 (or 8).
template <int Q_, int P_, int N_>
struct FastCfg {
  static constexpr int Q = Q_, P = P_, N = N_;
  static constexpr int kThreads = 256, kWarps = 8;
  static constexpr int LDX = P + 8, LDN = N + 8, LDQ = Q + 8;  // padded pitches (conflict-free ldmatrix)
  static constexpr int kRowBlocks = Q / 16;
  static constexpr int kColSplit = kWarps / kRowBlocks;
  static constexpr int kQCols = Q / kColSplit, kQTiles = kQCols / 8;
  static constexpr int kPCols = P / kColSplit, kPTiles = kPCols / 8;
  static constexpr int kNCols = N / kColSplit, kNTiles = kNCols / 8;
  static constexpr int kSWarpsP = (P % 32 == 0) ? 2 : 1, kSWarpsN = kWarps / kSWarpsP;
  static constexpr int kSRows = P / kSWarpsP, kSMT = kSRows / 16;
  static constexpr int kSCols = N / kSWarpsN, kSNT = kSCols / 8;
  // The warp that runs the per-chunk scans: the one with the least work above the diagonal.
  static constexpr int kScanWarp = kColSplit > 1 ? kRowBlocks : 0;
  static_assert(Q == 64 || Q == 128, "chunk 64 or 128");
  static_assert(kWarps % kRowBlocks == 0, "row blocks must divide the warps");
  static_assert(kQCols % 16 == 0 && kPCols % 8 == 0 && kNCols % 32 == 0, "column split");
  static_assert(P % 16 == 0 && N % 16 == 0, "P and N multiples of 16");
  static_assert(kSRows % 16 == 0 && kSCols % 16 == 0, "state tile split");
};

// State fragments (fp32 accumulators of a [P, N] tile) <-> memory.
template <class Cfg>
struct StateFrag {
  float v[Cfg::kSMT][Cfg::kSNT][4];
  // Warp within its group of kWarps (blocks of several warp groups run one StateFrag per group).
  __device__ __forceinline__ int wg() const { return (static_cast<int>(threadIdx.x) >> 5) % Cfg::kWarps; }
  __device__ __forceinline__ int p0() const { return wg() % Cfg::kSWarpsP * Cfg::kSRows; }
  __device__ __forceinline__ int n0() const { return wg() / Cfg::kSWarpsP * Cfg::kSCols; }

  __device__ __forceinline__ void load(const float* src) {  // src [P][N] fp32 or null (zero)
#pragma unroll
    for (int mt = 0; mt < Cfg::kSMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < Cfg::kSNT; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          int p = mma::acc_row(p0() + 16 * mt, i), n = mma::acc_col(n0() + 8 * nt, i);
          v[mt][nt][i] = src ? src[p * Cfg::N + n] : 0.f;
        }
  }
  // f(p, n, x, y) for each pair of this thread's elements, x = (p, n) and y = (p, n + 1), n even.
  template <class F>
  __device__ __forceinline__ void for_pairs(F&& f) const {
#pragma unroll
    for (int mt = 0; mt < Cfg::kSMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < Cfg::kSNT; ++nt)
#pragma unroll
        for (int half = 0; half < 2; ++half)
          f(mma::acc_row(p0() + 16 * mt, 2 * half), mma::acc_col(n0() + 8 * nt, 0), v[mt][nt][2 * half],
            v[mt][nt][2 * half + 1]);
  }
  __device__ __forceinline__ void store_f32(float* dst) const {  // dst [P][N]
    for_pairs([&](int p, int n, float x, float y) {
      *reinterpret_cast<float2*>(dst + p * Cfg::N + n) = make_float2(x, y);
    });
  }
  // bf16 copy into S[p][n] with pitch ld (shared or global).
  __device__ __forceinline__ void store_bf16(bf16_t* S, int ld) const {
    for_pairs([&](int p, int n, float x, float y) {
      *reinterpret_cast<uint32_t*>(S + p * ld + n) = mma::pack_bf16x2(x, y);
    });
  }
  // bf16 copy into a [P][N] tile stored as 8 x 8 core matrices (wgmma.cuh's CoreTile<P, N>: core
  // matrix (p / 8, n / 8) at (p / 8) N 16 + (n / 8) 128 bytes, rows of 16 bytes inside), so that a
  // wgmma kernel loads it as one contiguous block. A warp's 32 pairs of one 8-column block are one
  // 128-byte core matrix.
  __device__ __forceinline__ void store_bf16_core(bf16_t* S) const {
    auto* base = reinterpret_cast<unsigned char*>(S);
    for_pairs([&](int p, int n, float x, float y) {
      *reinterpret_cast<uint32_t*>(base + (p >> 3) * Cfg::N * 16 + (n >> 3) * 128 + (p & 7) * 16 + (n & 7) * 2) =
          mma::pack_bf16x2(x, y);
    });
  }
  __device__ __forceinline__ void scale(float s) {
#pragma unroll
    for (int mt = 0; mt < Cfg::kSMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < Cfg::kSNT; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) v[mt][nt][i] *= s;
  }
  // v += Aᵀ V over the chunk: A [Q][P] (pitch LDX) is the activation, V [Q][N] (pitch LDN); with
  // coef, row t of A is first scaled by coef[t] (in the fragments, rounded to bf16 as a scaled
  // copy of the tile would be).
  __device__ __forceinline__ void add_outer(const bf16_t* As, const bf16_t* Vs, const float* coef = nullptr) {
    const int q2 = 2 * (mma::lane_id() & 3);
#pragma unroll kKUnroll
    for (int ks = 0; ks < Cfg::Q / 16; ++ks) {
      uint32_t af[Cfg::kSMT][4];
#pragma unroll
      for (int mt = 0; mt < Cfg::kSMT; ++mt) mma::load_a_t(af[mt], As, Cfg::LDX, p0() + 16 * mt, 16 * ks);
      if (coef) {  // A fragment k (= t) columns of this lane: 2q, 2q+1 (regs 0, 1), 2q+8, 2q+9 (regs 2, 3)
        const float2 c0 = *reinterpret_cast<const float2*>(coef + 16 * ks + q2);
        const float2 c8 = *reinterpret_cast<const float2*>(coef + 16 * ks + q2 + 8);
#pragma unroll
        for (int mt = 0; mt < Cfg::kSMT; ++mt)
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            const float2 c = r < 2 ? c0 : c8;
            af[mt][r] = mma::pack_bf16x2(mma::bf16_lo(af[mt][r]) * c.x, mma::bf16_hi(af[mt][r]) * c.y);
          }
      }
#pragma unroll
      for (int nt = 0; nt < Cfg::kSNT; nt += 2) {
        uint32_t bfr[4];
        mma::load_b2_t(bfr, Vs, Cfg::LDN, n0() + 8 * nt, 16 * ks);
#pragma unroll
        for (int mt = 0; mt < Cfg::kSMT; ++mt) {
          mma::mma_bf16(v[mt][nt], af[mt], bfr[0], bfr[1]);
          mma::mma_bf16(v[mt][nt + 1], af[mt], bfr[2], bfr[3]);
        }
      }
    }
  }
};

// out[t][:] = in[t][:] * scale[t], both [Q][LDX] bf16 tiles, by kThreads threads (16 bytes each per
// step). Rounded as StateFrag::add_outer rounds its scaled fragments: the same bf16 values.
template <class Cfg, int kThreads>
__device__ __forceinline__ void scale_rows(bf16_t* out, const bf16_t* in, const float* scale) {
  constexpr int kPieces = Cfg::P / 8;
  for (int i = static_cast<int>(threadIdx.x); i < Cfg::Q * kPieces; i += kThreads) {
    const int r = i / kPieces, c = (i % kPieces) * 8;
    const float sc = scale[r];
    const uint4 u = *reinterpret_cast<const uint4*>(in + r * Cfg::LDX + c);
    uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) w[k] = mma::pack_bf16x2(mma::bf16_lo(w[k]) * sc, mma::bf16_hi(w[k]) * sc);
    *reinterpret_cast<uint4*>(out + r * Cfg::LDX + c) = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

// Launchers (host), instantiated in ssd_fwd.cu / ssd_bwd.cu / ssd_state.cu / ssd_generic.cu.
// With a.nseg > 1 the forward and backward first run the segment sweeps and the state pass.
template <int Q, int P, int N>
void launch_fwd_fast(const SsdArgs& a);
// The forward walk on wgmma (sm_90a, Q = P = 64; ssd_fwd_wg.cu), after the segment states.
template <int N>
void launch_fwd_wg(const SsdArgs& a);
// The warp-specialised wgmma walk (variants 2-7, SsdArgs::fwd_variant: two heads of a group
// and a producer warpgroup per block; heads per group even), after the segment states.
template <int N>
void launch_fwd_ws(const SsdArgs& a);
template <int Q, int P, int N>
void launch_bwd_fast(const SsdArgs& a);  // sweeps + chunk kernel; partials left in ws_part
// The chunk gradients on wgmma (bwd_variant 1-4; sm_90a, Q = P = 64), after the sweeps.
template <int N>
void launch_bwd_chunk_wg(const SsdArgs& a);
// Sweeps over directions dir_first .. dir_first + ndir - 1 (0: states forwards from x, B;
// 1: state gradients backwards from dy, C), one block per (head, segment, row, direction), from
// the state pass's result (or h0 / dh_final when nseg == 1), storing the bf16 state entering
// (gradient leaving) every chunk in ws_hin (ws_dhout); the backward sweep of segment 0 writes dh0.
template <int Q, int P, int N>
void launch_state_sweep(const SsdArgs& a, int dir_first, int ndir);
// With nseg > 1, the states entering (gradients leaving) the segments, in two launches: the local
// state of every piece (from zero: one weighted split-K product per piece, chunk-parallel), then
// the short sequential pass over pieces (fp32) into ws_seg.
template <int Q, int P, int N>
void launch_segment_states(const SsdArgs& a, int dir_first, int ndir);
void launch_fwd_generic(const SsdArgs& a, int act_type, float* ws_state);
// Generic backward: ws_f32 needs generic_bwd_ws_floats(a) floats; partials left in ws_part.
size_t generic_bwd_ws_floats(const SsdArgs& a);
void launch_bwd_generic(const SsdArgs& a, int act_type, float* ws_f32);
// dA_log, dD, ddt_bias += reductions of ws_part ([rows][H][3]: dA, dD, dbias).
void launch_param_reduce(const float* part, int rows, int H, const void* A_log, int A_type,
                         void* dA_log, int dA_type, void* dD, int dD_type, void* dbias,
                         int dbias_type);

}  // namespace hlm::cuda::ssd
