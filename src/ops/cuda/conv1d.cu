// CUDA causal depthwise conv1d + bias + SiLU (the Mamba-2 short conv): forward, backward (dw and
// dbias through per-segment partials reduced in a fixed order), the decode update and the state
// taken from a prefill. Memory-bound: each thread owns 16 bytes of channels and walks a strip of
// time with the last K-1 inputs in registers; rows stream through a per-thread cp.async ring.
#include <algorithm>
#include <cstdlib>
#include <type_traits>

#include "ops/conv1d.h"
#include "ops/cuda/ssd_kernels.cuh"

namespace hlm::cuda {
namespace {

using ssd::load_any;
using ssd::store_any;

struct ConvArgs {
  const void* x = nullptr;
  int64_t ld_x = 0;
  const void* w = nullptr;  // [C][K] contiguous
  int w_type = 0;
  const void* bias = nullptr;
  int bias_type = 0;
  const int32_t* doc = nullptr;
  int64_t ld_doc = 0;
  void* y = nullptr;
  int64_t ld_y = 0;
  const void* dy = nullptr;
  int64_t ld_dy = 0;
  void* dx = nullptr;
  int64_t ld_dx = 0;
  float* part = nullptr;  // [B*nseg][K+1][C]: per-segment dw (k < K) and dbias (k = K)
  int B = 0, T = 0, C = 0, seg_len = 0, nseg = 0;
};

template <typename T, int V>
__device__ __forceinline__ void load_vec(const T* p, float (&out)[V]) {
  if constexpr (V * sizeof(T) == 16) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    T e[V];
    memcpy(e, &u, 16);  // register reinterpretation (no aliasing through pointers)
#pragma unroll
    for (int v = 0; v < V; ++v) out[v] = to_f32<T>(e[v]);
  } else {
#pragma unroll
    for (int v = 0; v < V; ++v) out[v] = to_f32<T>(p[v]);
  }
}
template <typename T, int V>
__device__ __forceinline__ void store_vec(T* p, const float (&in)[V]) {
  if constexpr (V * sizeof(T) == 16) {
    T e[V];
#pragma unroll
    for (int v = 0; v < V; ++v) e[v] = from_f32<T>(in[v]);
    uint4 u;
    memcpy(&u, e, 16);
    *reinterpret_cast<uint4*>(p) = u;
  } else {
#pragma unroll
    for (int v = 0; v < V; ++v) p[v] = from_f32<T>(in[v]);
  }
}

// sigmoid(z) = 1 / (1 + 2^(-z log2 e)) by ex2.approx and rcp.approx: 2 MUFU and 3 other
// instructions, relative error of a few float ulps everywhere, tails included. 1.f / x is an IEEE division (~8
// instructions and a slow-path check per element); tanh.approx (1 MUFU) has 2^-11 relative error
// on tanh, which near tanh = -1 is no accuracy at all for sigmoid = (1 + tanh) / 2 (silu's negative
// tail). z -> -inf: 2^inf = inf, rcp(inf) = 0.
__device__ __forceinline__ float sigmoidf_(float z) {
#ifdef HLM_CUDA_EMU
  return 1.f / (1.f + std::exp2(-z * 1.4426950408889634f));
#else
  float e, r;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(e) : "f"(-z * 1.4426950408889634f));
  asm("rcp.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(1.f + e));
  return r;
#endif
}

// 16 bytes of T from floats; bf16 pairs through one cvt.rn.bf16x2.f32 each.
template <typename T, int V>
__device__ __forceinline__ uint4 pack16(const float (&in)[V]) {
  static_assert(V * sizeof(T) == 16, "16-byte vectors");
  uint4 u;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    __nv_bfloat162 e[V / 2];
#pragma unroll
    for (int v = 0; v < V / 2; ++v) e[v] = __floats2bfloat162_rn(in[2 * v], in[2 * v + 1]);
    memcpy(&u, e, 16);
  } else {
    T e[V];
#pragma unroll
    for (int v = 0; v < V; ++v) e[v] = from_f32<T>(in[v]);
    memcpy(&u, e, 16);
  }
  return u;
}
template <typename T, int V>
__device__ __forceinline__ void unpack16(const uint4& u, float (&out)[V]) {
  T e[V];
  memcpy(e, &u, 16);
#pragma unroll
  for (int v = 0; v < V; ++v) out[v] = to_f32<T>(e[v]);
}

// Weights and bias of channels c0 .. c0+V-1.
template <int K, int V>
struct ChannelParams {
  float w[V][K], b[V];
  __device__ __forceinline__ void load(const ConvArgs& a, int c0) {
#pragma unroll
    for (int v = 0; v < V; ++v) {
#pragma unroll
      for (int k = 0; k < K; ++k) w[v][k] = load_any(a.w, a.w_type, static_cast<int64_t>(c0 + v) * K + k);
      b[v] = a.bias ? load_any(a.bias, a.bias_type, c0 + v) : 0.f;
    }
  }
};

// Document starts: position t (> 0) starts a new document when its id differs from t-1's. Inputs
// count for an output only with no document start in between (the CPU op's rule), tracked as a
// running count of starts ("segment") per position.
struct SegCounter {
  const int32_t* doc;  // row b, or null
  int seg = 0;
  int32_t prev = 0;
  bool has_prev = false;
  // Segment of the next position, given its document id.
  __device__ __forceinline__ int with_id(int32_t d) {
    if (has_prev && d != prev) ++seg;
    prev = d;
    has_prev = true;
    return seg;
  }
  // Segment of position t; successive calls must be for consecutive positions.
  __device__ __forceinline__ int next(int t) { return doc ? with_id(doc[t]) : seg; }
};

