// CUDA RMSNorm and the Mamba-2 group-wise gated RMSNorm, forward and backward (RMSNorm with 16-byte
// vectors held in registers where rows are aligned; plain per-element kernels otherwise). Statistics in
// fp32; the weight gradient is reduced deterministically: each block owns a fixed chunk of rows and
// writes one partial row, and a second pass adds the partials in chunk order.
#include "ops/norm.h"

#include <cstdlib>
#include <initializer_list>
#include <utility>

#include "ops/cuda/common.cuh"
#include "ops/cuda/warp_mma.cuh"
#include "ops/elementwise.h"

namespace hlm::cuda {

namespace {

constexpr int kNormThreads = 256;

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

// ---- RMSNorm ---------------------------------------------------------------------------------

template <typename TX, typename TW, typename TY>
__global__ void rmsnorm_forward_kernel(const TX* x, int64_t ldx, const TW* w, float eps, TY* y,
                                       int64_t ldy, float* rstd, int64_t D) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const TX* xr = x + row * ldx;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
    const float v = to_f32(xr[c]);
    ss += v * v;
  }
  ss = block_sum(ss, red);
  const float r = 1.0f / sqrtf(ss / static_cast<float>(D) + eps);
  if (threadIdx.x == 0) rstd[row] = r;
  TY* yr = y + row * ldy;
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) yr[c] = from_f32<TY>(to_f32(xr[c]) * r * to_f32(w[c]));
}

// ---- RMSNorm, vectorised: rows of D = nvec 16-byte vectors, aligned -----------------------------
//
// A row belongs to `tpr` consecutive threads of a 256-thread block (tpr = 32..256, a power of two,
// so a row is one warp or a few whole warps); thread i of a row holds vectors i, i + tpr, ...
// (at most kVpt) in registers, so x is read once and y written once with 16-byte accesses.

constexpr int kVecThreads = 256;

// Element i of T packed in 16-byte registers, read and written through memcpy (no type punning:
// the host emulation's compiler would otherwise be free to reorder the accesses).
template <typename T>
__device__ __forceinline__ float elem(const uint4& v, int i) {
  T e;
  memcpy(&e, reinterpret_cast<const unsigned char*>(&v) + i * sizeof(T), sizeof(T));
  return to_f32(e);
}

// N consecutive elements of T at p as floats: one 8-, 16- or two 16-byte loads (p aligned so).
template <typename T, int N>
__device__ __forceinline__ void load_vec(const T* p, float (&out)[N]) {
  constexpr int kBytes = N * static_cast<int>(sizeof(T));
  static_assert(kBytes == 8 || kBytes == 16 || kBytes == 32, "vector width");
  if constexpr (kBytes == 8) {
    const uint2 half = *reinterpret_cast<const uint2*>(p);
    const uint4 raw = make_uint4(half.x, half.y, 0u, 0u);
#pragma unroll
    for (int i = 0; i < N; ++i) out[i] = elem<T>(raw, i);
  } else {
    constexpr int kPer = 16 / static_cast<int>(sizeof(T));
#pragma unroll
    for (int h = 0; h < kBytes / 16; ++h) {
      const uint4 raw = *reinterpret_cast<const uint4*>(p + h * kPer);
#pragma unroll
      for (int i = 0; i < kPer; ++i) out[h * kPer + i] = elem<T>(raw, i);
    }
  }
}
// N floats as T packed into 16 bytes.
template <typename T, int N>
__device__ __forceinline__ uint4 pack_vec(const float (&in)[N]) {
  static_assert(N * sizeof(T) == 16, "vector width");
  uint4 raw;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const T e = from_f32<T>(in[i]);
    memcpy(reinterpret_cast<unsigned char*>(&raw) + i * sizeof(T), &e, sizeof(T));
  }
  return raw;
}
// N floats stored as T at p (16 bytes: p aligned so).
template <typename T, int N>
__device__ __forceinline__ void store_vec(T* p, const float (&in)[N]) {
  *reinterpret_cast<uint4*>(p) = pack_vec<T, N>(in);
}

// Sum over the tpr threads of a row (whole warps): warp butterfly, then the row's warps in order
// through shared memory. Every thread of the row gets the same bits. Called by all threads.
__device__ __forceinline__ float row_sum(float v, int tpr, float* red /* [kVecThreads / 32] */) {
  v = warp_sum(v);
  if (tpr <= 32) return v;
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  __syncthreads();  // red may still be read by the previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  const int w0 = warp & ~(tpr / 32 - 1);
  float s = 0.0f;
  for (int w = 0; w < tpr / 32; ++w) s += red[w0 + w];
  return s;
}

// kAdd: x is the residual stream and d a delta of the same layout: x += d (rounded to TX, as
// add_scaled stores it) is written back and normalised. kPrefetchW: w is loaded before the
// reduction (decode sizes, few vectors per thread), so a row costs one round trip to memory.
template <typename TX, typename TW, typename TY, int kVpt, bool kAdd, bool kPrefetchW>
__global__ void __launch_bounds__(kVecThreads)
    rmsnorm_forward_vec_kernel(TX* x, int64_t ldx, const TX* d, int64_t ldd, const TW* w, float eps, TY* y,
                               int64_t ldy, float* rstd, int64_t M, int64_t D, int tpr) {
  constexpr int N = Vec16<TX>::N;
  constexpr int kWv = kPrefetchW ? kVpt : 1;
  __shared__ float red[kVecThreads / 32];
  const int nvec = static_cast<int>(D / N);
  const int slot = static_cast<int>(threadIdx.x) / tpr, i = static_cast<int>(threadIdx.x) % tpr;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kVecThreads / tpr) + slot;
  const bool live = row < M;  // dead slots still take part in row_sum's barriers
  TX* xr = x + (live ? row : 0) * ldx;
  const TX* dr = kAdd ? d + (live ? row : 0) * ldd : nullptr;
  pdl_begin();  // PDL-launched (decode): x and d come from the previous kernels
  uint4 xv[kVpt];
  float wv[kWv][N];
  float ss = 0.0f;
#pragma unroll
  for (int v = 0; v < kVpt; ++v) {
    const int c = i + v * tpr;
    const bool in = live && c < nvec;
    xv[v] = in ? *reinterpret_cast<const uint4*>(xr + static_cast<int64_t>(c) * N) : make_uint4(0u, 0u, 0u, 0u);
    if constexpr (kAdd) {
      if (in) {
        const uint4 dv = *reinterpret_cast<const uint4*>(dr + static_cast<int64_t>(c) * N);
        float sum[N];
#pragma unroll
        for (int j = 0; j < N; ++j) sum[j] = elem<TX>(xv[v], j) + elem<TX>(dv, j);
        xv[v] = pack_vec<TX, N>(sum);  // rounded as stored
        *reinterpret_cast<uint4*>(xr + static_cast<int64_t>(c) * N) = xv[v];
      }
    }
    if constexpr (kPrefetchW) {
      if (in) {
        load_vec<TW, N>(w + static_cast<int64_t>(c) * N, wv[v]);
      } else {
#pragma unroll
        for (int j = 0; j < N; ++j) wv[v][j] = 0.0f;
      }
    }
#pragma unroll
    for (int j = 0; j < N; ++j) ss += elem<TX>(xv[v], j) * elem<TX>(xv[v], j);
  }
  ss = row_sum(ss, tpr, red);
  const float r = 1.0f / sqrtf(ss / static_cast<float>(D) + eps);
  if (!live) return;
  if (i == 0) rstd[row] = r;
  TY* yr = y + row * ldy;
