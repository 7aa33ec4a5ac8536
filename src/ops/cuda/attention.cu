// CUDA attention: the dispatcher (cuDNN fused attention first, our kernels as the fallback and as
// the deterministic backward), our FlashAttention-2-style kernels (mma.sync bf16, fp32 softmax
// state, causal + document masking with tile skipping), decode attention (attention_decode.cu),
// and RoPE.
#include "ops/attention.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <string>

#include "ops/cuda/attention_cudnn.cuh"
#include "ops/cuda/attention_decode.cuh"
#include "ops/cuda/common.cuh"
#include "ops/cuda/mma.cuh"

namespace hlm::cuda {

namespace {

using bf16_t = __nv_bfloat16;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kPad = 8;  // bf16 elements of padding per shared-memory row: conflict-free ldmatrix

// ---- shapes and checks -------------------------------------------------------------------------

struct Shape {
  int64_t B, T, Hq, Hkv, E;
  int64_t ldq, ldk, ldv;
};

// q [B,T,Hq,E], k / v [B,T,Hkv,E] as row views with packed heads; returns the token strides.
Shape check_qkv(const AttentionParams& p, const char* op) {
  for (auto [t, name] : {std::pair{&p.q, "q"}, {&p.k, "k"}, {&p.v, "v"}}) {
    require_cuda(*t, op, name);
    HLM_REQUIRE(t->ndim == 4, ErrorKind::Internal, "{}: {} {} must be [B,T,H,E]", op, name,
                t->describe());
  }
  HLM_REQUIRE(p.q.dtype == DType::BF16 && p.k.dtype == DType::BF16 && p.v.dtype == DType::BF16,
              ErrorKind::Unsupported, "{}: CUDA attention takes BF16 q, k, v (got {}, {}, {})", op,
              dtype_name(p.q.dtype), dtype_name(p.k.dtype), dtype_name(p.v.dtype));
  Shape s{};
  s.B = p.q.shape[0];
  s.T = p.q.shape[1];
  s.Hq = p.q.shape[2];
  s.E = p.q.shape[3];
  s.Hkv = p.k.shape[2];
  HLM_REQUIRE(p.k.shape[0] == s.B && p.k.shape[1] == s.T && p.k.shape[3] == s.E && same_shape(p.k, p.v),
              ErrorKind::Internal, "{}: k {} and v {} do not fit q {}", op, p.k.describe(),
              p.v.describe(), p.q.describe());
  HLM_REQUIRE(s.Hkv > 0 && s.Hq % s.Hkv == 0, ErrorKind::InvalidArgument,
              "{}: {} query heads are not a multiple of {} KV heads", op, s.Hq, s.Hkv);
  HLM_REQUIRE(s.E == 64 || s.E == 128, ErrorKind::Unsupported,
              "{}: head dim {} (CUDA attention supports 64 and 128)", op, s.E);
  HLM_REQUIRE(s.T < (int64_t{1} << 31), ErrorKind::Unsupported, "{}: T = {} exceeds 2^31", op, s.T);
  s.ldq = as_rows(p.q, 2, "q").ld;
  s.ldk = as_rows(p.k, 2, "k").ld;
  s.ldv = as_rows(p.v, 2, "v").ld;
  if (p.doc.defined()) {
    require_cuda(p.doc, op, "doc");
    require_dtype(p.doc, DType::I32, op, "doc");
    HLM_REQUIRE(p.doc.is_contiguous() && p.doc.numel() == s.B * s.T, ErrorKind::Internal,
                "{}: doc {} must be contiguous [{},{}]", op, p.doc.describe(), s.B, s.T);
  }
  return s;
}

// A [B,T,H,E] tensor with the same batch/time/head dims and BF16 dtype; returns its token stride.
int64_t check_like(const Tensor& t, const Shape& s, int64_t H, const char* op, const char* name) {
  require_cuda(t, op, name);
  require_dtype(t, DType::BF16, op, name);
  HLM_REQUIRE(t.ndim == 4 && t.shape[0] == s.B && t.shape[1] == s.T && t.shape[2] == H &&
                  t.shape[3] == s.E,
              ErrorKind::Internal, "{}: {} {} must be [{},{},{},{}]", op, name, t.describe(), s.B,
              s.T, H, s.E);
  return as_rows(t, 2, name).ld;
}

void check_lse(const Tensor& lse, const Shape& s, const char* op) {
  require_cuda(lse, op, "lse");
  require_dtype(lse, DType::F32, op, "lse");
  HLM_REQUIRE(lse.is_contiguous() && lse.numel() == s.B * s.Hq * s.T, ErrorKind::Internal,
              "{}: lse {} must be contiguous [{},{},{}]", op, lse.describe(), s.B, s.Hq, s.T);
}

// Our kernels read 16-byte vectors: base pointers and token strides must allow it.
bool vector_aligned(const void* p, int64_t ld) {
  return pointer_alignment(p) >= 16 && ld % 8 == 0;
}

enum class Backend { Auto, Cudnn, Own };
Backend backend_from_env() {
  const char* v = std::getenv("HLM_ATTENTION");
  if (!v || !*v || std::strcmp(v, "auto") == 0) return Backend::Auto;
  if (std::strcmp(v, "cudnn") == 0) return Backend::Cudnn;
  if (std::strcmp(v, "own") == 0) return Backend::Own;
  fail(ErrorKind::InvalidArgument, "HLM_ATTENTION={}: expected auto, cudnn or own", v);
}

// Largest workspace the deterministic cuDNN backward may take (its dP buffer is B·Hq·T²·2 bytes:
// 2 GiB for the 1.43B model at T = 8192, exactly 16 GiB for the 8B shape at T = 16K). Default:
// 18 GiB, at most a quarter of the card; HLM_CUDNN_DET_WORKSPACE_MIB overrides (fractions of a MiB
// allowed, so tests can force the split at small sizes). Past it, the deterministic backward runs
// in pieces that fit (batch rows, KV-head groups, query sub-groups); where one query head does not
// fit, it runs our own kernels (slower); HLM_DETERMINISTIC=0 takes cuDNN's fast non-deterministic
// backward instead.
size_t det_workspace_limit() {
  const char* v = std::getenv("HLM_CUDNN_DET_WORKSPACE_MIB");
  if (v && *v) {
    char* end = nullptr;
    const double mib = std::strtod(v, &end);
    HLM_REQUIRE(end != v && *end == '\0' && mib >= 0.0 && mib < 1e12, ErrorKind::InvalidArgument,
                "HLM_CUDNN_DET_WORKSPACE_MIB={}: expected a number of MiB", v);
    return static_cast<size_t>(mib * 1048576.0);
  }
  return std::min<size_t>(size_t{18} << 30, device_props().totalGlobalMem / 4);
}

void warn_once(const std::string& msg) {
  static std::mutex mu;
  static std::set<std::string> seen;
  std::lock_guard<std::mutex> lock(mu);
  if (seen.insert(msg).second) fmt::print(stderr, "hybridlm: {}\n", msg);
}

// ---- document segments: seg[b, t] = first position of t's run of equal doc ids -----------------

constexpr int kSegThreads = 1024;

__global__ void doc_segments_kernel(const int32_t* doc, int64_t T, int32_t* seg) {
  __shared__ int32_t carry[kSegThreads];
  const int64_t b = blockIdx.x;
  const int32_t* d = doc + b * T;
  int32_t* s = seg + b * T;
  const int64_t per = (T + kSegThreads - 1) / kSegThreads;
  const int64_t t0 = threadIdx.x * per, t1 = min(T, t0 + per);
  // Local inclusive max-scan of boundary positions (a boundary at t when t starts a run).
  int32_t run = -1;
  for (int64_t t = t0; t < t1; ++t) {
    if (t == 0 || d[t] != d[t - 1]) run = static_cast<int32_t>(t);
    s[t] = run;
  }
  carry[threadIdx.x] = run;
  __syncthreads();
  // Inclusive max-scan of the per-thread results (Hillis-Steele).
  for (int off = 1; off < kSegThreads; off <<= 1) {
    const int32_t other = threadIdx.x >= off ? carry[threadIdx.x - off] : -1;
    __syncthreads();
    carry[threadIdx.x] = max(carry[threadIdx.x], other);
    __syncthreads();
  }
  const int32_t before = threadIdx.x > 0 ? carry[threadIdx.x - 1] : -1;
  for (int64_t t = t0; t < t1; ++t) s[t] = max(s[t], before);
}

const int32_t* doc_segments(const Tensor& doc, const Shape& s) {
  if (!doc.defined()) return nullptr;
  auto* seg = scratch_as<int32_t>(Scratch::Attn3, static_cast<size_t>(s.B * s.T));
  doc_segments_kernel<<<static_cast<unsigned>(s.B), kSegThreads, 0, stream()>>>(doc.ptr<int32_t>(),
                                                                                s.T, seg);
  HLM_CUDA_CHECK_LAUNCH();
  return seg;
}

// ---- shared-memory tiles -----------------------------------------------------------------------

template <int E>
using TileRow = bf16_t[E + kPad];

// rows [row0, row0 + ROWS) of a [T, ·] matrix with token stride ld into a padded shared tile;
// rows at or past T are zero-filled.
template <int E, int ROWS, int THREADS>
__device__ __forceinline__ void load_tile(TileRow<E>* dst, const bf16_t* src, int64_t ld, int row0,
                                          int T) {
  constexpr int kChunks = E / 8;
  for (int c = threadIdx.x; c < ROWS * kChunks; c += THREADS) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const int row = row0 + r;
    const bool valid = row < T;
    const bf16_t* g = src + (valid ? static_cast<int64_t>(row) * ld + col : 0);
    cp_async16(&dst[r][col], g, valid);
  }
}

// A-operand fragments of rows [r0, r0+16) × cols [c0, c0+16) of a tile.
template <int E>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const TileRow<E>* tile, int r0, int c0) {
  const int lane = threadIdx.x & 31;
  ldmatrix_x4(a, &tile[r0 + (lane & 15)][c0 + (lane >> 4) * 8]);
}
// B-operand fragments for two n-tiles where B[k][n] = tile[n][k] (keys or queries as rows):
// n in [n0, n0+16), k in [k0, k0+16). r[0], r[1]: n-tile n0; r[2], r[3]: n-tile n0 + 8.
template <int E>
__device__ __forceinline__ void load_b_rows(uint32_t (&r)[4], const TileRow<E>* tile, int n0, int k0) {
  const int lane = threadIdx.x & 31, mi = lane >> 3;
  ldmatrix_x4(r, &tile[n0 + (mi >> 1) * 8 + (lane & 7)][k0 + (mi & 1) * 8]);
}
// B-operand fragments for two n-tiles where B[k][n] = tile[k][n] (rows are the k dimension):
// k in [k0, k0+16), n in [n0, n0+16). r[0], r[1]: n-tile n0; r[2], r[3]: n-tile n0 + 8.
template <int E>
__device__ __forceinline__ void load_b_cols(uint32_t (&r)[4], const TileRow<E>* tile, int k0, int n0) {
  const int lane = threadIdx.x & 31, mi = lane >> 3;
  ldmatrix_x4_trans(r, &tile[k0 + (mi & 1) * 8 + (lane & 7)][n0 + (mi >> 1) * 8]);
}