// The K-1 inputs before the current position, oldest first, with their segments (all 0 and never
// compared without documents: kDoc false).
template <typename T, int K, int V, bool kDoc = true>
struct Window {
  float x[K > 1 ? K - 1 : 1][V];
  int doc[K > 1 ? K - 1 : 1];  // segment (SegCounter) of each entry
  bool ok[K > 1 ? K - 1 : 1];
  // Loads positions t-K+1 .. t-1; sc then continues at t.
  __device__ __forceinline__ void init(const ConvArgs& a, int b, int t, int c0, SegCounter& sc) {
#pragma unroll
    for (int j = 0; j < K - 1; ++j) {
      const int pos = t - (K - 1) + j;
      ok[j] = pos >= 0;
      doc[j] = 0;
      if (kDoc && ok[j]) doc[j] = sc.next(pos);
      if (ok[j])
        load_vec<T, V>(static_cast<const T*>(a.x) + (static_cast<int64_t>(b) * a.T + pos) * a.ld_x + c0, x[j]);
      else
#pragma unroll
        for (int v = 0; v < V; ++v) x[j][v] = 0.f;
    }
  }
  // Pre-activation at a position with input cur and document d (kCheck false: every entry counts,
  // see all_in).
  template <bool kCheck = true>
  __device__ __forceinline__ void z(const ChannelParams<K, V>& cp, const float (&cur)[V], int d,
                                    float (&out)[V]) const {
#pragma unroll
    for (int v = 0; v < V; ++v) out[v] = cp.b[v] + cp.w[v][K - 1] * cur[v];
#pragma unroll
    for (int j = 0; j < K - 1; ++j) {
      if (!kCheck || same(j, d))
#pragma unroll
        for (int v = 0; v < V; ++v) out[v] += cp.w[v][j] * x[j][v];
    }
  }
  // Whether entry j counts for a position of document d.
  __device__ __forceinline__ bool same(int j, int d) const { return ok[j] && (!kDoc || doc[j] == d); }
  // Whether every entry counts for document d: positions and segments only grow along the window,
  // so the oldest entry decides.
  __device__ __forceinline__ bool all_in(int d) const { return ok[0] && (!kDoc || doc[0] == d); }
  __device__ __forceinline__ void push(const float (&cur)[V], int d) {
#pragma unroll
    for (int j = 0; j + 1 < K - 1; ++j) {
      ok[j] = ok[j + 1];
      doc[j] = doc[j + 1];
#pragma unroll
      for (int v = 0; v < V; ++v) x[j][v] = x[j + 1][v];
    }
    if constexpr (K > 1) {
      ok[K - 2] = true;
      doc[K - 2] = d;
#pragma unroll
      for (int v = 0; v < V; ++v) x[K - 2][v] = cur[v];
    }
  }
};

template <typename T, int K, int V>
__global__ void __launch_bounds__(128) conv_fwd_kernel(const ConvArgs a) {
  const int c0 = (blockIdx.x * 128 + threadIdx.x) * V;
  if (c0 >= a.C) return;
  const int seg = blockIdx.y, b = blockIdx.z;
  const int t_begin = seg * a.seg_len, t_end = min(a.T, t_begin + a.seg_len);
  ChannelParams<K, V> cp;
  cp.load(a, c0);
  SegCounter sc{a.doc ? a.doc + b * a.ld_doc : nullptr};
  Window<T, K, V> win;
  win.init(a, b, t_begin, c0, sc);
  const T* xg = static_cast<const T*>(a.x) + static_cast<int64_t>(b) * a.T * a.ld_x + c0;
  T* yg = static_cast<T*>(a.y) + static_cast<int64_t>(b) * a.T * a.ld_y + c0;
  constexpr int U = 4;  // rows loaded before use: independent 16-byte loads in flight
  for (int t = t_begin; t < t_end; t += U) {
    float cur[U][V];
    int d[U];
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (t + u < t_end) {
        load_vec<T, V>(xg + static_cast<int64_t>(t + u) * a.ld_x, cur[u]);
        d[u] = sc.next(t + u);
      }
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (t + u < t_end) {
        float z[V];
        win.z(cp, cur[u], d[u], z);
#pragma unroll
        for (int v = 0; v < V; ++v) z[v] = z[v] * sigmoidf_(z[v]);
        store_vec<T, V>(yg + static_cast<int64_t>(t + u) * a.ld_y, z);
        win.push(cur[u], d[u]);
      }
  }
}

// 16-byte vector paths. A block of `threads` threads covers threads x 16 contiguous bytes of each
// row (4 KiB for the forward) and one strip of time; each thread streams its rows through a
// private ring of shared memory by cp.async, `stages` groups of `rows` rows (stages - 1 groups in
// flight while one is consumed: the copy engine holds the bytes, not registers). No barriers: a
// thread reads only its own slots, which are thread-contiguous per slot (a warp's 16-byte reads of
// one slot are 512 contiguous bytes: conflict-free). The grid is one wave: blocks_per_sm (launch
// bounds; registers and shared memory allow it) x SMs blocks with equally long strips.
struct StripCfg {
  int threads, rows, stages, blocks_per_sm, bytes_per_row;  // bytes_per_row: per thread and position
  constexpr size_t smem() const { return size_t(threads) * rows * stages * bytes_per_row; }
};
// Forward: 126 registers (bf16, K = 4, documents); 64 KiB per block, 96 KiB in flight per SM.
constexpr StripCfg kFwd{256, 4, 4, 2, 16};
// Backward: w, bias, the x window, the dx partial sums, dw and dbias are 128 floats live through
// the loop at K = 4, V = 8; three blocks per SM (168 registers at most) spilled ~200 bytes, so two
// blocks of 4 warps (221 registers) with a deeper ring: 96 KiB per block, 160 KiB in flight per SM.
constexpr StripCfg kBwd{128, 4, 6, 2, 32};
constexpr int kMinStrip = 32;  // rows: the K-1 halo rows are read twice

// Document ids of the kRows positions of group grp (0 past t_end): loaded one group ahead so their
// latency hides behind a group's work (every thread of the grid reads the same few ids: L1 / L2).
template <int kRows>
__device__ __forceinline__ void load_ids(const int32_t* doc, int t0, int t_end, int32_t (&ids)[kRows]) {
#pragma unroll
  for (int u = 0; u < kRows; ++u) ids[u] = t0 + u < t_end ? doc[t0 + u] : 0;
}