#pragma unroll
  for (int v = 0; v < kVpt; ++v) {
    const int c = i + v * tpr;
    if (c >= nvec) break;
    float out[N];
    if constexpr (!kPrefetchW) load_vec<TW, N>(w + static_cast<int64_t>(c) * N, wv[0]);
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = elem<TX>(xv[v], j) * r * wv[kPrefetchW ? v : 0][j];
    store_vec<TY, N>(yr + static_cast<int64_t>(c) * N, out);
  }
}

// Makes v opaque to the compiler: what was computed from it before must be computed again after,
// so the 16-byte raw vectors stay in registers across a reduction instead of their fp32 expansions
// (half the registers for bf16: more blocks per SM, more loads in flight).
__device__ __forceinline__ void opaque(uint4& v) {
#ifndef HLM_CUDA_EMU
  asm volatile("" : "+r"(v.x), "+r"(v.y), "+r"(v.z), "+r"(v.w));
#else
  (void)v;
#endif
}

// Block b owns rows [b·R, b·R + R); its row slots take them in turn. dx per row from registers;
// each thread accumulates dw for its own columns over its slot's rows, the slots are added into
// shared memory in slot order, and the block writes partial[b, :].
template <typename TX, typename TW, typename TG, typename TD, int kVpt, bool kAccum>
__global__ void __launch_bounds__(kVecThreads)
    rmsnorm_backward_vec_kernel(const TG* dy, int64_t lddy, const TX* x, int64_t ldx, const TW* w,
                                const float* rstd, TD* dx, int64_t lddx, int64_t M, int64_t D,
                                int64_t rows_per_block, int tpr, float* partial) {
  constexpr int N = Vec16<TX>::N;
  float* dw_s = reinterpret_cast<float*>(mma::dynamic_smem());
  __shared__ float red[kVecThreads / 32];
  const int nvec = static_cast<int>(D / N);
  const int slots = kVecThreads / tpr;
  const int slot = static_cast<int>(threadIdx.x) / tpr, i = static_cast<int>(threadIdx.x) % tpr;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * rows_per_block;
  const int64_t r1 = min(M, r0 + rows_per_block);
  const float inv_d = 1.0f / static_cast<float>(D);
  float dw_acc[kVpt][N];
#pragma unroll
  for (int v = 0; v < kVpt; ++v)
#pragma unroll
    for (int j = 0; j < N; ++j) dw_acc[v][j] = 0.0f;
  // Every slot runs the same number of iterations (row_sum has barriers); rows past r1 are dead.
  for (int64_t base = r0; base < r1; base += slots) {
    const int64_t row = base + slot;
    const bool live = row < r1;
    const TG* g = dy + (live ? row : 0) * lddy;
    const TX* xr = x + (live ? row : 0) * ldx;
    // The raw 16-byte vectors stay in registers across the reduction (opaque below), not their
    // fp32 expansions: half the registers for bf16, so more blocks per SM and loads in flight.
    uint4 graw[kVpt], xraw[kVpt];
    float dot = 0.0f;
#pragma unroll
    for (int v = 0; v < kVpt; ++v) {
      const int c = i + v * tpr;
      const bool in = live && c < nvec;
      graw[v] = in ? *reinterpret_cast<const uint4*>(g + static_cast<int64_t>(c) * N) : make_uint4(0u, 0u, 0u, 0u);
      xraw[v] = in ? *reinterpret_cast<const uint4*>(xr + static_cast<int64_t>(c) * N) : make_uint4(0u, 0u, 0u, 0u);
      if (in) {
        float wv[N];
        load_vec<TW, N>(w + static_cast<int64_t>(c) * N, wv);
#pragma unroll
        for (int j = 0; j < N; ++j) dot += wv[j] * elem<TG>(graw[v], j) * elem<TX>(xraw[v], j);
      }
    }
    dot = row_sum(dot, tpr, red);
    if (!live) continue;
    const float r = rstd[row];
    const float k = r * r * dot * inv_d;
    TD* out = dx + row * lddx;
#pragma unroll
    for (int v = 0; v < kVpt; ++v) {
      const int c = i + v * tpr;
      if (c >= nvec) break;
      opaque(graw[v]);
      opaque(xraw[v]);
      float wv[N], o[N], prev[N];
      load_vec<TW, N>(w + static_cast<int64_t>(c) * N, wv);
      if constexpr (kAccum) load_vec<TD, N>(out + static_cast<int64_t>(c) * N, prev);
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float gj = elem<TG>(graw[v], j), xj = elem<TX>(xraw[v], j);
        o[j] = r * (wv[j] * gj - xj * k);
        if constexpr (kAccum) o[j] += prev[j];
        dw_acc[v][j] += gj * xj * r;
      }
      store_vec<TD, N>(out + static_cast<int64_t>(c) * N, o);
    }
  }
  for (int64_t c = threadIdx.x; c < D; c += kVecThreads) dw_s[c] = 0.0f;
  for (int s = 0; s < slots; ++s) {
    __syncthreads();
    if (slot == s) {
#pragma unroll
      for (int v = 0; v < kVpt; ++v) {
        const int c = i + v * tpr;
        if (c >= nvec) break;
#pragma unroll
        for (int j = 0; j < N; ++j) dw_s[static_cast<int64_t>(c) * N + j] += dw_acc[v][j];
      }
    }
  }
  __syncthreads();
  float* part = partial + static_cast<int64_t>(blockIdx.x) * D;
  for (int64_t c = threadIdx.x; c < D; c += kVecThreads) part[c] = dw_s[c];
}