// ---- forward -----------------------------------------------------------------------------------

struct FwdArgs {
  const bf16_t* q;
  const bf16_t* k;
  const bf16_t* v;
  bf16_t* o;
  float* lse;
  int64_t ldq, ldk, ldv, ldo;
  int T, Hq, Hkv;
  float scale_log2;
  const int32_t* seg;
};

constexpr int kFwdRows = 64, kFwdKeys = 64, kFwdThreads = 128;

template <int E>
constexpr size_t fwd_smem() {
  return sizeof(TileRow<E>) * (kFwdRows + 2 * kFwdKeys);
}

// Block: 64 queries of one (b, head), 4 warps × 16 rows; loops over 64-key tiles from the start of
// the first query's document to the diagonal. V of step j loads while S = QKᵀ is computed, K of
// step j+1 while O += PV is.
template <int E>
__global__ void __launch_bounds__(kFwdThreads) attn_fwd_kernel(FwdArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  TileRow<E>* q_s = reinterpret_cast<TileRow<E>*>(smem_raw);
  TileRow<E>* k_s = q_s + kFwdRows;
  TileRow<E>* v_s = k_s + kFwdKeys;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int n_qt = (a.T + kFwdRows - 1) / kFwdRows;
  const int q0 = (n_qt - 1 - static_cast<int>(blockIdx.x)) * kFwdRows;  // longest rows first
  const int h = blockIdx.y, b = blockIdx.z;
  const int hk = h / (a.Hq / a.Hkv);
  const int64_t bT = static_cast<int64_t>(b) * a.T;
  const bf16_t* qb = a.q + bT * a.ldq + static_cast<int64_t>(h) * E;
  const bf16_t* kb = a.k + bT * a.ldk + static_cast<int64_t>(hk) * E;
  const bf16_t* vb = a.v + bT * a.ldv + static_cast<int64_t>(hk) * E;
  const int32_t* seg = a.seg ? a.seg + bT : nullptr;
  const int q_last = min(q0 + kFwdRows - 1, a.T - 1);
  const int kt_begin = seg ? seg[q0] / kFwdKeys : 0;
  const int kt_end = q_last / kFwdKeys;
  const int seg_last = seg ? seg[q_last] : 0;

  load_tile<E, kFwdRows, kFwdThreads>(q_s, qb, a.ldq, q0, a.T);
  load_tile<E, kFwdKeys, kFwdThreads>(k_s, kb, a.ldk, kt_begin * kFwdKeys, a.T);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  uint32_t qf[E / 16][4];
#pragma unroll
  for (int kk = 0; kk < E / 16; ++kk) load_a<E>(qf[kk], q_s, warp * 16, kk * 16);

  float o[E / 8][4];
#pragma unroll
  for (int j = 0; j < E / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m_r[2] = {-INFINITY, -INFINITY}, l_r[2] = {0.0f, 0.0f};
  const int my_q[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  int my_seg[2] = {0, 0};
  if (seg) {
    my_seg[0] = seg[min(my_q[0], a.T - 1)];
    my_seg[1] = seg[min(my_q[1], a.T - 1)];
  }

  for (int kt = kt_begin; kt <= kt_end; ++kt) {
    const int k0 = kt * kFwdKeys;
    load_tile<E, kFwdKeys, kFwdThreads>(v_s, vb, a.ldv, k0, a.T);
    cp_async_commit();

    float s[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
    for (int np = 0; np < 4; ++np) {
#pragma unroll
      for (int kk = 0; kk < E / 16; ++kk) {
        uint32_t kf[4];
        load_b_rows<E>(kf, k_s, np * 16, kk * 16);
        mma_bf16(s[2 * np], qf[kk], kf[0], kf[1]);
        mma_bf16(s[2 * np + 1], qf[kk], kf[2], kf[3]);
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // V has landed; every warp is done with K
    if (kt < kt_end) {
      load_tile<E, kFwdKeys, kFwdThreads>(k_s, kb, a.ldk, k0 + kFwdKeys, a.T);
      cp_async_commit();
    }

    const bool need_mask = (k0 + kFwdKeys - 1 > q0) || (seg_last > k0);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[j][e] * a.scale_log2;
        if (need_mask) {
          const int rh = e >> 1;
          const int kj = k0 + 8 * j + 2 * t + (e & 1);
          if (kj > my_q[rh] || kj < my_seg[rh]) x = -INFINITY;
        }
        s[j][e] = x;
      }
    }
#pragma unroll
    for (int rh = 0; rh < 2; ++rh) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 8; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * rh], s[j][2 * rh + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_r[rh], mx);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;
      const float alpha = exp2f(m_r[rh] - m_use);
      m_r[rh] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        s[j][2 * rh] = exp2f(s[j][2 * rh] - m_use);
        s[j][2 * rh + 1] = exp2f(s[j][2 * rh + 1] - m_use);
        sum += s[j][2 * rh] + s[j][2 * rh + 1];
      }
      l_r[rh] = l_r[rh] * alpha + sum;
#pragma unroll
      for (int j = 0; j < E / 8; ++j) {
        o[j][2 * rh] *= alpha;
        o[j][2 * rh + 1] *= alpha;
      }
    }
    uint32_t pf[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      pf[kk][0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
      pf[kk][1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
      pf[kk][2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pf[kk][3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }
#pragma unroll
    for (int ep = 0; ep < E / 16; ++ep) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        uint32_t vf[4];
        load_b_cols<E>(vf, v_s, kk * 16, ep * 16);
        mma_bf16(o[2 * ep], pf[kk], vf[0], vf[1]);
        mma_bf16(o[2 * ep + 1], pf[kk], vf[2], vf[3]);
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // next K has landed; every warp is done with V
  }

#pragma unroll
  for (int rh = 0; rh < 2; ++rh) {
    float l = l_r[rh];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int qi = my_q[rh];
    if (qi >= a.T) continue;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    bf16_t* orow = a.o + (bT + qi) * a.ldo + static_cast<int64_t>(h) * E;
#pragma unroll
    for (int j = 0; j < E / 8; ++j)
      *reinterpret_cast<uint32_t*>(orow + 8 * j + 2 * t) =
          pack_bf16(o[j][2 * rh] * inv, o[j][2 * rh + 1] * inv);
    if (t == 0)
      a.lse[(static_cast<int64_t>(b) * a.Hq + h) * a.T + qi] =
          l > 0.0f ? (m_r[rh] + log2f(l)) * kLn2 : -INFINITY;
  }
}

// ---- backward ----------------------------------------------------------------------------------

struct BwdArgs {
  const bf16_t* q;
  const bf16_t* k;
  const bf16_t* v;
  const bf16_t* dout;
  const float* lse;   // [B, Hq, T], natural log
  const float* dsum;  // [B, Hq, T] = Σ_e dO · O
  bf16_t* dq;
  bf16_t* dk;
  bf16_t* dv;
  int64_t ldq, ldk, ldv, lddo, lddq, lddk, lddv;
  int T, Hq, Hkv;
  float scale, scale_log2;
  const int32_t* seg;
};

// dsum[b, h, t] = Σ_e dO[b,t,h,e] · O[b,t,h,e]: one warp per (b, t, h).
__global__ void attn_dsum_kernel(const bf16_t* dout, int64_t lddo, const bf16_t* out, int64_t ldo,
                                 int64_t B, int64_t T, int64_t H, int64_t E, float* dsum) {
  const int64_t w = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= B * T * H) return;
  const int64_t h = w % H, bt = w / H;
  const bf16_t* d = dout + bt * lddo + h * E;
  const bf16_t* o = out + bt * ldo + h * E;
  float acc = 0.0f;
  for (int64_t e = lane; e < E; e += 32) acc += __bfloat162float(d[e]) * __bfloat162float(o[e]);
  acc = warp_sum(acc);
  if (lane == 0) {
    const int64_t b = bt / T, tt = bt % T;
    dsum[(b * H + h) * T + tt] = acc;
  }
}

constexpr int kBwdKeys = 64, kBwdQ = 32, kBwdThreads = 128;

template <int E>
constexpr size_t bwd_kv_smem() {
  return sizeof(TileRow<E>) * (2 * kBwdKeys + 4 * kBwdQ);
}

// dK, dV for 64 keys of one (b, kv head): 4 warps × 16 keys, looping over the query heads of the
// group and 32-query tiles from the keys' own position to the end of their document; Q / dO /
// lse / dsum tiles double-buffered. Each dK, dV element is owned by one thread: no atomics.
template <int E>
__global__ void __launch_bounds__(kBwdThreads) attn_bwd_kv_kernel(BwdArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  TileRow<E>* k_s = reinterpret_cast<TileRow<E>*>(smem_raw);
  TileRow<E>* v_s = k_s + kBwdKeys;
  TileRow<E>* q_s = v_s + kBwdKeys;   // [2][kBwdQ]
  TileRow<E>* do_s = q_s + 2 * kBwdQ;  // [2][kBwdQ]
  __shared__ float lse_s[2 * kBwdQ];   // log2 domain
  __shared__ float dsum_s[2 * kBwdQ];
  __shared__ int segq_s[2 * kBwdQ];    // document start of each query (0 without documents)
  __shared__ int q_end_s;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int k0 = blockIdx.x * kBwdKeys;
  const int hk = blockIdx.y, b = blockIdx.z;
  const int G = a.Hq / a.Hkv;
  const int64_t bT = static_cast<int64_t>(b) * a.T;
  const int32_t* seg = a.seg ? a.seg + bT : nullptr;
  const int k_last = min(k0 + kBwdKeys - 1, a.T - 1);

  // Queries that can see these keys: [k0, q_end), q_end = first q with seg[q] > k_last.
  if (threadIdx.x == 0) {
    int lo = k0, hi = a.T;  // answer in [k0, T]
    if (seg) {
      while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (seg[mid] > k_last) hi = mid; else lo = mid + 1;
      }
    } else {
      lo = a.T;
    }
    q_end_s = lo;
  }
  load_tile<E, kBwdKeys, kBwdThreads>(k_s, a.k + bT * a.ldk + static_cast<int64_t>(hk) * E, a.ldk, k0, a.T);
  load_tile<E, kBwdKeys, kBwdThreads>(v_s, a.v + bT * a.ldv + static_cast<int64_t>(hk) * E, a.ldv, k0, a.T);
  cp_async_commit();
  __syncthreads();
  const int qt_begin = k0 / kBwdQ;
  const int qt_end = (q_end_s + kBwdQ - 1) / kBwdQ;  // exclusive
  const int n_qt = qt_end - qt_begin;
  const int steps = G * n_qt;

  auto issue = [&](int step, int buf) {
    const int hq = hk * G + step / n_qt;
    const int qs = (qt_begin + step % n_qt) * kBwdQ;
    load_tile<E, kBwdQ, kBwdThreads>(q_s + buf * kBwdQ, a.q + bT * a.ldq + static_cast<int64_t>(hq) * E,
                                     a.ldq, qs, a.T);
    load_tile<E, kBwdQ, kBwdThreads>(do_s + buf * kBwdQ,
                                     a.dout + bT * a.lddo + static_cast<int64_t>(hq) * E, a.lddo, qs, a.T);
    if (threadIdx.x < kBwdQ) {
      const int qi = qs + threadIdx.x;
      const int64_t idx = (static_cast<int64_t>(b) * a.Hq + hq) * a.T + qi;
      lse_s[buf * kBwdQ + threadIdx.x] = qi < a.T ? a.lse[idx] * kLog2e : 0.0f;
      dsum_s[buf * kBwdQ + threadIdx.x] = qi < a.T ? a.dsum[idx] : 0.0f;
      segq_s[buf * kBwdQ + threadIdx.x] = seg && qi < a.T ? seg[qi] : 0;
    }
    cp_async_commit();
  };

  float dk[E / 8][4], dv[E / 8][4];
#pragma unroll
  for (int j = 0; j < E / 8; ++j) {
    dk[j][0] = dk[j][1] = dk[j][2] = dk[j][3] = 0.0f;
    dv[j][0] = dv[j][1] = dv[j][2] = dv[j][3] = 0.0f;
  }
  const int my_k[2] = {k0 + warp * 16 + g, k0 + warp * 16 + g + 8};

  if (steps > 0) issue(0, 0);
  for (int step = 0; step < steps; ++step) {
    const int buf = step & 1;
    if (step + 1 < steps) {
      issue(step + 1, buf ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const TileRow<E>* qt_s = q_s + buf * kBwdQ;
    const TileRow<E>* dot_s = do_s + buf * kBwdQ;
    const float* lse_b = lse_s + buf * kBwdQ;
    const float* dsum_b = dsum_s + buf * kBwdQ;
    const int* seg_b = segq_s + buf * kBwdQ;
    const int qs = (qt_begin + step % n_qt) * kBwdQ;

    // Sᵀ = K Qᵀ and dPᵀ = V dOᵀ for this warp's 16 keys × 32 queries.
    float s[4][4], dp[4][4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
      dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < E / 16; ++kk) {
      uint32_t ka[4], va[4];
      load_a<E>(ka, k_s, warp * 16, kk * 16);
      load_a<E>(va, v_s, warp * 16, kk * 16);
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        uint32_t qb[4], db[4];
        load_b_rows<E>(qb, qt_s, np * 16, kk * 16);
        load_b_rows<E>(db, dot_s, np * 16, kk * 16);
        mma_bf16(s[2 * np], ka, qb[0], qb[1]);
        mma_bf16(s[2 * np + 1], ka, qb[2], qb[3]);
        mma_bf16(dp[2 * np], va, db[0], db[1]);
        mma_bf16(dp[2 * np + 1], va, db[2], db[3]);
      }
    }
    // Pᵀ = exp(scale·s − lse) masked; dSᵀ = Pᵀ ∘ (dPᵀ − dsum).
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int rh = e >> 1;
        const int col = 8 * j + 2 * t + (e & 1);
        const int qi = qs + col;
        const int kj = my_k[rh];
        const bool ok = qi < a.T && kj <= qi && kj >= seg_b[col];
        const float p = ok ? exp2f(s[j][e] * a.scale_log2 - lse_b[col]) : 0.0f;
        s[j][e] = p;
        dp[j][e] = p * (dp[j][e] - dsum_b[col]);
      }
    }
    uint32_t pa[2][4], dsa[2][4];
#pragma unroll
    for (int kk = 0; kk < 2; ++kk) {
      pa[kk][0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
      pa[kk][1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
      pa[kk][2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[kk][3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      dsa[kk][0] = pack_bf16(dp[2 * kk][0], dp[2 * kk][1]);
      dsa[kk][1] = pack_bf16(dp[2 * kk][2], dp[2 * kk][3]);
      dsa[kk][2] = pack_bf16(dp[2 * kk + 1][0], dp[2 * kk + 1][1]);
      dsa[kk][3] = pack_bf16(dp[2 * kk + 1][2], dp[2 * kk + 1][3]);
    }
    // dV += Pᵀ dO, dK += dSᵀ Q (the softmax scale is applied at the end).
#pragma unroll
    for (int ep = 0; ep < E / 16; ++ep) {
#pragma unroll
      for (int kk = 0; kk < 2; ++kk) {
        uint32_t db[4], qb[4];
        load_b_cols<E>(db, dot_s, kk * 16, ep * 16);
        load_b_cols<E>(qb, qt_s, kk * 16, ep * 16);
        mma_bf16(dv[2 * ep], pa[kk], db[0], db[1]);
        mma_bf16(dv[2 * ep + 1], pa[kk], db[2], db[3]);
        mma_bf16(dk[2 * ep], dsa[kk], qb[0], qb[1]);
        mma_bf16(dk[2 * ep + 1], dsa[kk], qb[2], qb[3]);
      }
    }
    __syncthreads();  // this buffer is refilled two steps on
  }
  cp_async_wait<0>();

#pragma unroll
  for (int rh = 0; rh < 2; ++rh) {
    const int kj = my_k[rh];
    if (kj >= a.T) continue;
    bf16_t* dkr = a.dk + (bT + kj) * a.lddk + static_cast<int64_t>(hk) * E;
    bf16_t* dvr = a.dv + (bT + kj) * a.lddv + static_cast<int64_t>(hk) * E;
#pragma unroll
    for (int j = 0; j < E / 8; ++j) {
      *reinterpret_cast<uint32_t*>(dkr + 8 * j + 2 * t) =
          pack_bf16(dk[j][2 * rh] * a.scale, dk[j][2 * rh + 1] * a.scale);
      *reinterpret_cast<uint32_t*>(dvr + 8 * j + 2 * t) = pack_bf16(dv[j][2 * rh], dv[j][2 * rh + 1]);
    }
  }
}

constexpr int kBwdQRows = 64;

template <int E>
constexpr size_t bwd_q_smem() {
  return sizeof(TileRow<E>) * (2 * kBwdQRows + 4 * kBwdKeys);
}

// dQ for 64 queries of one (b, head): 4 warps × 16 rows, looping over the 64-key tiles they see
// (K / V double-buffered), recomputing P and dS. Each dQ element is owned by one thread.
template <int E>
__global__ void __launch_bounds__(kBwdThreads) attn_bwd_q_kernel(BwdArgs a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  TileRow<E>* q_s = reinterpret_cast<TileRow<E>*>(smem_raw);
  TileRow<E>* do_s = q_s + kBwdQRows;
  TileRow<E>* k_s = do_s + kBwdQRows;  // [2][kBwdKeys]
  TileRow<E>* v_s = k_s + 2 * kBwdKeys;  // [2][kBwdKeys]

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int n_qt = (a.T + kBwdQRows - 1) / kBwdQRows;
  const int q0 = (n_qt - 1 - static_cast<int>(blockIdx.x)) * kBwdQRows;
  const int h = blockIdx.y, b = blockIdx.z;
  const int hk = h / (a.Hq / a.Hkv);
  const int64_t bT = static_cast<int64_t>(b) * a.T;
  const int32_t* seg = a.seg ? a.seg + bT : nullptr;
  const int q_last = min(q0 + kBwdQRows - 1, a.T - 1);
  const int kt_begin = seg ? seg[q0] / kBwdKeys : 0;
  const int kt_end = q_last / kBwdKeys;
  const bf16_t* kb = a.k + bT * a.ldk + static_cast<int64_t>(hk) * E;
  const bf16_t* vb = a.v + bT * a.ldv + static_cast<int64_t>(hk) * E;

  load_tile<E, kBwdQRows, kBwdThreads>(q_s, a.q + bT * a.ldq + static_cast<int64_t>(h) * E, a.ldq, q0, a.T);
  load_tile<E, kBwdQRows, kBwdThreads>(do_s, a.dout + bT * a.lddo + static_cast<int64_t>(h) * E, a.lddo, q0, a.T);
  load_tile<E, kBwdKeys, kBwdThreads>(k_s, kb, a.ldk, kt_begin * kBwdKeys, a.T);
  load_tile<E, kBwdKeys, kBwdThreads>(v_s, vb, a.ldv, kt_begin * kBwdKeys, a.T);
  cp_async_commit();

  const int my_q[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  float my_lse[2], my_dsum[2];
  int my_seg[2] = {0, 0};
#pragma unroll
  for (int rh = 0; rh < 2; ++rh) {
    const int qi = min(my_q[rh], a.T - 1);
    const int64_t idx = (static_cast<int64_t>(b) * a.Hq + h) * a.T + qi;
    my_lse[rh] = a.lse[idx] * kLog2e;
    my_dsum[rh] = a.dsum[idx];
    if (seg) my_seg[rh] = seg[qi];
  }
  float dq[E / 8][4];
#pragma unroll
  for (int j = 0; j < E / 8; ++j) dq[j][0] = dq[j][1] = dq[j][2] = dq[j][3] = 0.0f;

  for (int kt = kt_begin; kt <= kt_end; ++kt) {
    const int buf = (kt - kt_begin) & 1;
    if (kt < kt_end) {
      load_tile<E, kBwdKeys, kBwdThreads>(k_s + (buf ^ 1) * kBwdKeys, kb, a.ldk, (kt + 1) * kBwdKeys, a.T);
      load_tile<E, kBwdKeys, kBwdThreads>(v_s + (buf ^ 1) * kBwdKeys, vb, a.ldv, (kt + 1) * kBwdKeys, a.T);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const TileRow<E>* kt_s = k_s + buf * kBwdKeys;
    const TileRow<E>* vt_s = v_s + buf * kBwdKeys;
    const int k0 = kt * kBwdKeys;

    float s[8][4], dp[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
      dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < E / 16; ++kk) {
      uint32_t qa[4], da[4];
      load_a<E>(qa, q_s, warp * 16, kk * 16);
      load_a<E>(da, do_s, warp * 16, kk * 16);
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t kf[4], vf[4];
        load_b_rows<E>(kf, kt_s, np * 16, kk * 16);
        load_b_rows<E>(vf, vt_s, np * 16, kk * 16);
        mma_bf16(s[2 * np], qa, kf[0], kf[1]);
        mma_bf16(s[2 * np + 1], qa, kf[2], kf[3]);
        mma_bf16(dp[2 * np], da, vf[0], vf[1]);
        mma_bf16(dp[2 * np + 1], da, vf[2], vf[3]);
      }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int rh = e >> 1;
        const int kj = k0 + 8 * j + 2 * t + (e & 1);
        const bool ok = kj <= my_q[rh] && kj >= my_seg[rh] && my_q[rh] < a.T;
        const float p = ok ? exp2f(s[j][e] * a.scale_log2 - my_lse[rh]) : 0.0f;
        dp[j][e] = p * (dp[j][e] - my_dsum[rh]);
      }
    }
    uint32_t dsa[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      dsa[kk][0] = pack_bf16(dp[2 * kk][0], dp[2 * kk][1]);
      dsa[kk][1] = pack_bf16(dp[2 * kk][2], dp[2 * kk][3]);
      dsa[kk][2] = pack_bf16(dp[2 * kk + 1][0], dp[2 * kk + 1][1]);
      dsa[kk][3] = pack_bf16(dp[2 * kk + 1][2], dp[2 * kk + 1][3]);
    }
#pragma unroll
    for (int ep = 0; ep < E / 16; ++ep) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        uint32_t kf[4];
        load_b_cols<E>(kf, kt_s, kk * 16, ep * 16);
        mma_bf16(dq[2 * ep], dsa[kk], kf[0], kf[1]);
        mma_bf16(dq[2 * ep + 1], dsa[kk], kf[2], kf[3]);
      }
    }
    __syncthreads();  // this buffer is refilled by the next step's prefetch
  }

#pragma unroll
  for (int rh = 0; rh < 2; ++rh) {
    const int qi = my_q[rh];
    if (qi >= a.T) continue;
    bf16_t* row = a.dq + (bT + qi) * a.lddq + static_cast<int64_t>(h) * E;
#pragma unroll
    for (int j = 0; j < E / 8; ++j)
      *reinterpret_cast<uint32_t*>(row + 8 * j + 2 * t) =
          pack_bf16(dq[j][2 * rh] * a.scale, dq[j][2 * rh + 1] * a.scale);
  }
}

template <typename K>
void allow_smem(K kernel, size_t bytes) {
  HLM_REQUIRE(bytes <= static_cast<size_t>(device_props().sharedMemPerBlockOptin), ErrorKind::Unsupported,
              "attention kernel needs {} bytes of shared memory", bytes);
  HLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(bytes)));
}

void own_forward(const AttentionParams& p, const Shape& s, int64_t ldo, const Tensor& out,
                 const Tensor& lse) {
  const char* op = "attention_forward";
  HLM_REQUIRE(vector_aligned(p.q.data, s.ldq) && vector_aligned(p.k.data, s.ldk) &&
                  vector_aligned(p.v.data, s.ldv) && pointer_alignment(out.data) >= 4 && ldo % 2 == 0,
              ErrorKind::Unsupported, "{}: q/k/v need 16-byte aligned rows for the CUDA kernels", op);
  FwdArgs a{};
  a.q = static_cast<const bf16_t*>(p.q.data);
  a.k = static_cast<const bf16_t*>(p.k.data);
  a.v = static_cast<const bf16_t*>(p.v.data);
  a.o = static_cast<bf16_t*>(out.data);
  a.lse = lse.ptr<float>();
  a.ldq = s.ldq;
  a.ldk = s.ldk;
  a.ldv = s.ldv;
  a.ldo = ldo;
  a.T = static_cast<int>(s.T);
  a.Hq = static_cast<int>(s.Hq);
  a.Hkv = static_cast<int>(s.Hkv);
  a.scale_log2 = p.scale * kLog2e;
  a.seg = doc_segments(p.doc, s);
  dim3 grid(static_cast<unsigned>((s.T + kFwdRows - 1) / kFwdRows), static_cast<unsigned>(s.Hq),
            static_cast<unsigned>(s.B));
  if (s.E == 64) {
    allow_smem(attn_fwd_kernel<64>, fwd_smem<64>());
    attn_fwd_kernel<64><<<grid, kFwdThreads, fwd_smem<64>(), stream()>>>(a);
  } else {
    allow_smem(attn_fwd_kernel<128>, fwd_smem<128>());
    attn_fwd_kernel<128><<<grid, kFwdThreads, fwd_smem<128>(), stream()>>>(a);
  }
  HLM_CUDA_CHECK_LAUNCH();
}

void own_backward(const AttentionParams& p, const Shape& s, const Tensor& out, int64_t ldo,
                  const Tensor& lse, const Tensor& dout, int64_t lddo, const Tensor& dq, int64_t lddq,
                  const Tensor& dk, int64_t lddk, const Tensor& dv, int64_t lddv) {
  const char* op = "attention_backward";
  HLM_REQUIRE(vector_aligned(p.q.data, s.ldq) && vector_aligned(p.k.data, s.ldk) &&
                  vector_aligned(p.v.data, s.ldv) && vector_aligned(dout.data, lddo) &&
                  pointer_alignment(dq.data) >= 4 && pointer_alignment(dk.data) >= 4 &&
                  pointer_alignment(dv.data) >= 4 && lddq % 2 == 0 && lddk % 2 == 0 && lddv % 2 == 0,
              ErrorKind::Unsupported, "{}: tensors need 16-byte aligned rows for the CUDA kernels", op);
  float* dsum = scratch_as<float>(Scratch::Attn2, static_cast<size_t>(s.B * s.Hq * s.T));
  {
    const int64_t warps = s.B * s.T * s.Hq;
    attn_dsum_kernel<<<grid_for(warps * 32, 256), 256, 0, stream()>>>(
        static_cast<const bf16_t*>(dout.data), lddo, static_cast<const bf16_t*>(out.data), ldo, s.B,
        s.T, s.Hq, s.E, dsum);
    HLM_CUDA_CHECK_LAUNCH();
  }
  BwdArgs a{};
  a.q = static_cast<const bf16_t*>(p.q.data);
  a.k = static_cast<const bf16_t*>(p.k.data);
  a.v = static_cast<const bf16_t*>(p.v.data);
  a.dout = static_cast<const bf16_t*>(dout.data);
  a.lse = lse.ptr<float>();
  a.dsum = dsum;
  a.dq = static_cast<bf16_t*>(dq.data);
  a.dk = static_cast<bf16_t*>(dk.data);
  a.dv = static_cast<bf16_t*>(dv.data);
  a.ldq = s.ldq;
  a.ldk = s.ldk;
  a.ldv = s.ldv;
  a.lddo = lddo;
  a.lddq = lddq;
  a.lddk = lddk;
  a.lddv = lddv;
  a.T = static_cast<int>(s.T);
  a.Hq = static_cast<int>(s.Hq);
  a.Hkv = static_cast<int>(s.Hkv);
  a.scale = p.scale;
  a.scale_log2 = p.scale * kLog2e;
  a.seg = doc_segments(p.doc, s);
  dim3 grid_kv(static_cast<unsigned>((s.T + kBwdKeys - 1) / kBwdKeys), static_cast<unsigned>(s.Hkv),
               static_cast<unsigned>(s.B));
  dim3 grid_q(static_cast<unsigned>((s.T + kBwdQRows - 1) / kBwdQRows), static_cast<unsigned>(s.Hq),
              static_cast<unsigned>(s.B));
  if (s.E == 64) {
    allow_smem(attn_bwd_kv_kernel<64>, bwd_kv_smem<64>());
    allow_smem(attn_bwd_q_kernel<64>, bwd_q_smem<64>());
    attn_bwd_kv_kernel<64><<<grid_kv, kBwdThreads, bwd_kv_smem<64>(), stream()>>>(a);
    HLM_CUDA_CHECK_LAUNCH();
    attn_bwd_q_kernel<64><<<grid_q, kBwdThreads, bwd_q_smem<64>(), stream()>>>(a);
  } else {
    allow_smem(attn_bwd_kv_kernel<128>, bwd_kv_smem<128>());
    allow_smem(attn_bwd_q_kernel<128>, bwd_q_smem<128>());
    attn_bwd_kv_kernel<128><<<grid_kv, kBwdThreads, bwd_kv_smem<128>(), stream()>>>(a);
    HLM_CUDA_CHECK_LAUNCH();
    attn_bwd_q_kernel<128><<<grid_q, kBwdThreads, bwd_q_smem<128>(), stream()>>>(a);
  }
  HLM_CUDA_CHECK_LAUNCH();
}

// ---- RoPE (GPT-NeoX rotate-half) ---------------------------------------------------------------

// One thread per (token, rotation pair i): the angle pos · θ^(−2i/rot) in double (positions reach
// 10^5 and more), then every head of the token rotated with it.
template <typename T>
__global__ void rope_kernel(T* x, int64_t ld, int64_t H, int64_t E, const int32_t* pos, int64_t rows,
                            int64_t half, double log_theta, int64_t rot_dim, bool inverse) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * half) return;
  const int64_t r = idx / half, i = idx % half;
  const double inv_freq = exp(-log_theta * (2.0 * static_cast<double>(i) / static_cast<double>(rot_dim)));
  const double ang = static_cast<double>(pos[r]) * inv_freq;
  double sd, cd;
  sincos(ang, &sd, &cd);
  const float c = static_cast<float>(cd), s = inverse ? -static_cast<float>(sd) : static_cast<float>(sd);
  T* row = x + r * ld;
  for (int64_t h = 0; h < H; ++h) {
    T* p = row + h * E;
    const float x1 = to_f32(p[i]), x2 = to_f32(p[i + half]);
    p[i] = from_f32<T>(x1 * c - x2 * s);
    p[i + half] = from_f32<T>(x2 * c + x1 * s);
  }
}

}  // namespace