// A group takes the straight-line path only if its rows all belong to the document `id` too
// (always true without documents): clears `fast` otherwise.
template <bool kDoc, int kRows>
__device__ __forceinline__ void require_rows_in_doc(bool& fast, const int32_t (&ids)[kRows], int32_t id) {
  if constexpr (kDoc)
#pragma unroll
    for (int u = 0; u < kRows; ++u) fast = fast && ids[u] == id;
}

template <typename T, int K, int V, bool kDoc>
__global__ void __launch_bounds__(kFwd.threads, kFwd.blocks_per_sm) conv_fwd_vec_kernel(const ConvArgs a) {
  static_assert(V * sizeof(T) == 16, "16-byte vectors");
  constexpr int R = kFwd.rows, S = kFwd.stages, NT = kFwd.threads;
  const int c0 = (blockIdx.x * NT + threadIdx.x) * V;
  if (c0 >= a.C) return;
  const int seg = blockIdx.y, b = blockIdx.z;
  const int t_begin = seg * a.seg_len, t_end = min(a.T, t_begin + a.seg_len);
  auto* ring = reinterpret_cast<uint4*>(mma::dynamic_smem()) + threadIdx.x;  // slot i at ring[i * NT]
  const T* xg = static_cast<const T*>(a.x) + static_cast<int64_t>(b) * a.T * a.ld_x + c0;
  T* yg = static_cast<T*>(a.y) + static_cast<int64_t>(b) * a.T * a.ld_y + c0;
  const int ngroups = (t_end - t_begin + R - 1) / R;
  auto issue = [&](int grp) {  // rows of group grp into its slots (zero-filled past the strip)
    if (grp < ngroups)
#pragma unroll
      for (int u = 0; u < R; ++u) {
        const int t = t_begin + grp * R + u;
        const bool valid = t < t_end;
        mma::cp_async16(ring + ((grp % S) * R + u) * NT, xg + static_cast<int64_t>(valid ? t : t_begin) * a.ld_x, valid);
      }
    mma::cp_async_commit();
  };
#pragma unroll
  for (int g = 0; g < S; ++g) issue(g);
  ChannelParams<K, V> cp;
  cp.load(a, c0);
  const int32_t* doc = kDoc ? a.doc + static_cast<int64_t>(b) * a.ld_doc : nullptr;
  SegCounter sc{doc};
  Window<T, K, V, kDoc> win;
  win.init(a, b, t_begin, c0, sc);
  int32_t ids[R] = {};
  if constexpr (kDoc) load_ids<R>(doc, t_begin, t_end, ids);
  for (int grp = 0; grp < ngroups; ++grp) {
    int32_t next_ids[R] = {};
    if constexpr (kDoc) load_ids<R>(doc, t_begin + (grp + 1) * R, t_end, next_ids);
    mma::cp_async_wait<S - 1>();  // group grp has landed
    const int t0 = t_begin + grp * R;
    auto rows = [&](auto checked) {  // checked false: no bounds or document tests (see fast below)
      constexpr bool kChecked = decltype(checked)::value;
#pragma unroll
      for (int u = 0; u < R; ++u) {
        const int t = t0 + u;
        if (!kChecked || t < t_end) {
          float cur[V], z[V];
          unpack16<T, V>(ring[((grp % S) * R + u) * NT], cur);
          const int d = kDoc && kChecked ? sc.with_id(ids[u]) : sc.seg;
          win.template z<kChecked>(cp, cur, d, z);
#pragma unroll
          for (int v = 0; v < V; ++v) z[v] = z[v] * sigmoidf_(z[v]);
          *reinterpret_cast<uint4*>(yg + static_cast<int64_t>(t) * a.ld_y) = pack16<T, V>(z);
          win.push(cur, d);
        }
      }
    };
    // The common group: whole, inside the strip, window and rows in one document. Its rows are
    // straight-line code (no branch per row and window entry) that the compiler can interleave.
    bool fast = t0 + R <= t_end && win.all_in(sc.seg);
    require_rows_in_doc<kDoc>(fast, ids, sc.prev);
    if (fast)
      rows(std::false_type{});
    else
      rows(std::true_type{});
    issue(grp + S);  // into the slots just consumed (their values are in registers)
#pragma unroll
    for (int u = 0; u < R; ++u) ids[u] = next_ids[u];
  }
  mma::cp_async_wait<0>();
}