// Block b handles rows [b·R, b·R + R): dx per row, and its rows' share of dw in shared memory,
// written to partial[b, :].
template <typename TX, typename TW, typename TG, typename TD, bool kAccum>
__global__ void rmsnorm_backward_kernel(const TG* dy, int64_t lddy, const TX* x, int64_t ldx,
                                        const TW* w, const float* rstd, TD* dx, int64_t lddx,
                                        int64_t M, int64_t D, int64_t rows_per_block,
                                        float* partial) {
  float* dw_acc = reinterpret_cast<float*>(mma::dynamic_smem());
  __shared__ float red[32];
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) dw_acc[c] = 0.0f;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * rows_per_block;
  const int64_t r1 = min(M, r0 + rows_per_block);
  const float inv_d = 1.0f / static_cast<float>(D);
  for (int64_t row = r0; row < r1; ++row) {
    const TG* g = dy + row * lddy;
    const TX* xr = x + row * ldx;
    const float r = rstd[row];
    float dot = 0.0f;
    for (int64_t c = threadIdx.x; c < D; c += blockDim.x) dot += to_f32(w[c]) * to_f32(g[c]) * to_f32(xr[c]);
    dot = block_sum(dot, red);
    const float k = r * r * dot * inv_d;
    TD* out = dx + row * lddx;
    for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
      const float gv = to_f32(g[c]), xv = to_f32(xr[c]);
      const float v = r * (to_f32(w[c]) * gv - xv * k);
      out[c] = from_f32<TD>(kAccum ? to_f32(out[c]) + v : v);
      dw_acc[c] += gv * xv * r;  // column c is only ever touched by this thread
    }
  }
  float* part = partial + static_cast<int64_t>(blockIdx.x) * D;
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) part[c] = dw_acc[c];
}

// dw[c] += Σ_b partial[b, c]: 32 columns per block, 8 lanes of chunks per column (lane g sums
// chunks g, g+8, ... in order), the lanes added in lane order: a fixed order for a given chunk
// count, with 8× the loads in flight of one thread per column (512 chunks at D = 2048 were a
// serial 50+ µs tail on 8 SMs).
constexpr int kFinishCols = 32, kFinishLanes = 8;
template <typename TW>
__global__ void __launch_bounds__(kFinishCols* kFinishLanes)
    dw_finish_kernel(const float* partial, int64_t chunks, int64_t D, TW* dw) {
  __shared__ float lane_sum[kFinishLanes][kFinishCols + 1];
  const int cx = static_cast<int>(threadIdx.x) % kFinishCols, g = static_cast<int>(threadIdx.x) / kFinishCols;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kFinishCols + cx;
  float acc = 0.0f;
  if (c < D) {
#pragma unroll 8
    for (int64_t b = g; b < chunks; b += kFinishLanes) acc += partial[b * D + c];
  }
  lane_sum[g][cx] = acc;
  __syncthreads();
  if (g != 0 || c >= D) return;
  float total = 0.0f;
#pragma unroll
  for (int k = 0; k < kFinishLanes; ++k) total += lane_sum[k][cx];
  dw[c] = from_f32<TW>(to_f32(dw[c]) + total);
}

// ---- gated RMSNorm, vectorised: segments (row, group) of whole aligned 16-byte vectors -----------
//
// Segment s = (row s / ngroups, group s % ngroups) belongs to `tpr` consecutive threads of a
// 256-thread block, laid out as in the RMSNorm vector kernel; thread i holds x and z vectors
// i, i + tpr, ... (at most kVpt) in registers and loads its w vectors before the reduction, so a
// segment costs one round trip to memory. At decode sizes (M = 1, 8 groups of 1024) tpr is the
// whole group: one 16-byte x, z and w load per thread. At most 2 vectors per thread fit in 64
// registers: 4 blocks per SM (the 1.43B training shape, 64-vector segments over 32 threads); x and
// z are read once, past L1.

template <typename TX, typename TW, typename TY, int kVpt>
__global__ void __launch_bounds__(kVecThreads, kVpt <= 2 ? 4 : 2)
    gated_forward_vec_kernel(const TX* x, int64_t ldx, const TX* z, int64_t ldz, const TW* w, int64_t gs,
                             int64_t ngroups, float eps, TY* y, int64_t ldy, float* rstd, int64_t ldr,
                             int64_t segments, int tpr) {
  constexpr int N = Vec16<TX>::N;
  __shared__ float red[kVecThreads / 32];
  const int nvec = static_cast<int>(gs / N);
  const int slot = static_cast<int>(threadIdx.x) / tpr, i = static_cast<int>(threadIdx.x) % tpr;
  const int64_t seg = static_cast<int64_t>(blockIdx.x) * (kVecThreads / tpr) + slot;
  const bool live = seg < segments;  // dead slots still take part in row_sum's barriers
  const int64_t row = live ? seg / ngroups : 0, grp = live ? seg % ngroups : 0;
  const int64_t c0 = grp * gs;
  const TX* xr = x + row * ldx + c0;
  const TX* zr = z + row * ldz + c0;
  pdl_begin();  // PDL-launched (decode): x and z come from the previous kernels
  float gv[kVpt][N], wv[kVpt][N];
  float ss = 0.0f;
#pragma unroll
  for (int v = 0; v < kVpt; ++v) {
    const int c = i + v * tpr;
    const bool in = live && c < nvec;
    const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
    const uint4 xv = in ? load_stream16(xr + static_cast<int64_t>(c) * N) : zero;
    const uint4 zv = in ? load_stream16(zr + static_cast<int64_t>(c) * N) : zero;
    if (in) {
      load_vec<TW, N>(w + c0 + static_cast<int64_t>(c) * N, wv[v]);
    } else {
#pragma unroll
      for (int j = 0; j < N; ++j) wv[v][j] = 0.0f;
    }
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const float zf = elem<TX>(zv, j);
      const float g = elem<TX>(xv, j) * zf * sigmoidf_(zf);
      gv[v][j] = g;
      ss += g * g;
    }
  }
  ss = row_sum(ss, tpr, red);
  const float r = 1.0f / sqrtf(ss / static_cast<float>(gs) + eps);
  if (!live) return;
  if (i == 0) rstd[row * ldr + grp] = r;
  TY* yr = y + row * ldy + c0;
#pragma unroll
  for (int v = 0; v < kVpt; ++v) {
    const int c = i + v * tpr;
    if (c >= nvec) break;
    float out[N];
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = gv[v][j] * r * wv[v][j];
    store_vec<TY, N>(yr + static_cast<int64_t>(c) * N, out);
  }
}