// ---- entry points ------------------------------------------------------------------------------

void attention_forward(const AttentionParams& p, const Tensor& out, const Tensor& lse) {
  const char* op = "attention_forward";
  const Shape s = check_qkv(p, op);
  const int64_t ldo = check_like(out, s, s.Hq, op, "out");
  check_lse(lse, s, op);
  if (s.B == 0 || s.T == 0) return;
  const Backend be = backend_from_env();
  if (be != Backend::Own) {
    std::string why;
    if (cudnn_attention::forward(p, out, lse, &why)) return;
    HLM_REQUIRE(be != Backend::Cudnn, ErrorKind::Unsupported, "{}: cuDNN attention: {}", op, why);
    warn_once(fmt::format("{}: cuDNN attention not used ({}); using the built-in kernel", op, why));
  }
  own_forward(p, s, ldo, out, lse);
}

void attention_backward(const AttentionParams& p, const Tensor& out, const Tensor& lse,
                        const Tensor& dout, const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  const char* op = "attention_backward";
  const Shape s = check_qkv(p, op);
  const int64_t ldo = check_like(out, s, s.Hq, op, "out");
  const int64_t lddo = check_like(dout, s, s.Hq, op, "dout");
  const int64_t lddq = check_like(dq, s, s.Hq, op, "dq");
  const int64_t lddk = check_like(dk, s, s.Hkv, op, "dk");
  const int64_t lddv = check_like(dv, s, s.Hkv, op, "dv");
  check_lse(lse, s, op);
  if (s.B == 0 || s.T == 0) return;
  const Backend be = backend_from_env();
  if (be != Backend::Own) {
    std::string why;
    if (cudnn_attention::backward(p, out, lse, dout, dq, dk, dv, deterministic(),
                                  det_workspace_limit(), &why))
      return;
    HLM_REQUIRE(be != Backend::Cudnn, ErrorKind::Unsupported, "{}: cuDNN attention: {}", op, why);
    if (!deterministic())
      warn_once(fmt::format("{}: cuDNN attention not used ({}); using the built-in kernel", op, why));
  }
  own_backward(p, s, out, ldo, lse, dout, lddo, dq, lddq, dk, lddk, dv, lddv);
}