// Backward, 16-byte vector path: the forward's strip layout with x and dy rows in the ring. Step t
// (t_begin <= t < t_end + K-1) recomputes z_t and dz_t = dy_t silu'(z_t), adds dz_t's terms to
// the dx partial sums of positions t-K+1 .. t-1 (acc, aligned with the x window: the same
// document test serves dw and dx) and writes dx of position t-K+1, now complete. dw and dbias
// sum over t < t_end into the block's partial row (reduced in a fixed order later).
template <typename T, int K, int V, bool kDoc>
__global__ void __launch_bounds__(kBwd.threads, kBwd.blocks_per_sm) conv_bwd_vec_kernel(const ConvArgs a) {
  static_assert(V * sizeof(T) == 16 && K >= 2, "16-byte vectors, K >= 2");
  constexpr int R = kBwd.rows, S = kBwd.stages, NT = kBwd.threads;
  const int c0 = (blockIdx.x * NT + threadIdx.x) * V;
  if (c0 >= a.C) return;
  const int seg = blockIdx.y, b = blockIdx.z;
  const int t_begin = seg * a.seg_len, t_end = min(a.T, t_begin + a.seg_len);
  const int t_stop = t_end + K - 1, t_hi = min(a.T, t_stop);  // steps; rows read
  auto* ring = reinterpret_cast<uint4*>(mma::dynamic_smem()) + threadIdx.x;  // x of slot i at ring[2i * NT], dy at ring[(2i+1) * NT]
  const int64_t rb = static_cast<int64_t>(b) * a.T;
  const T* xg = static_cast<const T*>(a.x) + rb * a.ld_x + c0;
  const T* dyg = static_cast<const T*>(a.dy) + rb * a.ld_dy + c0;
  T* dxg = a.dx ? static_cast<T*>(a.dx) + rb * a.ld_dx + c0 : nullptr;
  const int ngroups = (t_stop - t_begin + R - 1) / R;
  auto issue = [&](int grp) {
    if (grp < ngroups)
#pragma unroll
      for (int u = 0; u < R; ++u) {
        const int t = t_begin + grp * R + u;
        const bool valid = t < t_hi;
        const int64_t tt = valid ? t : t_begin;
        const int i = (grp % S) * R + u;
        mma::cp_async16(ring + (2 * i) * NT, xg + tt * a.ld_x, valid);
        mma::cp_async16(ring + (2 * i + 1) * NT, dyg + tt * a.ld_dy, valid);
      }
    mma::cp_async_commit();
  };
#pragma unroll
  for (int g = 0; g < S; ++g) issue(g);
  ChannelParams<K, V> cp;
  cp.load(a, c0);
  const int32_t* doc = kDoc ? a.doc + static_cast<int64_t>(b) * a.ld_doc : nullptr;
  SegCounter sc{doc};
  Window<T, K, V, kDoc> win;
  win.init(a, b, t_begin, c0, sc);
  float acc[K - 1][V], dw[V][K], db[V];
#pragma unroll
  for (int v = 0; v < V; ++v) {
    db[v] = 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) dw[v][k] = 0.f;
#pragma unroll
    for (int j = 0; j < K - 1; ++j) acc[j][v] = 0.f;
  }
  int32_t ids[R] = {};
  if constexpr (kDoc) load_ids<R>(doc, t_begin, t_hi, ids);
  for (int grp = 0; grp < ngroups; ++grp) {
    int32_t next_ids[R] = {};
    if constexpr (kDoc) load_ids<R>(doc, t_begin + (grp + 1) * R, t_hi, next_ids);
    mma::cp_async_wait<S - 1>();  // group grp has landed
    const int t0 = t_begin + grp * R;
    auto rows = [&](auto checked) {  // checked false: no bounds or document tests (see fast below)
      constexpr bool kChecked = decltype(checked)::value;
#pragma unroll
      for (int u = 0; u < R; ++u) {
        const int t = t0 + u;
        if (!kChecked || t < t_stop) {
          float dz[V];
          if (!kChecked || t < t_hi) {
            const int i = (grp % S) * R + u;
            float cur[V], g[V], z[V];
            unpack16<T, V>(ring[(2 * i) * NT], cur);
            unpack16<T, V>(ring[(2 * i + 1) * NT], g);
            const int d = kDoc && kChecked ? sc.with_id(ids[u]) : sc.seg;
            win.template z<kChecked>(cp, cur, d, z);
#pragma unroll
            for (int v = 0; v < V; ++v) {
              const float s = sigmoidf_(z[v]);
              dz[v] = g[v] * s * (1.f + z[v] * (1.f - s));
            }
            if (!kChecked || t < t_end) {
#pragma unroll
              for (int v = 0; v < V; ++v) {
                db[v] += dz[v];
                dw[v][K - 1] += dz[v] * cur[v];
              }
#pragma unroll
              for (int j = 0; j < K - 1; ++j)
                if (!kChecked || win.same(j, d))
#pragma unroll
                  for (int v = 0; v < V; ++v) dw[v][j] += dz[v] * win.x[j][v];
            }
#pragma unroll
            for (int j = 0; j < K - 1; ++j)
              if (!kChecked || win.same(j, d))
#pragma unroll
                for (int v = 0; v < V; ++v) acc[j][v] += cp.w[v][j] * dz[v];
            win.push(cur, d);
          } else {
#pragma unroll
            for (int v = 0; v < V; ++v) dz[v] = 0.f;
          }
          const int tp = t - (K - 1);  // acc[0]'s position: dz_t was its last term
          if ((!kChecked || tp >= t_begin) && dxg)
            *reinterpret_cast<uint4*>(dxg + static_cast<int64_t>(tp) * a.ld_dx) = pack16<T, V>(acc[0]);
#pragma unroll
          for (int j = 0; j + 1 < K - 1; ++j)
#pragma unroll
            for (int v = 0; v < V; ++v) acc[j][v] = acc[j + 1][v];
#pragma unroll
          for (int v = 0; v < V; ++v) acc[K - 2][v] = cp.w[v][K - 1] * dz[v];
        }
      }
    };
    // The common group: whole, inside [t_begin + K-1, t_end) (rows read and summed into dw, dx
    // written for every row), window and rows in one document: straight-line code.
    bool fast = t0 >= t_begin + K - 1 && t0 + R <= t_end && win.all_in(sc.seg);
    require_rows_in_doc<kDoc>(fast, ids, sc.prev);
    if (fast)
      rows(std::false_type{});
    else
      rows(std::true_type{});
    issue(grp + S);
#pragma unroll
    for (int u = 0; u < R; ++u) ids[u] = next_ids[u];
  }
  mma::cp_async_wait<0>();
  if (a.part) {
    float* pp = a.part + (static_cast<int64_t>(b) * a.nseg + seg) * (K + 1) * a.C + c0;
#pragma unroll
    for (int v = 0; v < V; ++v) {
#pragma unroll
      for (int k = 0; k < K; ++k) pp[static_cast<int64_t>(k) * a.C + v] = dw[v][k];
      pp[static_cast<int64_t>(K) * a.C + v] = db[v];
    }
  }
}