// ---- gated RMSNorm backward, vectorised: segments of whole aligned 16-byte vectors -------------
//
// Block b owns rows [b·R, b·R + R) (one full wave of blocks); its spt = 256 / tpr slots take
// segments with a fixed group each:
//   ngroups <= spt: a pass covers rpp = spt / ngroups rows, slot s takes row s / ngroups, group
//     s % ngroups (slots past the last whole row idle);
//   ngroups > spt: a pass is one row in ceil(ngroups / spt) sub-passes, slot s takes groups
//     s, s + spt, ...
// dw: shared memory holds rpp copies of the row's D columns, copy k summed over the pass rows k:
// every column of every copy has one owner thread (no races, a fixed order); the copies are added
// in order into partial[b, :] at the end. A thread holds its dy, x, z vectors raw (16 bytes each)
// and sigmoid(z) in fp32 between the group's reduction and the output pass: each input is read
// once, with 16-byte loads that bypass L1 (w stays there).
template <typename TX, typename TW, int kVpt>
__global__ void __launch_bounds__(kVecThreads, kVpt <= 2 ? 3 : 1)
    gated_backward_vec_kernel(const TX* dy, int64_t lddy, const TX* x, int64_t ldx, const TX* z, int64_t ldz,
                              const TW* w, const float* rstd, int64_t ldr, int64_t gs, int64_t ngroups, TX* dx,
                              int64_t lddx, TX* dz, int64_t lddz, int64_t M, int64_t rows_per_block, int tpr,
                              float* partial) {
  constexpr int N = Vec16<TX>::N;
  static_assert(N % 4 == 0, "dw columns are updated as float4");
  float* dw_s = reinterpret_cast<float*>(mma::dynamic_smem());  // [rpp][D]
  __shared__ float red[kVecThreads / 32];
  const int64_t D = gs * ngroups;
  const int nvec = static_cast<int>(gs / N);
  const int spt = kVecThreads / tpr;
  const int slot = static_cast<int>(threadIdx.x) / tpr, i = static_cast<int>(threadIdx.x) % tpr;
  const bool whole_rows = ngroups <= spt;
  const int rpp = whole_rows ? spt / static_cast<int>(ngroups) : 1;
  const int subpasses = whole_rows ? 1 : static_cast<int>((ngroups + spt - 1) / spt);
  const int row_in_pass = whole_rows ? slot / static_cast<int>(ngroups) : 0;
  const int64_t grp0 = whole_rows ? slot % ngroups : slot;
  const bool slot_used = row_in_pass < rpp;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * rows_per_block;
  const int64_t r1 = min(M, r0 + rows_per_block);
  const float inv_gs = 1.0f / static_cast<float>(gs);
  for (int64_t c = threadIdx.x; c < rpp * D; c += kVecThreads) dw_s[c] = 0.0f;
  __syncthreads();
  float* dw_copy = dw_s + (slot_used ? row_in_pass : 0) * D;
  // Every slot runs the same number of iterations (row_sum has barriers when tpr > 32).
  for (int64_t base = r0; base < r1; base += rpp) {
    for (int k = 0; k < subpasses; ++k) {
      const int64_t row = base + row_in_pass, grp = grp0 + static_cast<int64_t>(k) * spt;
      const bool live = slot_used && row < r1 && grp < ngroups;
      const int64_t c0 = (live ? grp : 0) * gs, rr = live ? row : 0;
      const TX* gr = dy + rr * lddy + c0;
      const TX* xr = x + rr * ldx + c0;
      const TX* zr = z + rr * ldz + c0;
      const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
      uint4 gv[kVpt], xv[kVpt], zv[kVpt];
      float sg[kVpt][N];
      float dot = 0.0f;
      const float r = live ? rstd[row * ldr + grp] : 0.0f;  // in flight with the vectors
#pragma unroll
      for (int v = 0; v < kVpt; ++v) {  // all loads issued before any use
        const int c = i + v * tpr;
        const bool in = live && c < nvec;
        gv[v] = in ? load_stream16(gr + static_cast<int64_t>(c) * N) : zero;
        xv[v] = in ? load_stream16(xr + static_cast<int64_t>(c) * N) : zero;
        zv[v] = in ? load_stream16(zr + static_cast<int64_t>(c) * N) : zero;
      }
#pragma unroll
      for (int v = 0; v < kVpt; ++v) {
        const int c = i + v * tpr;
        float wv[N];
        if (live && c < nvec) {
          load_vec<TW, N>(w + c0 + static_cast<int64_t>(c) * N, wv);
        } else {
#pragma unroll
          for (int j = 0; j < N; ++j) wv[j] = 0.0f;
        }
#pragma unroll
        for (int j = 0; j < N; ++j) {
          const float zf = elem<TX>(zv[v], j);
          sg[v][j] = sigmoidf_(zf);
          dot += wv[j] * elem<TX>(gv[v], j) * (elem<TX>(xv[v], j) * zf * sg[v][j]);
        }
      }
      dot = row_sum(dot, tpr, red);
      if (!live) continue;
#pragma unroll
      for (int v = 0; v < kVpt; ++v) {
        opaque(gv[v]);
        opaque(xv[v]);
        opaque(zv[v]);
      }
      const float kk = r * r * dot * inv_gs;
      TX* dxr = dx + row * lddx + c0;
      TX* dzr = dz + row * lddz + c0;
#pragma unroll
      for (int v = 0; v < kVpt; ++v) {
        const int c = i + v * tpr;
        if (c >= nvec) break;
        float wv[N], ox[N], oz[N], dwv[N];
        load_vec<TW, N>(w + c0 + static_cast<int64_t>(c) * N, wv);
#pragma unroll
        for (int j = 0; j < N; ++j) {
          const float s = sg[v][j], zf = elem<TX>(zv[v], j), xf = elem<TX>(xv[v], j), gf = elem<TX>(gv[v], j);
          const float silu = zf * s;
          const float gate = xf * silu;
          const float dgate = r * (wv[j] * gf - gate * kk);
          ox[j] = dgate * silu;
          oz[j] = dgate * xf * s * (1.0f + zf * (1.0f - s));
          dwv[j] = gf * gate * r;
        }
        store_vec<TX, N>(dxr + static_cast<int64_t>(c) * N, ox);
        store_vec<TX, N>(dzr + static_cast<int64_t>(c) * N, oz);
        float4* dwp = reinterpret_cast<float4*>(dw_copy + c0 + static_cast<int64_t>(c) * N);
#pragma unroll
        for (int q = 0; q < N / 4; ++q) {  // this thread owns these columns of its copy
          float4 a = dwp[q];
          a.x += dwv[4 * q];
          a.y += dwv[4 * q + 1];
          a.z += dwv[4 * q + 2];
          a.w += dwv[4 * q + 3];
          dwp[q] = a;
        }
      }
    }
  }
  __syncthreads();
  float* part = partial + static_cast<int64_t>(blockIdx.x) * D;
  for (int64_t c = threadIdx.x; c < D; c += kVecThreads) {
    float acc = dw_s[c];
    for (int k = 1; k < rpp; ++k) acc += dw_s[k * D + c];
    part[c] = acc;
  }
}

// ---- gated RMSNorm: one warp per (row, group) forward -----------------------------------------

template <typename TX, typename TW, typename TY>
__global__ void gated_forward_kernel(const TX* x, int64_t ldx, const TX* z, int64_t ldz,
                                     const TW* w, int64_t gs, int64_t ngroups, float eps, TY* y,
                                     int64_t ldy, float* rstd, int64_t ldr, int64_t M) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (warp >= M * ngroups) return;
  const int64_t row = warp / ngroups, grp = warp % ngroups;
  const int64_t c0 = grp * gs;
  const TX* xr = x + row * ldx + c0;
  const TX* zr = z + row * ldz + c0;
  float ss = 0.0f;
  for (int64_t i = lane; i < gs; i += 32) {
    const float zv = to_f32(zr[i]);
    const float gv = to_f32(xr[i]) * zv * sigmoidf_(zv);
    ss += gv * gv;
  }
  ss = warp_sum(ss);
  const float r = 1.0f / sqrtf(ss / static_cast<float>(gs) + eps);
  if (lane == 0) rstd[row * ldr + grp] = r;
  TY* yr = y + row * ldy + c0;
  for (int64_t i = lane; i < gs; i += 32) {
    const float zv = to_f32(zr[i]);
    const float gv = to_f32(xr[i]) * zv * sigmoidf_(zv);
    yr[i] = from_f32<TY>(gv * r * to_f32(w[c0 + i]));
  }
}