void rope_apply(const Tensor& x, const Tensor& pos, float theta, int64_t rot_dim, bool inverse) {
  const char* op = "rope_apply";
  require_cuda(x, op, "x");
  require_float(x, op, "x");
  HLM_REQUIRE(x.ndim == 4, ErrorKind::Internal, "{}: x {} must be [B,T,H,E]", op, x.describe());
  const int64_t B = x.shape[0], T = x.shape[1], H = x.shape[2], E = x.shape[3];
  HLM_REQUIRE(rot_dim > 0 && rot_dim % 2 == 0 && rot_dim <= E, ErrorKind::InvalidArgument,
              "{}: rot_dim {} must be even and in (0, {}]", op, rot_dim, E);
  HLM_REQUIRE(theta > 0.0f, ErrorKind::InvalidArgument, "{}: theta {} must be positive", op, theta);
  require_index(pos, B * T, op, "pos");
  RowView X = as_rows(x, 2, op);
  const int64_t half = rot_dim / 2, rows = B * T;
  if (rows == 0) return;
  dispatch_float(x.dtype, op, [&]<typename T_>() {
    rope_kernel<T_><<<grid_for(rows * half, 256), 256, 0, stream()>>>(
        static_cast<T_*>(X.data), X.ld, H, E, pos.ptr<int32_t>(), rows, half,
        std::log(static_cast<double>(theta)), rot_dim, inverse);
    HLM_CUDA_CHECK_LAUNCH();
  });
}

void attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                      const Tensor& start, const Tensor& len, float scale, const Tensor& out) {
  const char* op = "attention_decode";
  for (auto [t, name] : {std::pair{&q, "q"}, {&k_cache, "k_cache"}, {&v_cache, "v_cache"}, {&out, "out"}}) {
    require_cuda(*t, op, name);
    require_dtype(*t, DType::BF16, op, name);
  }
  HLM_REQUIRE(q.ndim == 3 && k_cache.ndim == 4 && same_shape(k_cache, v_cache) && same_shape(q, out),
              ErrorKind::Internal, "{}: q {} / out {} must be [B,Hq,E], caches {} / {} [B,S,Hkv,E]",
              op, q.describe(), out.describe(), k_cache.describe(), v_cache.describe());
  const int64_t B = q.shape[0], Hq = q.shape[1], E = q.shape[2];
  const int64_t S = k_cache.shape[1], Hkv = k_cache.shape[2];
  HLM_REQUIRE(k_cache.shape[0] == B && k_cache.shape[3] == E, ErrorKind::Internal,
              "{}: caches {} do not fit q {}", op, k_cache.describe(), q.describe());
  HLM_REQUIRE(Hkv > 0 && Hq % Hkv == 0, ErrorKind::InvalidArgument,
              "{}: {} query heads are not a multiple of {} KV heads", op, Hq, Hkv);
  HLM_REQUIRE(E == 64 || E == 128, ErrorKind::Unsupported, "{}: head dim {} (64 or 128)", op, E);
  HLM_REQUIRE(S < (int64_t{1} << 31), ErrorKind::Unsupported, "{}: cache length {} exceeds 2^31", op, S);
  require_index(start, B, op, "start");
  require_index(len, B, op, "len");
  RowView Q = as_rows(q, 2, op), O = as_rows(out, 2, op), K = as_rows(k_cache, 2, op),
          V = as_rows(v_cache, 2, op);
  HLM_REQUIRE(vector_aligned(K.data, K.ld) && vector_aligned(V.data, V.ld), ErrorKind::Unsupported,
              "{}: caches need 16-byte aligned rows", op);
  if (B == 0 || Hq == 0) return;
  DecodeProblem d{};
  d.q = Q.data;
  d.k = K.data;
  d.v = V.data;
  d.out = O.data;
  d.start = start.ptr<int32_t>();
  d.len = len.ptr<int32_t>();
  d.ldq = Q.ld;
  d.ldk = K.ld;
  d.ldv = V.ld;
  d.ldo = O.ld;
  d.B = static_cast<int>(B);
  d.S = static_cast<int>(S);
  d.Hq = static_cast<int>(Hq);
  d.Hkv = static_cast<int>(Hkv);
  d.E = static_cast<int>(E);
  d.scale = scale;
  attention_decode_run(d);
}

}  // namespace hlm::cuda