// dz_t = dy_t silu'(z_t); dx_t = sum_k w_k dz_{t+K-1-k} (same document); dw_k, dbias summed
// over the segment into the partials.
template <typename T, int K, int V>
__global__ void __launch_bounds__(128) conv_bwd_kernel(const ConvArgs a) {
  const int c0 = (blockIdx.x * 128 + threadIdx.x) * V;
  if (c0 >= a.C) return;
  const int seg = blockIdx.y, b = blockIdx.z;
  const int t_begin = seg * a.seg_len, t_end = min(a.T, t_begin + a.seg_len);
  ChannelParams<K, V> cp;
  cp.load(a, c0);
  SegCounter sc{a.doc ? a.doc + b * a.ld_doc : nullptr};
  Window<T, K, V> win;
  win.init(a, b, t_begin, c0, sc);
  const int64_t rb = static_cast<int64_t>(b) * a.T;
  float dzw[K][V];  // dz of positions t-K+1 .. t, oldest first
  int dzd[K];
#pragma unroll
  for (int j = 0; j < K; ++j) {
    dzd[j] = 0;
#pragma unroll
    for (int v = 0; v < V; ++v) dzw[j][v] = 0.f;
  }
  float dw[V][K], db[V];
#pragma unroll
  for (int v = 0; v < V; ++v) {
    db[v] = 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) dw[v][k] = 0.f;
  }
  for (int t = t_begin; t < t_end + K - 1; ++t) {
    float dz[V];
    int d = 0;
    if (t < a.T) {
      float cur[V], g[V], z[V];
      load_vec<T, V>(static_cast<const T*>(a.x) + (rb + t) * a.ld_x + c0, cur);
      load_vec<T, V>(static_cast<const T*>(a.dy) + (rb + t) * a.ld_dy + c0, g);
      d = sc.next(t);
      win.z(cp, cur, d, z);
#pragma unroll
      for (int v = 0; v < V; ++v) {
        const float s = sigmoidf_(z[v]);
        dz[v] = g[v] * s * (1.f + z[v] * (1.f - s));
      }
      if (t < t_end) {
#pragma unroll
        for (int v = 0; v < V; ++v) {
          db[v] += dz[v];
          dw[v][K - 1] += dz[v] * cur[v];
        }
#pragma unroll
        for (int j = 0; j < K - 1; ++j)
          if (win.ok[j] && win.doc[j] == d)
#pragma unroll
            for (int v = 0; v < V; ++v) dw[v][j] += dz[v] * win.x[j][v];
      }
      win.push(cur, d);
    } else {
#pragma unroll
      for (int v = 0; v < V; ++v) dz[v] = 0.f;
    }
#pragma unroll
    for (int j = 0; j + 1 < K; ++j) {
      dzd[j] = dzd[j + 1];
#pragma unroll
      for (int v = 0; v < V; ++v) dzw[j][v] = dzw[j + 1][v];
    }
    dzd[K - 1] = d;
#pragma unroll
    for (int v = 0; v < V; ++v) dzw[K - 1][v] = dz[v];
    const int tp = t - (K - 1);  // dx position now complete
    if (tp >= t_begin && a.dx) {
      // dzw[0] is position tp itself; its document is the one every term must share.
      float out[V];
#pragma unroll
      for (int v = 0; v < V; ++v) out[v] = cp.w[v][K - 1] * dzw[0][v];
#pragma unroll
      for (int k = 0; k < K - 1; ++k) {
        const int j = K - 1 - k;  // dz position tp + K-1-k
        if (tp + j < a.T && dzd[j] == dzd[0])
#pragma unroll
          for (int v = 0; v < V; ++v) out[v] += cp.w[v][k] * dzw[j][v];
      }
      store_vec<T, V>(static_cast<T*>(a.dx) + (rb + tp) * a.ld_dx + c0, out);
    }
  }
  if (a.part) {
    float* pp = a.part + (static_cast<int64_t>(b) * a.nseg + seg) * (K + 1) * a.C + c0;
#pragma unroll
    for (int v = 0; v < V; ++v) {
#pragma unroll
      for (int k = 0; k < K; ++k) pp[static_cast<int64_t>(k) * a.C + v] = dw[v][k];
      pp[static_cast<int64_t>(K) * a.C + v] = db[v];
    }
  }
}

// dw[c][k] += sum over segments (fixed order); dbias[c] likewise.
__global__ void conv_param_reduce_kernel(const float* part, int rows, int C, int K, void* dw, int dw_type,
                                         void* dbias, int dbias_type) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(C) * (K + 1)) return;
  const int k = static_cast<int>(i / C), c = static_cast<int>(i % C);
  float s = 0.f;
  for (int r = 0; r < rows; ++r) s += part[(static_cast<int64_t>(r) * (K + 1) + k) * C + c];
  if (k < K) {
    if (dw) store_any(dw, dw_type, static_cast<int64_t>(c) * K + k, load_any(dw, dw_type, static_cast<int64_t>(c) * K + k) + s);
  } else if (dbias) {
    store_any(dbias, dbias_type, c, load_any(dbias, dbias_type, c) + s);
  }
}

template <typename T>
__global__ void conv_update_kernel(const void* x, int64_t ld_x, const void* w, int w_type, const void* bias,
                                   int bias_type, void* state, int state_type, void* y, int64_t ld_y, int B,
                                   int C, int K) {
  pdl_begin();  // PDL-launched (decode): x comes from the previous kernel
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(B) * C) return;
  const int b = static_cast<int>(i / C), c = static_cast<int>(i % C);
  const float xv = to_f32<T>(static_cast<const T*>(x)[b * ld_x + c]);
  const int64_t s0 = i * (K - 1);
  float z = bias ? load_any(bias, bias_type, c) : 0.f;
  for (int k = 0; k < K - 1; ++k) z += load_any(w, w_type, static_cast<int64_t>(c) * K + k) * load_any(state, state_type, s0 + k);
  z += load_any(w, w_type, static_cast<int64_t>(c) * K + K - 1) * xv;
  for (int k = 0; k + 1 < K - 1; ++k) store_any(state, state_type, s0 + k, load_any(state, state_type, s0 + k + 1));
  if (K > 1) store_any(state, state_type, s0 + K - 2, xv);
  static_cast<T*>(y)[b * ld_y + c] = from_f32<T>(z / (1.f + expf(-z)));
}