// Block b handles rows [b·R, b·R + R); warp k handles groups k, k + nwarps, ... of every row, so
// the dw columns of a group are only ever touched by one warp.
template <typename TX, typename TW, typename TG, typename TD>
__global__ void gated_backward_kernel(const TG* dy, int64_t lddy, const TX* x, int64_t ldx,
                                      const TX* z, int64_t ldz, const TW* w, const float* rstd,
                                      int64_t ldr, int64_t gs, int64_t ngroups, TD* dx,
                                      int64_t lddx, TD* dz, int64_t lddz, int64_t M,
                                      int64_t rows_per_block, float* partial) {
  float* dw_acc = reinterpret_cast<float*>(mma::dynamic_smem());
  const int64_t D = gs * ngroups;
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) dw_acc[c] = 0.0f;
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * rows_per_block;
  const int64_t r1 = min(M, r0 + rows_per_block);
  const float inv_gs = 1.0f / static_cast<float>(gs);
  for (int64_t row = r0; row < r1; ++row) {
    for (int64_t grp = warp; grp < ngroups; grp += nwarps) {
      const int64_t c0 = grp * gs;
      const TG* g = dy + row * lddy + c0;
      const TX* xr = x + row * ldx + c0;
      const TX* zr = z + row * ldz + c0;
      const float r = rstd[row * ldr + grp];
      float dot = 0.0f;
      for (int64_t i = lane; i < gs; i += 32) {
        const float zv = to_f32(zr[i]);
        const float gate = to_f32(xr[i]) * zv * sigmoidf_(zv);
        dot += to_f32(w[c0 + i]) * to_f32(g[i]) * gate;
      }
      dot = warp_sum(dot);
      const float k = r * r * dot * inv_gs;
      TD* dxr = dx + row * lddx + c0;
      TD* dzr = dz + row * lddz + c0;
      for (int64_t i = lane; i < gs; i += 32) {
        const float zv = to_f32(zr[i]), xv = to_f32(xr[i]), gv = to_f32(g[i]);
        const float s = sigmoidf_(zv);
        const float silu = zv * s;
        const float gate = xv * silu;
        const float dgate = r * (to_f32(w[c0 + i]) * gv - gate * k);
        dxr[i] = from_f32<TD>(dgate * silu);
        dzr[i] = from_f32<TD>(dgate * xv * s * (1.0f + zv * (1.0f - s)));
        dw_acc[c0 + i] += gv * gate * r;
      }
    }
  }
  __syncthreads();
  float* part = partial + static_cast<int64_t>(blockIdx.x) * D;
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) part[c] = dw_acc[c];
}

// Rows per block of the backward passes: enough blocks to fill the device a few times over; a
// function of M and the SM count only, so the summation order is fixed on a given device.
int64_t rows_per_block(int64_t M) {
  const int64_t target = static_cast<int64_t>(num_sms()) * 4;
  return std::max<int64_t>(1, (M + target - 1) / target);
}

template <typename K>
void set_smem(K kernel, size_t bytes, const char* op) {
  if (bytes > 48 * 1024) {
    HLM_REQUIRE(bytes <= static_cast<size_t>(device_props().sharedMemPerBlockOptin),
                ErrorKind::Unsupported, "{}: width needs {} bytes of shared memory", op, bytes);
    HLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(bytes)));
  }
}

// Blocks of a 256-thread vector kernel with `smem` bytes of dynamic shared memory that fit on an
// SM at once.
template <typename K>
int resident_vec_blocks(K kernel, size_t smem) {
#ifdef HLM_CUDA_EMU
  (void)kernel;
  (void)smem;
  return 3;
#else
  int n = 0;
  HLM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kVecThreads, smem));
  return std::max(n, 1);
#endif
}

void finish_dw(const float* partial, int64_t chunks, const Tensor& dw, int64_t D, const char* op) {
  dispatch_float(dw.dtype, op, [&]<typename TW>() {
    auto* kernel_fn = dw_finish_kernel<TW>;
    HLM_LAUNCH(kernel_fn, grid_for(D, kFinishCols), kFinishCols * kFinishLanes, 0, partial, chunks, D,
               dw.ptr<TW>());
    HLM_CUDA_CHECK_LAUNCH();
  });
}

// Threads per row for the vectorised kernels, or 0 when they do not apply: rows of whole 16-byte
// vectors at 16-byte aligned addresses, w aligned for its loads, at most 256·kVpt vectors.
template <int kVpt>
int vec_threads_per_row(DType xdt, std::initializer_list<std::pair<const void*, int64_t>> rows,
                        const void* w, int64_t D) {
  if (!vec16_rows(xdt, D, rows) || pointer_alignment(w) < 16) return 0;
  const int64_t nvec = D / (16 / static_cast<int64_t>(dtype_size(xdt)));
  int tpr = 32;
  while (tpr < kVecThreads && static_cast<int64_t>(tpr) * kVpt < nvec) tpr *= 2;
  return static_cast<int64_t>(tpr) * kVpt >= nvec ? tpr : 0;
}

// Widens a row's thread count (powers of two up to the block, at most one thread per vector)
// while the launch would not fill two 256-thread blocks per SM: at decode sizes (a few rows) a
// row is spread over many threads with one or two vectors each instead of a few threads with many.
int spread_threads_per_row(int tpr, int64_t nvec, int64_t rows) {
  const int64_t fill = 2 * static_cast<int64_t>(num_sms()) * kVecThreads;
  while (tpr < kVecThreads && tpr < nvec && 2 * rows * tpr <= fill) tpr *= 2;
  return tpr;
}