template <typename T>
__global__ void conv_state_kernel(const void* x, int64_t ld_x, const int32_t* doc, int64_t ld_doc, void* state,
                                  int state_type, int B, int T_len, int C, int K) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int km1 = K - 1;
  if (i >= static_cast<int64_t>(B) * C * km1) return;
  const int j = static_cast<int>(i % km1);
  const int64_t bc = i / km1;
  const int c = static_cast<int>(bc % C), b = static_cast<int>(bc / C);
  const int pos = T_len - km1 + j;
  bool ok = pos >= 0 && pos < T_len;
  if (ok && doc)  // no document start in (pos, T-1]
    for (int r = pos + 1; r < T_len; ++r) ok = ok && doc[b * ld_doc + r] == doc[b * ld_doc + r - 1];
  const float v = ok ? to_f32<T>(static_cast<const T*>(x)[(static_cast<int64_t>(b) * T_len + pos) * ld_x + c]) : 0.f;
  store_any(state, state_type, i, v);
}

void require(const Tensor& t, std::initializer_list<int64_t> shape, const char* what) {
  HLM_CHECK_ARG(t.defined(), "conv1d (CUDA): {} is not set", what);
  HLM_CHECK_ARG(t.device == Device::CUDA, "conv1d (CUDA): {} is on {}, expected CUDA", what, device_name(t.device));
  bool ok = t.ndim == static_cast<int>(shape.size());
  int d = 0;
  for (int64_t s : shape) ok = ok && t.shape[static_cast<size_t>(d++)] == s;
  HLM_CHECK_ARG(ok, "conv1d (CUDA): {} has shape {} (wrong rank or size)", what, t.shape_str());
}

class ConvScratch {
 public:
  void* get(size_t bytes) {
    if (bytes > size_) {
      note_reallocation();  // recorded graphs holding the old address must be re-recorded
      if (ptr_) HLM_CUDA_CHECK(cudaFreeAsync(ptr_, stream()));
      HLM_CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream()));
      size_ = bytes;
    }
    return ptr_;
  }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

struct ConvDims {
  int64_t B, T, C, K;
};

ConvDims check_conv(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& doc, ConvArgs* a) {
  HLM_CHECK_ARG(x.defined() && x.ndim == 3, "conv1d (CUDA): x must be [B,T,C]");
  HLM_CHECK_ARG(w.defined() && w.ndim == 2, "conv1d (CUDA): w must be [C,K]");
  ConvDims d{x.size(0), x.size(1), x.size(2), w.size(1)};
  require(x, {d.B, d.T, d.C}, "x");
  require(w, {d.C, d.K}, "w");
  HLM_CHECK_ARG(w.is_contiguous(), "conv1d (CUDA): w must be contiguous");
  if (bias.defined()) {
    require(bias, {d.C}, "bias");
    HLM_CHECK_ARG(bias.is_contiguous(), "conv1d (CUDA): bias must be contiguous");
  }
  if (doc.defined()) {
    require(doc, {d.B, d.T}, "doc");
    HLM_CHECK_ARG(doc.dtype == DType::I32, "conv1d (CUDA): doc must be I32");
  }
  HLM_CHECK_ARG(d.K >= 2 && d.K <= 4, "conv1d (CUDA): kernel size {} not supported (2..4)", d.K);
  HLM_CHECK_ARG(d.B < 65536 && d.T < (int64_t{1} << 31) && d.C < (int64_t{1} << 30), "conv1d (CUDA): sizes out of range");
  a->B = static_cast<int>(d.B);
  a->T = static_cast<int>(d.T);
  a->C = static_cast<int>(d.C);
  a->w = w.data;
  a->w_type = ssd::scalar_type(w, "conv1d", "w");
  if (bias.defined()) {
    a->bias = bias.data;
    a->bias_type = ssd::scalar_type(bias, "conv1d", "bias");
  }
  if (doc.defined() && d.B * d.T > 0) {
    RowView dr = as_rows(doc, 1, "conv1d doc");
    a->doc = static_cast<const int32_t*>(dr.data);
    a->ld_doc = dr.ld;
  }
  if (d.B * d.T * d.C > 0) {
    RowView xr = as_rows(x, 1, "conv1d x");
    a->x = xr.data;
    a->ld_x = xr.ld;
  }
  return d;
}

bool vec_ok(const void* p, int64_t ld, int V) {
  return (reinterpret_cast<uintptr_t>(p) & 15) == 0 && ld % V == 0;
}

// Strips for the vector kernels: one wave of units * nseg <= blocks_per_sm * SMs blocks (units =
// channel blocks x rows), strips of equal length, at least kMinStrip rows. HLM_CONV_STRIP=n forces
// n rows (tests: many strips, partial groups, strips shorter than the halo).
void set_strips(int64_t T, int64_t units, const StripCfg& cfg, ConvArgs* a) {
  int64_t len = 0;
  if (const char* env = std::getenv("HLM_CONV_STRIP")) len = std::atoi(env);
  if (len <= 0) {
    const int64_t nseg = std::max<int64_t>(1, int64_t{cfg.blocks_per_sm} * num_sms() / std::max<int64_t>(1, units));
    len = std::max<int64_t>(kMinStrip, (T + nseg - 1) / nseg);
  }
  len = std::min<int64_t>(len, std::max<int64_t>(T, 1));
  a->seg_len = static_cast<int>(len);
  a->nseg = static_cast<int>((T + len - 1) / len);
  HLM_CHECK_ARG(a->nseg < 65536, "conv1d (CUDA): sequence too long ({} positions in strips of {})", T, len);
}

template <auto kKernel>
void launch_strips(dim3 grid, const StripCfg& cfg, const ConvArgs& a) {
  auto kernel = kKernel;
  static const bool attr_set = [&] {  // once per kernel
    HLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(cfg.smem())));
    return true;
  }();
  (void)attr_set;
  HLM_LAUNCH(kernel, grid, dim3(cfg.threads), cfg.smem(), a);
  HLM_CUDA_CHECK_LAUNCH();
}

// Calls f.template operator()<T, K, V>() for the element type, kernel size and vector width.
template <typename F>
void dispatch_conv(DType dt, int64_t K, bool vec, F&& f) {
  dispatch_float(dt, "conv1d x", [&]<typename T>() {
    constexpr int V = 16 / static_cast<int>(sizeof(T));
    auto with_k = [&]<int KK>() {
      if (vec)
        f.template operator()<T, KK, V>();
      else
        f.template operator()<T, KK, 1>();
    };
    if (K == 2)
      with_k.template operator()<2>();
    else if (K == 3)
      with_k.template operator()<3>();
    else
      with_k.template operator()<4>();
  });
}

}  // namespace

void conv1d_silu_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& doc, const Tensor& y) {
  ConvArgs a;
  ConvDims d = check_conv(x, w, bias, doc, &a);
  require(y, {d.B, d.T, d.C}, "y");
  HLM_CHECK_ARG(y.dtype == x.dtype, "conv1d (CUDA): y dtype differs from x");
  if (d.B * d.T * d.C == 0) return;
  RowView yr = as_rows(y, 1, "conv1d y");
  a.y = yr.data;
  a.ld_y = yr.ld;
  const int V = 16 / static_cast<int>(dtype_size(x.dtype));
  const bool vec = d.C % V == 0 && vec_ok(a.x, a.ld_x, V) && vec_ok(a.y, a.ld_y, V);
  dispatch_conv(x.dtype, d.K, vec, [&]<typename T, int K, int VV>() {
    const int64_t threads_c = (d.C + VV - 1) / VV;
    if constexpr (VV * sizeof(T) == 16) {
      const int64_t cblocks = (threads_c + kFwd.threads - 1) / kFwd.threads;
      set_strips(d.T, cblocks * d.B, kFwd, &a);
      dim3 grid(static_cast<unsigned>(cblocks), static_cast<unsigned>(a.nseg), static_cast<unsigned>(d.B));
      if (a.doc)
        launch_strips<conv_fwd_vec_kernel<T, K, VV, true>>(grid, kFwd, a);
      else
        launch_strips<conv_fwd_vec_kernel<T, K, VV, false>>(grid, kFwd, a);
    } else {
      // Scalar path: strips as long as possible while the grid gives each SM ~16 blocks.
      const int64_t cblocks = (threads_c + 127) / 128;
      a.seg_len = 256;
      while (a.seg_len > 32 && cblocks * d.B * ((d.T + a.seg_len - 1) / a.seg_len) < 16 * num_sms()) a.seg_len /= 2;
      a.nseg = static_cast<int>((d.T + a.seg_len - 1) / a.seg_len);
      HLM_CHECK_ARG(a.nseg < 65536, "conv1d (CUDA): sequence too long ({} positions)", d.T);
      dim3 grid(static_cast<unsigned>(cblocks), static_cast<unsigned>(a.nseg), static_cast<unsigned>(d.B));
      auto kernel = conv_fwd_kernel<T, K, VV>;
      HLM_LAUNCH(kernel, grid, dim3(128), 0, a);
      HLM_CUDA_CHECK_LAUNCH();
    }
  });
}

void conv1d_silu_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& doc,
                          const Tensor& dx, const Tensor& dw, const Tensor& dbias) {
  ConvArgs a;
  ConvDims d = check_conv(x, w, bias, doc, &a);
  require(dy, {d.B, d.T, d.C}, "dy");
  HLM_CHECK_ARG(dy.dtype == x.dtype, "conv1d (CUDA): dy dtype differs from x");
  if (dx.defined()) {
    require(dx, {d.B, d.T, d.C}, "dx");
    HLM_CHECK_ARG(dx.dtype == x.dtype, "conv1d (CUDA): dx dtype differs from x");
  }
  if (dw.defined()) {
    require(dw, {d.C, d.K}, "dw");
    HLM_CHECK_ARG(dw.is_contiguous(), "conv1d (CUDA): dw must be contiguous");
  }
  if (dbias.defined()) {
    require(dbias, {d.C}, "dbias");
    HLM_CHECK_ARG(dbias.is_contiguous(), "conv1d (CUDA): dbias must be contiguous");
  }
  if (d.B * d.T * d.C == 0) return;
  RowView dyr = as_rows(dy, 1, "conv1d dy");
  a.dy = dyr.data;
  a.ld_dy = dyr.ld;
  if (dx.defined()) {
    RowView r = as_rows(dx, 1, "conv1d dx");
    a.dx = r.data;
    a.ld_dx = r.ld;
  }
  const int V = 16 / static_cast<int>(dtype_size(x.dtype));
  const bool vec = d.C % V == 0 && vec_ok(a.x, a.ld_x, V) && vec_ok(a.dy, a.ld_dy, V) &&
                   (!a.dx || vec_ok(a.dx, a.ld_dx, V));
  const int64_t threads_c = (d.C + (vec ? V : 1) - 1) / (vec ? V : 1);
  if (vec) {
    set_strips(d.T, (threads_c + kBwd.threads - 1) / kBwd.threads * d.B, kBwd, &a);
  } else {
    // Scalar path: segments long enough to keep the partials small, short enough to fill the GPU.
    const int64_t want_segs = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(1, threads_c * d.B));
    a.seg_len = static_cast<int>(std::max<int64_t>(64, (d.T + want_segs - 1) / want_segs));
    a.nseg = static_cast<int>((d.T + a.seg_len - 1) / a.seg_len);
    HLM_CHECK_ARG(a.nseg < 65536, "conv1d (CUDA): sequence too long ({} positions)", d.T);
  }
  const bool params = dw.defined() || dbias.defined();
  static ConvScratch scratch;
  if (params)
    a.part = static_cast<float*>(scratch.get(static_cast<size_t>(d.B) * a.nseg * (d.K + 1) * d.C * sizeof(float)));
  dispatch_conv(x.dtype, d.K, vec, [&]<typename T, int K, int VV>() {
    if constexpr (VV * sizeof(T) == 16) {
      dim3 grid(static_cast<unsigned>((threads_c + kBwd.threads - 1) / kBwd.threads), static_cast<unsigned>(a.nseg),
                static_cast<unsigned>(d.B));
      if (a.doc)
        launch_strips<conv_bwd_vec_kernel<T, K, VV, true>>(grid, kBwd, a);
      else
        launch_strips<conv_bwd_vec_kernel<T, K, VV, false>>(grid, kBwd, a);
    } else {
      dim3 grid(static_cast<unsigned>((threads_c + 127) / 128), static_cast<unsigned>(a.nseg), static_cast<unsigned>(d.B));
      auto kernel = conv_bwd_kernel<T, K, VV>;
      HLM_LAUNCH(kernel, grid, dim3(128), 0, a);
      HLM_CUDA_CHECK_LAUNCH();
    }
  });
  if (params) {
    const int64_t n = d.C * (d.K + 1);
    auto kernel = conv_param_reduce_kernel;
    HLM_LAUNCH(kernel, dim3(static_cast<unsigned>((n + 255) / 256)), dim3(256), 0, static_cast<const float*>(a.part),
               static_cast<int>(d.B) * a.nseg, static_cast<int>(d.C), static_cast<int>(d.K), dw.data,
               dw.defined() ? ssd::scalar_type(dw, "conv1d", "dw") : 0, dbias.data, dbias.defined() ? ssd::scalar_type(dbias, "conv1d", "dbias") : 0);
    HLM_CUDA_CHECK_LAUNCH();
  }
}