// RMSNorm forward through the vector kernel (tpr from vec_threads_per_row<8>), optionally adding
// d into x first (kAdd). Few vectors per thread after spreading: the w-prefetching variant.
template <bool kAdd>
void launch_rmsnorm_vec(DType xdt, DType wdt, void* x, int64_t ldx, const void* d, int64_t ldd, const void* w,
                        float eps, void* y, int64_t ldy, float* rstd, int64_t M, int64_t D, int tpr,
                        const char* op) {
  const int64_t nvec = D / (16 / static_cast<int64_t>(dtype_size(xdt)));
  tpr = spread_threads_per_row(tpr, nvec, M);
  const unsigned grid = grid_for(M, kVecThreads / tpr);
  dispatch_float(xdt, op, [&]<typename TX>() {
    dispatch_float(wdt, op, [&]<typename TW>() {
      auto* kernel_fn = 2 * static_cast<int64_t>(tpr) >= nvec
                            ? rmsnorm_forward_vec_kernel<TX, TW, TX, 2, kAdd, true>
                            : rmsnorm_forward_vec_kernel<TX, TW, TX, 8, kAdd, false>;
      HLM_LAUNCH_PDL(kernel_fn, grid, kVecThreads, 0, static_cast<TX*>(x), ldx, static_cast<const TX*>(d), ldd,
                 static_cast<const TW*>(w), eps, static_cast<TX*>(y), ldy, rstd, M, D, tpr);
      HLM_CUDA_CHECK_LAUNCH();
    });
  });
}

void check_vector(const Tensor& v, int64_t D, const char* op, const char* name) {
  require_cuda(v, op, name);
  require_float(v, op, name);
  HLM_REQUIRE(v.is_contiguous() && v.numel() == D, ErrorKind::Internal,
              "{}: {} {} must be contiguous with {} entries", op, name, v.describe(), D);
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y,
                     const Tensor& rstd) {
  const char* op = "rmsnorm_forward";
  require_cuda(x, op, "x");
  require_cuda(y, op, "y");
  require_float(x, op, "x");
  require_float(y, op, "y");
  RowView X = as_rows(x, 1, op), Y = as_rows(y, 1, op);
  const int64_t M = X.rows, D = X.cols;
  HLM_REQUIRE(Y.rows == M && Y.cols == D, ErrorKind::Internal, "{}: y {} must match x {}", op,
              y.describe(), x.describe());
  check_vector(w, D, op, "w");
  require_cuda(rstd, op, "rstd");
  require_dtype(rstd, DType::F32, op, "rstd");
  HLM_REQUIRE(rstd.is_contiguous() && rstd.numel() == M, ErrorKind::Internal,
              "{}: rstd {} must be contiguous with {} entries", op, rstd.describe(), M);
  if (M == 0) return;
  constexpr int kFwdVpt = 8;
  // The vector path needs every tensor in the row's dtype width: x and y of one dtype.
  const int tpr = x.dtype == y.dtype && x.dtype != DType::F64
                      ? vec_threads_per_row<kFwdVpt>(x.dtype, {{X.data, X.ld}, {Y.data, Y.ld}}, w.data, D)
                      : 0;
  if (tpr > 0) {
    launch_rmsnorm_vec<false>(x.dtype, w.dtype, const_cast<void*>(X.data), X.ld, nullptr, 0, w.data, eps, Y.data, Y.ld,
                              rstd.ptr<float>(), M, D, tpr, op);
    return;
  }
  dispatch_float(x.dtype, op, [&]<typename TX>() {
    dispatch_float(w.dtype, op, [&]<typename TW>() {
      dispatch_float(y.dtype, op, [&]<typename TY>() {
        auto* kernel_fn = rmsnorm_forward_kernel<TX, TW, TY>;
        HLM_LAUNCH(kernel_fn, static_cast<unsigned>(M), kNormThreads, 0,
            static_cast<const TX*>(X.data), X.ld, w.ptr<TW>(), eps, static_cast<TY*>(Y.data), Y.ld,
            rstd.ptr<float>(), D);
        HLM_CUDA_CHECK_LAUNCH();
      });
    });
  });
}

void residual_rmsnorm_forward(const Tensor& x, const Tensor& d, const Tensor& w, float eps,
                              const Tensor& y, const Tensor& rstd) {
  const char* op = "residual_rmsnorm_forward";
  for (auto [t, name] : {std::pair{&x, "x"}, {&d, "d"}, {&y, "y"}}) {
    require_cuda(*t, op, name);
    require_float(*t, op, name);
  }
  HLM_REQUIRE(same_shape(x, d), ErrorKind::Internal, "{}: x {} and d {} differ in shape", op, x.describe(),
              d.describe());
  RowView X = as_rows(x, 1, op), DD = as_rows(d, 1, op), Y = as_rows(y, 1, op);
  const int64_t M = X.rows, D = X.cols;
  HLM_REQUIRE(Y.rows == M && Y.cols == D, ErrorKind::Internal, "{}: y {} must match x {}", op, y.describe(),
              x.describe());
  check_vector(w, D, op, "w");
  constexpr int kFwdVpt = 8;
  const int tpr = x.dtype == d.dtype && x.dtype == y.dtype
                      ? vec_threads_per_row<kFwdVpt>(x.dtype, {{X.data, X.ld}, {DD.data, DD.ld}, {Y.data, Y.ld}},
                                                     w.data, D)
                      : 0;
  if (tpr == 0 || M == 0) {  // other layouts: the two ops it fuses
    cuda::add_scaled(d, 1.0f, x);
    cuda::rmsnorm_forward(x, w, eps, y, rstd);
    return;
  }
  require_cuda(rstd, op, "rstd");
  require_dtype(rstd, DType::F32, op, "rstd");
  HLM_REQUIRE(rstd.is_contiguous() && rstd.numel() == M, ErrorKind::Internal,
              "{}: rstd {} must be contiguous with {} entries", op, rstd.describe(), M);
  launch_rmsnorm_vec<true>(x.dtype, w.dtype, X.data, X.ld, DD.data, DD.ld, w.data, eps, Y.data, Y.ld,
                           rstd.ptr<float>(), M, D, tpr, op);
}