void conv1d_silu_update(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& state, const Tensor& y) {
  HLM_CHECK_ARG(x.defined() && x.ndim == 2, "conv1d_update (CUDA): x must be [B,C]");
  HLM_CHECK_ARG(w.defined() && w.ndim == 2, "conv1d_update (CUDA): w must be [C,K]");
  const int64_t B = x.size(0), C = x.size(1), K = w.size(1);
  require(x, {B, C}, "x");
  require(w, {C, K}, "w");
  HLM_CHECK_ARG(w.is_contiguous() && K >= 1, "conv1d_update (CUDA): w must be contiguous [C,K]");
  if (bias.defined()) require(bias, {C}, "bias");
  require(state, {B, C, K - 1}, "state");
  HLM_CHECK_ARG(state.is_contiguous(), "conv1d_update (CUDA): state must be contiguous");
  require(y, {B, C}, "y");
  HLM_CHECK_ARG(y.dtype == x.dtype, "conv1d_update (CUDA): y dtype differs from x");
  if (B * C == 0) return;
  RowView xr = as_rows(x, 1, "conv1d_update x"), yr = as_rows(y, 1, "conv1d_update y");
  const int st = ssd::scalar_type(state, "conv1d", "state");
  const int wt = ssd::scalar_type(w, "conv1d", "w"), bt = bias.defined() ? ssd::scalar_type(bias, "conv1d", "bias") : 0;
  dispatch_float(x.dtype, "conv1d_update x", [&]<typename T>() {
    auto kernel = conv_update_kernel<T>;
    HLM_LAUNCH_PDL(kernel, dim3(static_cast<unsigned>((B * C + 255) / 256)), dim3(256), 0, static_cast<const void*>(xr.data),
               xr.ld, static_cast<const void*>(w.data), wt, static_cast<const void*>(bias.data), bt, state.data, st, yr.data,
               yr.ld, static_cast<int>(B), static_cast<int>(C), static_cast<int>(K));
    HLM_CUDA_CHECK_LAUNCH();
  });
}

void conv1d_state_from_sequence(const Tensor& x, const Tensor& doc, const Tensor& state) {
  HLM_CHECK_ARG(x.defined() && x.ndim == 3, "conv1d_state (CUDA): x must be [B,T,C]");
  HLM_CHECK_ARG(state.defined() && state.ndim == 3, "conv1d_state (CUDA): state must be [B,C,K-1]");
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2), km1 = state.size(2);
  require(x, {B, L, C}, "x");
  require(state, {B, C, km1}, "state");
  HLM_CHECK_ARG(state.is_contiguous(), "conv1d_state (CUDA): state must be contiguous");
  if (doc.defined()) {
    require(doc, {B, L}, "doc");
    HLM_CHECK_ARG(doc.dtype == DType::I32, "conv1d_state (CUDA): doc must be I32");
  }
  if (B * C * km1 == 0) return;
  const int st = ssd::scalar_type(state, "conv1d", "state");
  if (L == 0) {
    HLM_CUDA_CHECK(cudaMemsetAsync(state.data, 0, state.nbytes(), stream()));
    return;
  }
  RowView xr = as_rows(x, 1, "conv1d_state x");
  const int32_t* dp = nullptr;
  int64_t ld_doc = 0;
  if (doc.defined()) {
    RowView dr = as_rows(doc, 1, "conv1d_state doc");
    dp = static_cast<const int32_t*>(dr.data);
    ld_doc = dr.ld;
  }
  dispatch_float(x.dtype, "conv1d_state x", [&]<typename T>() {
    auto kernel = conv_state_kernel<T>;
    const int64_t n = B * C * km1;
    HLM_LAUNCH(kernel, dim3(static_cast<unsigned>((n + 255) / 256)), dim3(256), 0, static_cast<const void*>(xr.data), xr.ld,
               dp, ld_doc, state.data, st, static_cast<int>(B), static_cast<int>(L), static_cast<int>(C),
               static_cast<int>(km1 + 1));
    HLM_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace hlm::cuda