namespace {

// dx = (or, with kAccum, +=) the gradient of the norm's input; dw accumulated.
template <bool kAccum>
void rmsnorm_backward_impl(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                           const Tensor& dx, const Tensor& dw, const char* op) {
  require_cuda(dy, op, "dy");
  require_cuda(x, op, "x");
  require_cuda(dx, op, "dx");
  require_float(dy, op, "dy");
  require_float(x, op, "x");
  require_float(dx, op, "dx");
  RowView G = as_rows(dy, 1, op), X = as_rows(x, 1, op), DX = as_rows(dx, 1, op);
  const int64_t M = X.rows, D = X.cols;
  HLM_REQUIRE(G.rows == M && G.cols == D && DX.rows == M && DX.cols == D, ErrorKind::Internal,
              "{}: dy {}, x {} and dx {} must match", op, dy.describe(), x.describe(), dx.describe());
  check_vector(w, D, op, "w");
  check_vector(dw, D, op, "dw");
  require_cuda(rstd, op, "rstd");
  require_dtype(rstd, DType::F32, op, "rstd");
  HLM_REQUIRE(rstd.is_contiguous() && rstd.numel() == M, ErrorKind::Internal,
              "{}: rstd {} must be contiguous with {} entries", op, rstd.describe(), M);
  if (M == 0 || D == 0) return;
  const int64_t rpb = rows_per_block(M);
  const int64_t chunks = (M + rpb - 1) / rpb;
  float* partial = scratch_as<float>(Scratch::Reduce, static_cast<size_t>(chunks * D));
  const size_t smem = static_cast<size_t>(D) * sizeof(float);
  constexpr int kBwdVpt = 4;
  const int tpr = x.dtype == dy.dtype && x.dtype == dx.dtype && x.dtype != DType::F64
                      ? vec_threads_per_row<kBwdVpt>(x.dtype, {{X.data, X.ld}, {G.data, G.ld}, {DX.data, DX.ld}},
                                                     w.data, D)
                      : 0;
  if (tpr > 0) {
    dispatch_float(x.dtype, op, [&]<typename TX>() {
      dispatch_float(w.dtype, op, [&]<typename TW>() {
        auto kernel = rmsnorm_backward_vec_kernel<TX, TW, TX, TX, kBwdVpt, kAccum>;
        set_smem(kernel, smem, op);
        HLM_LAUNCH(kernel, static_cast<unsigned>(chunks), kVecThreads, smem,
            static_cast<const TX*>(G.data), G.ld, static_cast<const TX*>(X.data), X.ld, w.ptr<TW>(),
            rstd.ptr<float>(), static_cast<TX*>(DX.data), DX.ld, M, D, rpb, tpr, partial);
        HLM_CUDA_CHECK_LAUNCH();
      });
    });
    finish_dw(partial, chunks, dw, D, op);
    return;
  }
  dispatch_float(x.dtype, op, [&]<typename TX>() {
    dispatch_float(w.dtype, op, [&]<typename TW>() {
      dispatch_float(dy.dtype, op, [&]<typename TG>() {
        dispatch_float(dx.dtype, op, [&]<typename TD>() {
          auto kernel = rmsnorm_backward_kernel<TX, TW, TG, TD, kAccum>;
          set_smem(kernel, smem, op);
          HLM_LAUNCH(kernel, static_cast<unsigned>(chunks), kNormThreads, smem,
              static_cast<const TG*>(G.data), G.ld, static_cast<const TX*>(X.data), X.ld,
              w.ptr<TW>(), rstd.ptr<float>(), static_cast<TD*>(DX.data), DX.ld, M, D, rpb, partial);
          HLM_CUDA_CHECK_LAUNCH();
        });
      });
    });
  });
  finish_dw(partial, chunks, dw, D, op);
}

}  // namespace

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      const Tensor& dx, const Tensor& dw) {
  rmsnorm_backward_impl<false>(dy, x, w, rstd, dx, dw, "rmsnorm_backward");
}

void residual_rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                               const Tensor& dres, const Tensor& dw) {
  rmsnorm_backward_impl<true>(dy, x, w, rstd, dres, dw, "residual_rmsnorm_backward");
}

void gated_rmsnorm_forward(const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size,
                           float eps, const Tensor& y, const Tensor& rstd) {
  const char* op = "gated_rmsnorm_forward";
  for (auto [t, name] : {std::pair{&x, "x"}, {&z, "z"}, {&y, "y"}}) {
    require_cuda(*t, op, name);
    require_float(*t, op, name);
  }
  require_dtype(z, x.dtype, op, "z");
  RowView X = as_rows(x, 1, op), Z = as_rows(z, 1, op), Y = as_rows(y, 1, op);
  const int64_t M = X.rows, D = X.cols;
  HLM_REQUIRE(Z.rows == M && Z.cols == D && Y.rows == M && Y.cols == D, ErrorKind::Internal,
              "{}: x {}, z {} and y {} must match", op, x.describe(), z.describe(), y.describe());
  HLM_REQUIRE(group_size > 0 && D % group_size == 0, ErrorKind::InvalidArgument,
              "{}: group size {} does not divide the width {}", op, group_size, D);
  const int64_t ng = D / group_size;
  check_vector(w, D, op, "w");
  require_cuda(rstd, op, "rstd");
  require_dtype(rstd, DType::F32, op, "rstd");
  RowView RS = as_rows(rstd, 1, op);
  HLM_REQUIRE(RS.rows == M && RS.cols == ng, ErrorKind::Internal, "{}: rstd {} must be [{},{}]",
              op, rstd.describe(), M, ng);
  if (M == 0) return;
  // Vector path: segments of whole aligned 16-byte vectors, y in x's dtype (group starts are then
  // aligned too).
  constexpr int kGatedVpt = 4;
  const int tpr = x.dtype == y.dtype
                      ? vec_threads_per_row<kGatedVpt>(x.dtype, {{X.data, X.ld}, {Z.data, Z.ld}, {Y.data, Y.ld}},
                                                       w.data, group_size)
                      : 0;
  if (tpr > 0) {
    const int64_t nvec = group_size / (16 / static_cast<int64_t>(dtype_size(x.dtype)));
    const int64_t segments = M * ng;
    int spread = spread_threads_per_row(tpr, nvec, segments);
    // At most 2 vectors per thread (a segment spread over more threads: 64 registers, 4 blocks per
    // SM). H100, 8B shape (groups of 1024, run10 b): 4 vectors per thread 57.6 / 831 µs at T 2K /
    // 32K, 2 vectors 49.2 / 683, 1 vector 47.6 / 671; the 1.43B shape (groups of 512) already had 2.
    // HLM_GATED_VPT=1|2|4 (read per call, for A/B runs) sets the cap.
    int max_vpt = 2;
    if (const char* e = std::getenv("HLM_GATED_VPT"); e && (e[0] == '1' || e[0] == '2' || e[0] == '4') && e[1] == 0)
      max_vpt = e[0] - '0';
    while (spread < kVecThreads && static_cast<int64_t>(spread) * max_vpt < nvec) spread *= 2;
    const unsigned grid = grid_for(segments, kVecThreads / spread);
    dispatch_float(x.dtype, op, [&]<typename TX>() {
      dispatch_float(w.dtype, op, [&]<typename TW>() {
        // As few register vectors as the segment needs (the 1.43B training shape, 64 vectors per
        // segment over 32 threads: 2), so more blocks fit on an SM and more loads are in flight.
        const int64_t vpt = (nvec + spread - 1) / spread;
        auto* kernel_fn = vpt <= 1   ? gated_forward_vec_kernel<TX, TW, TX, 1>
                          : vpt <= 2 ? gated_forward_vec_kernel<TX, TW, TX, 2>
                                     : gated_forward_vec_kernel<TX, TW, TX, kGatedVpt>;
        HLM_LAUNCH_PDL(kernel_fn, grid, kVecThreads, 0, static_cast<const TX*>(X.data), X.ld,
                       static_cast<const TX*>(Z.data), Z.ld, w.ptr<TW>(), group_size, ng, eps, static_cast<TX*>(Y.data),
                       Y.ld, static_cast<float*>(RS.data), RS.ld, segments, spread);
        HLM_CUDA_CHECK_LAUNCH();
      });
    });
    return;
  }
  const int64_t warps = M * ng;
  const unsigned blocks = static_cast<unsigned>((warps * 32 + kNormThreads - 1) / kNormThreads);
  dispatch_float(x.dtype, op, [&]<typename TX>() {
    dispatch_float(w.dtype, op, [&]<typename TW>() {
      dispatch_float(y.dtype, op, [&]<typename TY>() {
        auto* kernel_fn = gated_forward_kernel<TX, TW, TY>;
        HLM_LAUNCH(kernel_fn, blocks, kNormThreads, 0,
            static_cast<const TX*>(X.data), X.ld, static_cast<const TX*>(Z.data), Z.ld, w.ptr<TW>(),
            group_size, ng, eps, static_cast<TY*>(Y.data), Y.ld, static_cast<float*>(RS.data),
            RS.ld, M);
        HLM_CUDA_CHECK_LAUNCH();
      });
    });
  });
}

void gated_rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& z, const Tensor& w,
                            const Tensor& rstd, int64_t group_size, const Tensor& dx,
                            const Tensor& dz, const Tensor& dw) {
  const char* op = "gated_rmsnorm_backward";
  for (auto [t, name] : {std::pair{&dy, "dy"}, {&x, "x"}, {&z, "z"}, {&dx, "dx"}, {&dz, "dz"}}) {
    require_cuda(*t, op, name);
    require_float(*t, op, name);
  }
  require_dtype(z, x.dtype, op, "z");
  require_dtype(dz, dx.dtype, op, "dz");
  RowView G = as_rows(dy, 1, op), X = as_rows(x, 1, op), Z = as_rows(z, 1, op),
          DX = as_rows(dx, 1, op), DZ = as_rows(dz, 1, op);
  const int64_t M = X.rows, D = X.cols;
  for (const RowView* r : {&G, &Z, &DX, &DZ})
    HLM_REQUIRE(r->rows == M && r->cols == D, ErrorKind::Internal,
                "{}: dy, x, z, dx and dz must all be [{},{}]", op, M, D);
  HLM_REQUIRE(group_size > 0 && D % group_size == 0, ErrorKind::InvalidArgument,
              "{}: group size {} does not divide the width {}", op, group_size, D);
  const int64_t ng = D / group_size;
  check_vector(w, D, op, "w");
  check_vector(dw, D, op, "dw");
  require_cuda(rstd, op, "rstd");
  require_dtype(rstd, DType::F32, op, "rstd");
  RowView RS = as_rows(rstd, 1, op);
  HLM_REQUIRE(RS.rows == M && RS.cols == ng, ErrorKind::Internal, "{}: rstd {} must be [{},{}]",
              op, rstd.describe(), M, ng);
  if (M == 0 || D == 0) return;
  const size_t smem = static_cast<size_t>(D) * sizeof(float);
  // Vector path: dy, x, z, dx and dz of one dtype, segments of whole aligned 16-byte vectors. Two
  // vectors per thread where the segment allows (registers: occupancy), else four.
  const bool one_dtype = dy.dtype == x.dtype && dx.dtype == x.dtype;
  const std::initializer_list<std::pair<const void*, int64_t>> rows = {
      {G.data, G.ld}, {X.data, X.ld}, {Z.data, Z.ld}, {DX.data, DX.ld}, {DZ.data, DZ.ld}};
  int vpt = 2;
  int tpr = one_dtype ? vec_threads_per_row<2>(x.dtype, rows, w.data, group_size) : 0;
  if (one_dtype && tpr == 0) {
    vpt = 4;
    tpr = vec_threads_per_row<4>(x.dtype, rows, w.data, group_size);
  }
  if (tpr > 0) {
    const int64_t nvec = group_size / (16 / static_cast<int64_t>(dtype_size(x.dtype)));
    if (static_cast<int64_t>(tpr) >= nvec) vpt = 1;
    const int64_t spt = kVecThreads / tpr;  // segments a block works on at once
    const int64_t copies = ng <= spt ? spt / ng : 1;  // rows per pass: dw copies in shared memory
    const size_t vsmem = static_cast<size_t>(copies * D) * sizeof(float);
    int64_t chunks = 0;
    float* partial = nullptr;
    dispatch_float(x.dtype, op, [&]<typename TX>() {
      dispatch_float(w.dtype, op, [&]<typename TW>() {
        auto kernel = vpt == 1 ? gated_backward_vec_kernel<TX, TW, 1>
                               : vpt == 2 ? gated_backward_vec_kernel<TX, TW, 2> : gated_backward_vec_kernel<TX, TW, 4>;
        set_smem(kernel, vsmem, op);
        // One full wave of equal blocks (no tail); fixed for a given build and device, so the
        // dw summation order is too.
        const int64_t slots = static_cast<int64_t>(resident_vec_blocks(kernel, vsmem)) * num_sms();
        const int64_t rpb = std::max<int64_t>(1, (M + slots - 1) / slots);
        chunks = (M + rpb - 1) / rpb;
        partial = scratch_as<float>(Scratch::Reduce, static_cast<size_t>(chunks * D));
        HLM_LAUNCH(kernel, static_cast<unsigned>(chunks), kVecThreads, vsmem, static_cast<const TX*>(G.data), G.ld,
                   static_cast<const TX*>(X.data), X.ld, static_cast<const TX*>(Z.data), Z.ld, w.ptr<TW>(),
                   static_cast<const float*>(RS.data), RS.ld, group_size, ng, static_cast<TX*>(DX.data), DX.ld,
                   static_cast<TX*>(DZ.data), DZ.ld, M, rpb, tpr, partial);
        HLM_CUDA_CHECK_LAUNCH();
      });
    });
    finish_dw(partial, chunks, dw, D, op);
    return;
  }
  const int64_t rpb = rows_per_block(M);
  const int64_t chunks = (M + rpb - 1) / rpb;
  float* partial = scratch_as<float>(Scratch::Reduce, static_cast<size_t>(chunks * D));
  dispatch_float(x.dtype, op, [&]<typename TX>() {
    dispatch_float(w.dtype, op, [&]<typename TW>() {
      dispatch_float(dy.dtype, op, [&]<typename TG>() {
        dispatch_float(dx.dtype, op, [&]<typename TD>() {
          auto kernel = gated_backward_kernel<TX, TW, TG, TD>;
          set_smem(kernel, smem, op);
          HLM_LAUNCH(kernel, static_cast<unsigned>(chunks), kNormThreads, smem,
              static_cast<const TG*>(G.data), G.ld, static_cast<const TX*>(X.data), X.ld,
              static_cast<const TX*>(Z.data), Z.ld, w.ptr<TW>(), static_cast<const float*>(RS.data),
              RS.ld, group_size, ng, static_cast<TD*>(DX.data), DX.ld, static_cast<TD*>(DZ.data),
              DZ.ld, M, rpb, partial);
          HLM_CUDA_CHECK_LAUNCH();
        });
      });
    });
  });
  finish_dw(partial, chunks, dw, D, op);
}

}  // namespace hlm::cuda
