// SSD backward chunk gradients on Hopper's warpgroup MMA (wgmma, sm_90a), for Q = P = 64: the same
// gradients as ssd_bwd.cu's ssd_bwd_chunk_kernel (its comment has the formulas), from the same
// inputs (the state sweeps' bf16 states entering and gradients leaving each chunk), with every
// product a handful of wgmma on shared-memory operands instead of mma.sync and ldmatrix.
//
// One block per (chunk, group, row) loops over the group's heads, 256 threads in two warpgroups
// with different products. The [Q, Q] products run in the orientation [s, t] (rows: the source
// token s, columns t >= s): then Mᵀ, the A operand of dxdt = Mᵀ dY, is formed in the accumulator
// registers of dXY and never goes through shared memory. Rows s are in token_of_row() order (the
// x and B tiles stored permuted), so each warp's causal work is the same.
//
//   warpgroup 0, per head:   dXY  = X dYᵀ      [s, t]  64 × 64 × P    A = x (K-major),  B = dy (K-major)
//                            BdH  = B dHoutᵀ   [s, p]  64 × 64 × N    A = B tile,       B = dHout (K-major)
//                            Mᵀ = Gᵀ L, dG = dXY dt L (registers); dGsum += dG over the heads
//                            dxdt = Mᵀ dY      [s, p]  64 × 64 × 64   A = Mᵀ (registers), B = dy (MN-major)
//                            -> dx, and the row / column sums the head's d(dt) needs
//   warpgroup 1, per head:   dC += (eoff dY) Hin   [t, n]  64 × N × P   A = eoff dy, B = Hin (MN-major)
//                            dB += (w dt X) dHout  [s, n]  64 × N × P   A = w dt x, B = dHout (MN-major)
//                            Yo = C Hinᵀ       [t, p]  64 × 64 × N    -> eoff dy . Yo (the d(dt) term of
//                            the state entering the chunk); <dHout, Hin>; under the products one
//                            head's scan ahead (warp 7) and one head's d(dt) epilogue behind (warp 4)
//   once per block:          Gᵀ = B Cᵀ (warpgroup 0, kept in registers); at the end
//                            dB += dGsumᵀ C, dC += dGsum B (warpgroup 1, dGsum from shared memory)
//
// The scaled A operands (eoff dy, w dt x: bf16 copies, as the forward's x w dt) let every head's
// terms go straight into the dC and dB accumulators, which stay in warpgroup 1's registers over all
// heads (sums in registers, no atomics); the mma.sync kernel scales fp32 products instead.
// Variant 1, per head one block barrier: the head's tiles (prefetched during the previous head)
// in, the previous head's buffers free. The default on sm_90 (backward variant 1): ~5 % faster
// than ssd_bwd_chunk_kernel in the SSD backward on an H100, and like it latency-bound (ncu, 4K: ~11K
// warp instructions per head-chunk at ~0.9 IPC per SM, one block of 8 warps per SM; warpgroup 0
// sets the pace; bench/cuda/NOTES-ssd.md rounds 12 and 13). Opt-in, same gradients bitwise:
// variant 3 pipelines warpgroup 0 over two heads (the same kernel, kPipe), variant 4 also leaves
// the copies to warpgroup 1 (kLoadsWg1); variant 2 (further below) is the work warp-specialised.
#include <type_traits>

#include "ops/cuda/ssd_kernels.cuh"
#include "ops/cuda/ssd_wg.cuh"
#include "ops/cuda/wgmma.cuh"

namespace hlm::cuda::ssd {
namespace {

constexpr int kQ = 64, kP = 64, kBwThreads = 256;
constexpr int kBwScanWarp = 7, kBwEpilogueWarp = 4;  // both in warpgroup 1

// Per-head row partials for the d(dt) epilogue, indexed by token.
struct BwReduce {
  float zt[4][kQ];  // sum over warp w's rows s of z = dG G, per column t  (sum_s dG G [t, s])
  float zs[kQ];     // sum over the columns t of row s                    (sum_t dG G [t, s])
  float orow[kQ];   // eoff_t dy_t . (Hin C_t)
  float vrow[kQ];   // v_s = w_s dt_s x_s . (dHout B_s)
  float xrow[kQ];   // x_s . dxdt_s
  float ddiag[kQ];  // dy_t . x_t
  float gdot[4];    // <dHout, Hin> per warp of warpgroup 1
};

template <int N, int kBufs>
struct BwLayout {
  using TX = wg::CoreTile<kQ, kP>;  // x (rows permuted), dy [t][p]; dGsum [s (permuted)][t]
  using TN = wg::CoreTile<kQ, N>;   // B (rows permuted), C [t][n]
  using TH = wg::CoreTile<kP, N>;   // Hin, dHout [p][n]
  static constexpr size_t bs = 0;
  static constexpr size_t cs = bs + TN::kBytes;
  static constexpr size_t heads = cs + TN::kBytes;  // kBufs head buffers: x, dy, Hin, dHout
  static constexpr size_t h_x = 0, h_dy = h_x + TX::kBytes, h_hin = h_dy + TX::kBytes, h_dho = h_hin + TH::kBytes;
  static constexpr size_t head = h_dho + TH::kBytes;
  static constexpr size_t dg = heads + kBufs * head;  // dGsum, bf16
  static constexpr size_t ye = dg + TX::kBytes;     // eoff dy (warpgroup 1's A operand for dC)
  static constexpr size_t xw = ye + TX::kBytes;     // w dt x, rows permuted (for dB)
  static constexpr size_t raw = xw + TX::kBytes;    // raw dt, head hi's at slot hi % 2
  static constexpr size_t bnd = raw + 2 * kQ * 4;
  static constexpr size_t scan = bnd + kQ * 4;                   // head hi's at slot hi % 3
  static constexpr size_t red = scan + 3 * sizeof(ChunkScan<kQ>);  // head hi's at slot hi % 2
  static constexpr size_t total = red + 2 * sizeof(BwReduce);
  static_assert(red % 16 == 0 && total <= 227 * 1024, "chunk kernel shared memory");
};

// d (+)= A B over k16 with N columns (m64nNk16), A and B from shared memory.
template <int N, int kTransA, int kTransB>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t da, uint64_t db, bool accumulate) {
  if constexpr (N == 128)
    wg::wgmma_ss_n128<kTransA, kTransB>(d, da, db, accumulate);
  else
    wg::wgmma_ss_n64<kTransA, kTransB>(d, da, db, accumulate);
}

// The block's chunk: (c, g, b) = blockIdx, the group's heads, the chunk's rows.
struct BwChunk {
  int c, g, b, hpg, h_first, C, t0, len;
  int64_t row0;
  __device__ explicit BwChunk(const SsdArgs& a)
      : c(blockIdx.x), g(blockIdx.y), b(blockIdx.z), hpg(a.H / a.G), h_first(g * hpg), C(a.nchunks), t0(c * kQ),
        len(min(kQ, a.T - c * kQ)), row0(static_cast<int64_t>(b) * a.T + c * kQ) {}
};

// One consumer thread: lt within its warpgroup (warp w, lane = 4 gq + qq); its two accumulator rows
// m_h (16 w + gq, + 8) and their tokens s_h in the permuted operands.
struct BwThread {
  int lt, w, lane, gq, qq;
  int m_h[2], s_h[2];
  __device__ explicit BwThread(int lt_) : lt(lt_), w(lt_ >> 5), lane(lt_ & 31), gq((lt_ & 31) >> 2), qq(lt_ & 3) {
    m_h[0] = 16 * w + gq;
    m_h[1] = 16 * w + gq + 8;
    s_h[0] = token_of_row(m_h[0]);
    s_h[1] = token_of_row(m_h[1]);
  }
  // For each of this thread's rows m_h: the dot product of tile row m_h (a CoreTile<Q, P>, bf16)
  // with the row of the [64, 64] accumulator acc, summed over the 4 lanes that share the row.
  __device__ __forceinline__ void row_dots(float (&out)[2], const unsigned char* tile, const float (&acc)[32]) const {
    using TX = wg::CoreTile<kQ, kP>;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float d = 0.f;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const uint32_t v = *reinterpret_cast<const uint32_t*>(tile + TX::offset(m_h[half], 8 * j + 2 * qq));
        d += mma::bf16_lo(v) * acc[4 * j + 2 * half] + mma::bf16_hi(v) * acc[4 * j + 2 * half + 1];
      }
      out[half] = quad_sum(d);
    }
  }
};

// dcum -> da -> d(dt) of head h and its partial sums of dA, dD, ddt_bias (one warp), from the
// head's row partials and scan.
__device__ __forceinline__ void bw_head_epilogue(const SsdArgs& a, const BwChunk& k, const ChunkScan<kQ>& sc,
                                                 const BwReduce& red, int h, int lane) {
  constexpr int E = kQ / 32;
  float dcum[E], vs = 0.f;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int t = lane * E + e;
    const float zrow = red.zt[0][t] + red.zt[1][t] + red.zt[2][t] + red.zt[3][t];
    dcum[e] = zrow - red.zs[t] + red.orow[t] - red.vrow[t];
    vs += red.vrow[t];
  }
  vs = warp_sum(vs);
  const float gsum = red.gdot[0] + red.gdot[1] + red.gdot[2] + red.gdot[3];
  dt_epilogue_tail<kQ>(a, sc, dcum, vs, gsum, head_A(a, h), [&](int t) { return red.xrow[t]; },
                       [&](int t) { return red.ddiag[t]; }, k.len, k.row0, h,
                       a.ws_part ? a.ws_part + ((static_cast<int64_t>(k.b) * k.C + k.c) * a.H + h) * 3 : nullptr);
}

// Warpgroup 0 (the [s, t] side), once per block: Gᵀ[s, t] = B_s . C_t.
template <int N>
__device__ __forceinline__ void q_gt(float (&gt)[32], uint64_t desc_b_k, uint64_t desc_c_k) {
  using TN = wg::CoreTile<kQ, N>;
  wg::fence();
#pragma unroll
  for (int kk = 0; kk < N / 16; ++kk)
    wg::wgmma_ss_n64<0, 0>(gt, wg::desc_advance(desc_b_k, kk * TN::kKMajorStep),
                           wg::desc_advance(desc_c_k, kk * TN::kKMajorStep), kk > 0);
  wg::commit();
  wg::wait<0>();
  wg::pin(gt);
}

// Warpgroup 0's per-head work in pieces, so that variant 1 (q_head) and variant 3 (the pipelined
// loop in ssd_bwd_chunk_wg_kernel) issue the same products in different orders.

// dXY = X dYᵀ [s, t] (one committed group). Xs (rows permuted), Ys: the head's x and dy tiles.
__device__ __forceinline__ void q_issue_dxy(float (&dxy)[32], const unsigned char* Xs, const unsigned char* Ys) {
  using TX = wg::CoreTile<kQ, kP>;
  const uint64_t desc_x_k = wg::make_desc(wg::smem_addr(Xs), TX::kKMajorLbo, TX::kKMajorSbo);
  const uint64_t desc_dy_k = wg::make_desc(wg::smem_addr(Ys), TX::kKMajorLbo, TX::kKMajorSbo);
  wg::fence();
#pragma unroll
  for (int kk = 0; kk < kP / 16; ++kk)
    wg::wgmma_ss_n64<0, 0>(dxy, wg::desc_advance(desc_x_k, kk * TX::kKMajorStep),
                           wg::desc_advance(desc_dy_k, kk * TX::kKMajorStep), kk > 0);
  wg::commit();
}

// BdH = B dHoutᵀ [s, p] (one committed group). Dho: the head's dHout tile.
template <int N>
__device__ __forceinline__ void q_issue_bdh(float (&bdh)[32], uint64_t desc_b_k, const unsigned char* Dho) {
  using TN = wg::CoreTile<kQ, N>;
  using TH = wg::CoreTile<kP, N>;
  const uint64_t desc_dho_k = wg::make_desc(wg::smem_addr(Dho), TH::kKMajorLbo, TH::kKMajorSbo);
  wg::fence();
#pragma unroll
  for (int kk = 0; kk < N / 16; ++kk)
    wg::wgmma_ss_n64<0, 0>(bdh, wg::desc_advance(desc_b_k, kk * TN::kKMajorStep),
                           wg::desc_advance(desc_dho_k, kk * TH::kKMajorStep), kk > 0);
  wg::commit();
}

// From dXY (complete): Mᵀ as dxdt's A fragments, dgs += dG, the z = dG G partial sums, ddiag.
// Mᵀ[s, t] = G[t, s] L[t, s] (the A fragments of dxdt: k step ks takes columns 16 ks ..),
// dG[t, s] = dXY[s, t] dt_s L[t, s], L[t, s] = exp(cum_t - cum_s) for t >= s in s's document.
// Column block j of a half is zero where all its t are below the half's tokens: j < w for the
// early half (tokens 8 w ..), j < 7 - w for the late one. (One instance per warp index, with the
// skips known at compile time and ddiag stored after the loop, was backward variant 5 of round 15:
// +16 % code, and slower on the H100, 11.49 against 10.70 ms at 64K; NOTES-ssd round 16.)
__device__ __forceinline__ void q_mask(const BwThread& th, const ChunkScan<kQ>& S, BwReduce& red, const float (&gt)[32],
                                       float (&dgs)[32], const float (&dxy)[32], uint32_t (&mf)[4][4],
                                       float (&zr)[2], float (&zc)[8][2]) {
  const int w = th.w, qq = th.qq;
  zr[0] = zr[1] = 0.f;
  const float cum_s[2] = {S.cum[th.s_h[0]], S.cum[th.s_h[1]]};
  const float dt_s[2] = {S.dt[th.s_h[0]], S.dt[th.s_h[1]]};
  const int seg_s[2] = {S.seg[th.s_h[0]], S.seg[th.s_h[1]]};
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    zc[j][0] = zc[j][1] = 0.f;
    const int t = 8 * j + 2 * qq;
    const float2 ct = *reinterpret_cast<const float2*>(S.cum + t);
    const int2 sg = *reinterpret_cast<const int2*>(S.seg + t);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int s = th.s_h[half];
      if (j < (half == 0 ? w : 7 - w)) {
        mf[j >> 1][2 * (j & 1) + half] = 0u;
        continue;
      }
      float m[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int i = 4 * j + 2 * half + e;
        const float cte = e ? ct.y : ct.x;
        const int sge = e ? sg.y : sg.x;
        const float Lm = (t + e >= s && sge == seg_s[half]) ? __expf(fminf(cte - cum_s[half], 0.f)) : 0.f;
        const float dg = dxy[i] * dt_s[half] * Lm;
        dgs[i] += dg;
        const float z = dg * gt[i];
        zr[half] += z;
        zc[j][e] += z;
        m[e] = gt[i] * Lm;
        if (t + e == s) red.ddiag[s] = dxy[i];
      }
      mf[j >> 1][2 * (j & 1) + half] = mma::pack_bf16x2(m[0], m[1]);
    }
  }
}

// dxdt = Mᵀ dY [s, p] (one committed group; A = Mᵀ from registers, B = dy MN-major).
__device__ __forceinline__ void q_issue_dxdt(float (&dxa)[32], const uint32_t (&mf)[4][4], const unsigned char* Ys) {
  using TX = wg::CoreTile<kQ, kP>;
  const uint64_t desc_dy_mn = wg::make_desc(wg::smem_addr(Ys), TX::kMnMajorLbo, TX::kMnMajorSbo);
  wg::fence();
#pragma unroll
  for (int ks = 0; ks < 4; ++ks)
    wg::wgmma_rs_n64<1>(dxa, mf[ks], wg::desc_advance(desc_dy_mn, ks * TX::kMnMajorStep), ks > 0);
  wg::commit();
}

// The z partial sums into red: per row s (zs) and per column t and warp (zt).
__device__ __forceinline__ void q_zsums(const BwThread& th, BwReduce& red, const float (&zr)[2],
                                        const float (&zc)[8][2]) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const float v = quad_sum(zr[half]);
    if (th.qq == 0) red.zs[th.s_h[half]] = v;
  }
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const float v = column_sum(zc[j][e]);
      if (th.gq == 0) red.zt[th.w][8 * j + 2 * th.qq + e] = v;
    }
}

// From BdH (complete): v_s = w_s dt_s x_s . BdH_s into red.
__device__ __forceinline__ void q_vrow(const BwThread& th, const ChunkScan<kQ>& S, BwReduce& red,
                                       const unsigned char* Xs, const float (&bdh)[32]) {
  float vr[2];
  th.row_dots(vr, Xs, bdh);
#pragma unroll
  for (int half = 0; half < 2; ++half)
    if (th.qq == 0) red.vrow[th.s_h[half]] = vr[half] * S.wdt[th.s_h[half]];
}

// From dxdt (complete): dxdt += w BdH; dx = D dy + dt dxdt stored; x . dxdt into red.
__device__ __forceinline__ void q_dx(const SsdArgs& a, const BwChunk& k, const BwThread& th, const ChunkScan<kQ>& S,
                                     BwReduce& red, const unsigned char* Xs, const unsigned char* Ys,
                                     const float (&bdh)[32], const float (&dxa)[32], int h) {
  using TX = wg::CoreTile<kQ, kP>;
  const float Dh = a.D ? load_any(a.D, a.D_type, h) : 0.f;
  auto* dxg = a.dx ? static_cast<bf16_t*>(a.dx) + static_cast<int64_t>(h) * kP : nullptr;
  float xr[2] = {0.f, 0.f};
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int s = th.s_h[half];
    const float ws = S.w[s], dts = S.dt[s];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int p = 8 * j + 2 * th.qq, i = 4 * j + 2 * half;
      const float d0 = dxa[i] + ws * bdh[i];
      const float d1 = dxa[i + 1] + ws * bdh[i + 1];
      const uint32_t xv = *reinterpret_cast<const uint32_t*>(Xs + TX::offset(th.m_h[half], p));
      xr[half] += mma::bf16_lo(xv) * d0 + mma::bf16_hi(xv) * d1;
      if (dxg && s < k.len) {
        const uint32_t yv = *reinterpret_cast<const uint32_t*>(Ys + TX::offset(s, p));
        *reinterpret_cast<uint32_t*>(dxg + (k.row0 + s) * a.ld_dx + p) =
            mma::pack_bf16x2(Dh * mma::bf16_lo(yv) + dts * d0, Dh * mma::bf16_hi(yv) + dts * d1);
      }
    }
  }
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const float v = quad_sum(xr[half]);
    if (th.qq == 0) red.xrow[th.s_h[half]] = v;
  }
}

// Warpgroup 0, one head h (variant 1): dXY, BdH, Mᵀ and dG (dgs += dG), dxdt, dx; the row / column
// partials of d(dt) into red. Xs (rows permuted), Ys: the head's x and dy tiles; Dho its dHout.
template <int N>
__device__ __forceinline__ void q_head(const SsdArgs& a, const BwChunk& k, const BwThread& th, const unsigned char* Xs,
                                       const unsigned char* Ys, const unsigned char* Dho, uint64_t desc_b_k,
                                       const ChunkScan<kQ>& S, BwReduce& red, const float (&gt)[32], float (&dgs)[32],
                                       int h) {
  float dxy[32], bdh[32], dxa[32], zr[2], zc[8][2];
  uint32_t mf[4][4];
  q_issue_dxy(dxy, Xs, Ys);
  q_issue_bdh<N>(bdh, desc_b_k, Dho);
  wg::wait<1>();
  wg::pin(dxy);
  q_mask(th, S, red, gt, dgs, dxy, mf, zr, zc);
  q_issue_dxdt(dxa, mf, Ys);
  q_zsums(th, red, zr, zc);
  wg::wait<1>();
  wg::pin(bdh);
  q_vrow(th, S, red, Xs, bdh);
  wg::wait<0>();
  wg::pin(dxa);
  q_dx(a, k, th, S, red, Xs, Ys, bdh, dxa, h);
}

// Warpgroup 0, after the last head: dGsum (bf16) into Ds for warpgroup 1's products, fenced for the
// async proxy (a barrier must still order it).
__device__ __forceinline__ void q_store_dgs(unsigned char* Ds, const BwThread& th, const float (&dgs)[32]) {
  using TX = wg::CoreTile<kQ, kP>;
#pragma unroll
  for (int j = 0; j < 8; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half)
      *reinterpret_cast<uint32_t*>(Ds + TX::offset(th.m_h[half], 8 * j + 2 * th.qq)) =
          mma::pack_bf16x2(dgs[4 * j + 2 * half], dgs[4 * j + 2 * half + 1]);
  wg::fence_async_smem();
}

// Warpgroup 1 (the [t, n] / [s, n] side), one head: the scaled copies Ye = eoff dy and Xw = w dt x
// (rows permuted; free: the previous head's products on them completed in every warp before the
// caller's barrier), dC += Ye Hin, dB += Xw dHout, Yo = C Hinᵀ; under them `under()` and
// <dHout, Hin>; then eoff dy . Yo. Uses named barrier 1 (warpgroup 1's 128 threads).
template <int N, class Under>
__device__ __forceinline__ void n_head(const BwThread& th, const unsigned char* Xs, const unsigned char* Ys,
                                       const unsigned char* Hin, const unsigned char* Dho, unsigned char* Ye,
                                       unsigned char* Xw, uint64_t desc_c_k, const ChunkScan<kQ>& S, BwReduce& red,
                                       float (&dca)[N / 2], float (&dba)[N / 2], Under&& under) {
  using TX = wg::CoreTile<kQ, kP>;
  using TN = wg::CoreTile<kQ, N>;
  using TH = wg::CoreTile<kP, N>;
  const int qq = th.qq;
  scale_rows_core<128, false>(Ye, Ys, S.eoff, th.lt);
  scale_rows_core<128, true>(Xw, Xs, S.wdt, th.lt);
  wg::fence_async_smem();
  mma::bar_sync(1, 128);  // warpgroup 1's copies complete
  const uint64_t desc_ye_k = wg::make_desc(wg::smem_addr(Ye), TX::kKMajorLbo, TX::kKMajorSbo);
  const uint64_t desc_xw_k = wg::make_desc(wg::smem_addr(Xw), TX::kKMajorLbo, TX::kKMajorSbo);
  const uint64_t desc_hin_k = wg::make_desc(wg::smem_addr(Hin), TH::kKMajorLbo, TH::kKMajorSbo);
  const uint64_t desc_hin_mn = wg::make_desc(wg::smem_addr(Hin), TH::kMnMajorLbo, TH::kMnMajorSbo);
  const uint64_t desc_dho_mn = wg::make_desc(wg::smem_addr(Dho), TH::kMnMajorLbo, TH::kMnMajorSbo);
  float yo[32];
  wg::fence();
#pragma unroll
  for (int kk = 0; kk < N / 16; ++kk)  // Yo = C Hinᵀ [t, p]
    wg::wgmma_ss_n64<0, 0>(yo, wg::desc_advance(desc_c_k, kk * TN::kKMajorStep),
                           wg::desc_advance(desc_hin_k, kk * TH::kKMajorStep), kk > 0);
  wg::commit();
#pragma unroll
  for (int kk = 0; kk < kP / 16; ++kk) {  // dC += (eoff dY) Hin, dB += (w dt X) dHout
    wgmma_ss<N, 0, 1>(dca, wg::desc_advance(desc_ye_k, kk * TX::kKMajorStep),
                      wg::desc_advance(desc_hin_mn, kk * TH::kMnMajorStep), true);
    wgmma_ss<N, 0, 1>(dba, wg::desc_advance(desc_xw_k, kk * TX::kKMajorStep),
                      wg::desc_advance(desc_dho_mn, kk * TH::kMnMajorStep), true);
  }
  wg::commit();
  under();
  {  // <dHout, Hin> (bf16 copies, fp32 sums)
    float gd = 0.f;
    constexpr int kPieces = kP * N / 8;
#pragma unroll 4
    for (int i = th.lt; i < kPieces; i += 128) {
      const int off = i * 16;  // the same offset in both tiles: the layout does not matter for the sum
      const uint4 u = *reinterpret_cast<const uint4*>(Hin + off);
      const uint4 v = *reinterpret_cast<const uint4*>(Dho + off);
      gd += mma::bf16_lo(u.x) * mma::bf16_lo(v.x) + mma::bf16_hi(u.x) * mma::bf16_hi(v.x);
      gd += mma::bf16_lo(u.y) * mma::bf16_lo(v.y) + mma::bf16_hi(u.y) * mma::bf16_hi(v.y);
      gd += mma::bf16_lo(u.z) * mma::bf16_lo(v.z) + mma::bf16_hi(u.z) * mma::bf16_hi(v.z);
      gd += mma::bf16_lo(u.w) * mma::bf16_lo(v.w) + mma::bf16_hi(u.w) * mma::bf16_hi(v.w);
    }
    gd = warp_sum(gd);
    if (th.lane == 0) red.gdot[th.w] = gd;
  }
  // orow_t = eoff_t dy_t . (C_t Hinᵀ)  (rows t = m_h)
  wg::wait<1>();
  wg::pin(yo);
  float orr[2];
  th.row_dots(orr, Ys, yo);
#pragma unroll
  for (int half = 0; half < 2; ++half)
    if (qq == 0) red.orow[th.m_h[half]] = orr[half] * S.eoff[th.m_h[half]];
  wg::wait<0>();
  wg::pin(dca);
  wg::pin(dba);
}

// Warpgroup 1, at the end (Ds complete): dB[s, n] += sum_t dGsum[t, s] C[t, n] (A = Ds, rows s,
// K = t), dC[t, n] += sum_s dGsum[t, s] B[s, n] (A = Ds transposed: rows t, K = s; B's rows
// permuted as Ds's); dB, dC stored.
template <int N>
__device__ __forceinline__ void n_final(const SsdArgs& a, const BwChunk& k, const BwThread& th, const unsigned char* Ds,
                                        const unsigned char* Bs, const unsigned char* Cs, float (&dca)[N / 2],
                                        float (&dba)[N / 2]) {
  using TX = wg::CoreTile<kQ, kP>;
  using TN = wg::CoreTile<kQ, N>;
  const uint64_t desc_ds_k = wg::make_desc(wg::smem_addr(Ds), TX::kKMajorLbo, TX::kKMajorSbo);
  const uint64_t desc_ds_mn = wg::make_desc(wg::smem_addr(Ds), TX::kMnMajorLbo, TX::kMnMajorSbo);
  const uint64_t desc_c_mn = wg::make_desc(wg::smem_addr(Cs), TN::kMnMajorLbo, TN::kMnMajorSbo);
  const uint64_t desc_b_mn = wg::make_desc(wg::smem_addr(Bs), TN::kMnMajorLbo, TN::kMnMajorSbo);
  wg::fence();
#pragma unroll
  for (int ks = 0; ks < 4; ++ks)
    wgmma_ss<N, 0, 1>(dba, wg::desc_advance(desc_ds_k, ks * TX::kKMajorStep),
                      wg::desc_advance(desc_c_mn, ks * TN::kMnMajorStep), true);
#pragma unroll
  for (int ks = 0; ks < 4; ++ks)
    wgmma_ss<N, 1, 1>(dca, wg::desc_advance(desc_ds_mn, ks * TX::kMnMajorStep),
                      wg::desc_advance(desc_b_mn, ks * TN::kMnMajorStep), true);
  wg::commit();
  wg::wait<0>();
  wg::pin(dba);
  wg::pin(dca);
  auto* dCg = a.dCm ? static_cast<bf16_t*>(a.dCm) + static_cast<int64_t>(k.g) * N : nullptr;
  auto* dBg = a.dBm ? static_cast<bf16_t*>(a.dBm) + static_cast<int64_t>(k.g) * N : nullptr;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int t = th.m_h[half], s = th.s_h[half];
#pragma unroll
    for (int j = 0; j < N / 8; ++j) {
      const int n = 8 * j + 2 * th.qq, i = 4 * j + 2 * half;
      if (dCg && t < k.len)
        *reinterpret_cast<uint32_t*>(dCg + (k.row0 + t) * a.ld_dC + n) = mma::pack_bf16x2(dca[i], dca[i + 1]);
      if (dBg && s < k.len)
        *reinterpret_cast<uint32_t*>(dBg + (k.row0 + s) * a.ld_dB + n) = mma::pack_bf16x2(dba[i], dba[i + 1]);
    }
  }
}

// ---- Variant 1: two warpgroups, one block barrier per head --------------------------------------

// kPipe (variants 3, 4): warpgroup 0 pipelined over two heads, 3 head buffers. kLoadsWg1 (variant
// 4): warpgroup 1 alone issues the per-head copies (warpgroup 0, the longer chain, issues none).
template <int N, bool kPipe, bool kLoadsWg1>
__global__ void __launch_bounds__(kBwThreads, 1) ssd_bwd_chunk_wg_kernel(const SsdArgs a) {
  constexpr int kBufs = kPipe ? 3 : 2, kAhead = kPipe ? 2 : 1;  // head buffers; loads run kAhead heads ahead
  using L = BwLayout<N, kBufs>;
  using TN = typename L::TN;
  using TH = typename L::TH;
  unsigned char* sm = mma::dynamic_smem();
  unsigned char* Bs = sm + L::bs;
  unsigned char* Cs = sm + L::cs;
  unsigned char* Ds = sm + L::dg;
  auto* raw = reinterpret_cast<float*>(sm + L::raw);
  auto* bnd = reinterpret_cast<int*>(sm + L::bnd);
  auto* scans = reinterpret_cast<ChunkScan<kQ>*>(sm + L::scan);
  auto* reds = reinterpret_cast<BwReduce*>(sm + L::red);
  const BwChunk k(a);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wgi = tid >> 7;
  const BwThread th(tid & 127);

  auto head_buf = [&](int hi) { return sm + L::heads + (hi % kBufs) * L::head; };
  // One head's x (rows permuted), dy, Hin and dHout into its buffer, by kT threads (this one idx).
  auto head_loads = [&](auto threads, int h, int hi, int idx) {
    constexpr int kT = decltype(threads)::value;
    constexpr int kX = kQ * kP / 8 / kT, kH = kP * N / 8 / kT;  // pieces per thread of each tile
    unsigned char* hb = head_buf(hi);
    load_core_tile_async<kQ, kP, kT, kX, true>(hb + L::h_x, static_cast<const bf16_t*>(a.x) + int64_t{h} * kP, a.ld_x,
                                               k.row0, k.len, idx);
    load_core_tile_async<kQ, kP, kT, kX>(hb + L::h_dy, static_cast<const bf16_t*>(a.dy) + int64_t{h} * kP, a.ld_dy,
                                         k.row0, k.len, idx);
    const int64_t st = ((static_cast<int64_t>(k.b) * a.H + h) * k.C + k.c) * kP * N;
    if (a.core_states) {
      load_contiguous_async<TH::kBytes, kT, 4>(hb + L::h_hin, a.ws_hin + st, idx);
      load_contiguous_async<TH::kBytes, kT, 4>(hb + L::h_dho, a.ws_dhout + st, idx);
    } else {
      load_core_tile_async<kP, N, kT, kH < 4 ? kH : 4>(hb + L::h_hin, a.ws_hin + st, N, 0, kP, idx);
      load_core_tile_async<kP, N, kT, kH < 4 ? kH : 4>(hb + L::h_dho, a.ws_dhout + st, N, 0, kP, idx);
    }
  };
  auto issue_head_loads = [&](int h, int hi) { head_loads(std::integral_constant<int, kBwThreads>{}, h, hi, tid); };
  // The loads inside the head loop: by warpgroup 1 alone (kLoadsWg1) or by every thread.
  auto issue_loop_loads = [&](int h, int hi) {
    if constexpr (kLoadsWg1) {
      if (wgi == 1) head_loads(std::integral_constant<int, 128>{}, h, hi, tid - 128);
    } else {
      issue_head_loads(h, hi);
    }
  };
  auto scan_head = [&](int hi) {
    chunk_scan_warp<kQ>(scans[hi % 3], raw + (hi & 1) * kQ, bnd, k.len, head_A(a, k.h_first + hi),
                        head_bias(a, k.h_first + hi), a.dt_min, a.dt_max);
  };
  auto epilogue = [&](int hi) { bw_head_epilogue(a, k, scans[hi % 3], reds[hi & 1], k.h_first + hi, lane); };

  load_core_tile_async<kQ, N, kBwThreads, 4, true>(Bs, static_cast<const bf16_t*>(a.Bm) + int64_t{k.g} * N, a.ld_B,
                                                   k.row0, k.len, tid);
  load_core_tile_async<kQ, N, kBwThreads, 4>(Cs, static_cast<const bf16_t*>(a.Cm) + int64_t{k.g} * N, a.ld_C, k.row0,
                                             k.len, tid);
  issue_head_loads(k.h_first, 0);
  if (kPipe && k.hpg > 1) issue_head_loads(k.h_first + 1, 1);
  mma::cp_async_commit();
  if (tid < kQ) {  // raw dt of heads 0 and 1 (head hi's in slot hi % 2)
    bnd[tid] = boundary_at(a, k.b, k.t0 + tid);
    raw[tid] = raw_dt_at(a, k.b, k.t0 + tid, k.h_first);
    if (k.hpg > 1) raw[kQ + tid] = raw_dt_at(a, k.b, k.t0 + tid, k.h_first + 1);
  }
  mma::cp_async_wait<0>();
  wg::fence_async_smem();
  __syncthreads();
  if (warp == kBwScanWarp) scan_head(0);

  const uint64_t desc_b_k = wg::make_desc(wg::smem_addr(Bs), TN::kKMajorLbo, TN::kKMajorSbo);
  const uint64_t desc_c_k = wg::make_desc(wg::smem_addr(Cs), TN::kKMajorLbo, TN::kKMajorSbo);

  // The start of head hi, all 256 threads: head hi's tiles in (and head hi+1's with kPipe); its scan
  // (run during head hi-1) and head hi-1's row partials visible; every read of head hi-1's buffers,
  // scan slot (hi+1) % 3 (head hi-2's) and raw slot hi % 2 (scanned during head hi-1) done. Then
  // the loads of head hi + kAhead, into head hi-1's buffer with kPipe (hi+1's without).
  auto head_top = [&](int hi) {
    const int h = k.h_first + hi;
    float next_raw = 0.f;
    if (hi + 2 < k.hpg && tid < kQ) next_raw = raw_dt_at(a, k.b, k.t0 + tid, h + 2);
    mma::cp_async_wait<0>();
    wg::fence_async_smem();  // the copies are read by wgmma (async proxy)
    __syncthreads();
    if (hi + kAhead < k.hpg) issue_loop_loads(h + kAhead, hi + kAhead);
    mma::cp_async_commit();
    if (hi + 2 < k.hpg && tid < kQ) raw[(hi & 1) * kQ + tid] = next_raw;
  };

  // Each warpgroup runs its own head loop (so that neither keeps the other's accumulators live);
  // both pass the same hpg + 1 block barriers.
  if (wgi == 0) {
    float gt[32], dgs[32];
    q_gt<N>(gt, desc_b_k, desc_c_k);
#pragma unroll
    for (int i = 0; i < 32; ++i) dgs[i] = 0.f;
    if constexpr (!kPipe) {
      for (int hi = 0; hi < k.hpg; ++hi) {
        head_top(hi);
        const unsigned char* hb = head_buf(hi);
        q_head<N>(a, k, th, hb + L::h_x, hb + L::h_dy, hb + L::h_dho, desc_b_k, scans[hi % 3], reds[hi & 1], gt,
                  dgs, k.h_first + hi);
      }
    } else {
      // Pipelined (variant 3): head hi+1's dXY is issued right after head hi's dxdt, so it runs on
      // the tensor cores under head hi's sums, v_s and dx; head hi's BdH under its own Mᵀ / dG.
      // Commit order per head: BdH(hi), dxdt(hi), dXY(hi+1) (a spare one after the last head).
      // Every group completes within its head: no accumulator in flight crosses the loop edge or
      // a branch (either makes ptxas serialise every wgmma: C7514 / C7520).
      float dxy[32];
      q_issue_dxy(dxy, head_buf(0) + L::h_x, head_buf(0) + L::h_dy);  // head 0's tiles landed (prologue)
      wg::wait<0>();
      wg::pin(dxy);
      for (int hi = 0; hi < k.hpg; ++hi) {
        head_top(hi);  // head hi+1's tiles in
        const unsigned char* hb = head_buf(hi);
        const ChunkScan<kQ>& S = scans[hi % 3];
        BwReduce& red = reds[hi & 1];
        float bdh[32], dxa[32], zr[2], zc[8][2];
        uint32_t mf[4][4];
        q_issue_bdh<N>(bdh, desc_b_k, hb + L::h_dho);
        q_mask(th, S, red, gt, dgs, dxy, mf, zr, zc);
        q_issue_dxdt(dxa, mf, hb + L::h_dy);
        const unsigned char* nb = head_buf(hi + 1 < k.hpg ? hi + 1 : hi);  // after the last head: spare
        q_issue_dxy(dxy, nb + L::h_x, nb + L::h_dy);
        q_zsums(th, red, zr, zc);
        wg::wait<2>();
        wg::pin(bdh);
        q_vrow(th, S, red, hb + L::h_x, bdh);
        wg::wait<1>();
        wg::pin(dxa);
        q_dx(a, k, th, S, red, hb + L::h_x, hb + L::h_dy, bdh, dxa, k.h_first + hi);
        wg::wait<0>();
        wg::pin(dxy);
      }
    }
    q_store_dgs(Ds, th, dgs);
    __syncthreads();  // Ds complete; the last head's row partials in
    return;
  }

  float dca[N / 2], dba[N / 2];
#pragma unroll
  for (int i = 0; i < N / 2; ++i) dca[i] = dba[i] = 0.f;
  for (int hi = 0; hi < k.hpg; ++hi) {
    head_top(hi);
    const unsigned char* hb = head_buf(hi);
    // Under the products: the next head's scan (its raw dt landed before this head's barrier) and
    // the previous head's epilogue.
    n_head<N>(th, hb + L::h_x, hb + L::h_dy, hb + L::h_hin, hb + L::h_dho, sm + L::ye, sm + L::xw, desc_c_k,
              scans[hi % 3], reds[hi & 1], dca, dba, [&] {
                if (warp == kBwScanWarp && hi + 1 < k.hpg) scan_head(hi + 1);
                if (warp == kBwEpilogueWarp && hi > 0) epilogue(hi - 1);
              });
  }
  __syncthreads();  // Ds complete; the last head's row partials in
  if (warp == kBwEpilogueWarp) epilogue(k.hpg - 1);
  n_final<N>(a, k, th, Ds, Bs, Cs, dca, dba);
}

// ---- Variant 2: warp-specialised, a producer warpgroup and an mbarrier ring ---------------------
//
// Correct on an H100 (SsdCuda.BackwardChunkKernels) but not faster than variant 1: fwd + bwd 64K
// 12.80 against 12.71 ms, 8 x 8K 12.56 against 12.48 (run11-2026-12-07/d-h100-defaults). Moving
// the copies, scans and epilogues off the consumers and the block barrier out did not shorten a
// head; the consumers' own per-head chains (NOTES-ssd round 12) set the time. Opt-in.
//
// Warpgroups 0 and 1 as in variant 1; warpgroup 2 the producer: its warp 0 copies each head's x
// (rows permuted) and dy, warp 1 B (first head) and Hin, warp 2 C (first head) and dHout, into a
// ring of kBwStages head stages; warp 3 loads each head's raw dt, runs its scan into the stage,
// and runs each head's d(dt) epilogue once both consumers have written its row partials. So no
// consumer thread issues a copy, scans or runs an epilogue, and the consumers never meet at a
// block barrier: full[s] (count 128: the copying lanes one head late, once their copies landed and
// were fenced for the async proxy; the scan warp once the scan is written), empty[s] (count 256:
// every consumer thread after its last read of the stage), rfull[i] (256: head i's row partials
// written, slot i % 2) and rempty[i] (32: the epilogue warp done with slot i % 2).
constexpr int kBwStages = 3, kWsBwThreads = 384, kBwProducerRegs = 72, kBwConsumerRegs = 216;

template <int N>
struct WsBwLayout {
  using TX = wg::CoreTile<kQ, kP>;
  using TN = wg::CoreTile<kQ, N>;
  using TH = wg::CoreTile<kP, N>;
  static constexpr size_t st_x = 0, st_dy = st_x + TX::kBytes, st_hin = st_dy + TX::kBytes, st_dho = st_hin + TH::kBytes;
  static constexpr size_t st_scan = st_dho + TH::kBytes;
  static constexpr size_t stage = (st_scan + sizeof(ChunkScan<kQ>) + 127) / 128 * 128;
  static constexpr size_t bs = kBwStages * stage;
  static constexpr size_t cs = bs + TN::kBytes;
  static constexpr size_t dg = cs + TN::kBytes;
  static constexpr size_t ye = dg + TX::kBytes;
  static constexpr size_t xw = ye + TX::kBytes;
  static constexpr size_t raw = xw + TX::kBytes;  // the scan warp's raw dt and boundary flags
  static constexpr size_t bnd = raw + kQ * 4;
  static constexpr size_t red = bnd + kQ * 4;     // head i's row partials at slot i % 2
  static constexpr size_t bars = red + 2 * sizeof(BwReduce);  // full[3], empty[3], rfull[2], rempty[2]
  static constexpr size_t total = bars + (2 * kBwStages + 4) * 8;
  static_assert(bars % 8 == 0 && total <= 227 * 1024, "chunk kernel shared memory");
};

template <int N>
__global__ void __launch_bounds__(kWsBwThreads, 1) ssd_bwd_chunk_ws_kernel(const SsdArgs a) {
  using L = WsBwLayout<N>;
  using TN = typename L::TN;
  using TH = typename L::TH;
  unsigned char* sm = mma::dynamic_smem();
  auto* full = reinterpret_cast<uint64_t*>(sm + L::bars);
  uint64_t* empty = full + kBwStages;
  uint64_t* rfull = empty + kBwStages;
  uint64_t* rempty = rfull + 2;
  auto* reds = reinterpret_cast<BwReduce*>(sm + L::red);
  const BwChunk k(a);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  auto stage_of = [&](int i) { return sm + (i % kBwStages) * L::stage; };
  auto scan_of = [&](int i) { return reinterpret_cast<ChunkScan<kQ>*>(stage_of(i) + L::st_scan); };
  if (tid == 0) {
    for (int s = 0; s < kBwStages; ++s) {
      mma::mbar_init(&full[s], 128);
      mma::mbar_init(&empty[s], 256);
    }
    for (int r = 0; r < 2; ++r) {
      mma::mbar_init(&rfull[r], 256);
      mma::mbar_init(&rempty[r], 32);
    }
  }
  __syncthreads();

  if (warp >= 8) {  // the producer warpgroup
    wg::setmaxnreg_dec<kBwProducerRegs>();
    const int pw = warp - 8;
    auto wait_empty = [&](int i) {
      if (i >= kBwStages) mma::mbar_wait(&empty[i % kBwStages], static_cast<unsigned>((i / kBwStages - 1) & 1));
    };
    if (pw == 3) {  // scans one to three heads ahead, epilogues one behind
      auto* rawf = reinterpret_cast<float*>(sm + L::raw);
      auto* bndf = reinterpret_cast<int*>(sm + L::bnd);
#pragma unroll
      for (int e = 0; e < 2; ++e) bndf[lane + 32 * e] = boundary_at(a, k.b, k.t0 + lane + 32 * e);
      float dtv[2];
      auto fetch = [&](int i) {
#pragma unroll
        for (int e = 0; e < 2; ++e) dtv[e] = raw_dt_at(a, k.b, k.t0 + lane + 32 * e, k.h_first + i);
      };
      auto epilogue = [&](int i) {
        mma::mbar_wait(&rfull[i & 1], static_cast<unsigned>((i / 2) & 1));
        bw_head_epilogue(a, k, *scan_of(i), reds[i & 1], k.h_first + i, lane);
        mma::mbar_arrive(&rempty[i & 1]);
      };
      fetch(0);
      for (int i = 0; i < k.hpg; ++i) {
        wait_empty(i);
        __syncwarp();  // the previous scan finished reading rawf
#pragma unroll
        for (int e = 0; e < 2; ++e) rawf[lane + 32 * e] = dtv[e];
        __syncwarp();
        if (i + 1 < k.hpg) fetch(i + 1);
        const int h = k.h_first + i;
        chunk_scan_warp<kQ>(*scan_of(i), rawf, bndf, k.len, head_A(a, h), head_bias(a, h), a.dt_min, a.dt_max);
        mma::mbar_arrive(&full[i % kBwStages]);  // releases the scan's writes
        if (i >= 1) epilogue(i - 1);
      }
      epilogue(k.hpg - 1);
      return;
    }
    // Copy warps: each hands a stage over one head late, once its copies landed (waited and fenced
    // for the async proxy), so the copies fly while it issues the next head's.
    for (int i = 0; i < k.hpg; ++i) {
      const int h = k.h_first + i;
      unsigned char* st = stage_of(i);
      wait_empty(i);
      const int64_t sto = ((static_cast<int64_t>(k.b) * a.H + h) * k.C + k.c) * kP * N;
      if (pw == 0) {
        load_core_tile_warp<kQ, kP, true>(st + L::st_x, static_cast<const bf16_t*>(a.x) + int64_t{h} * kP,
                                                  a.ld_x, k.row0, k.len, lane);
        load_core_tile_warp<kQ, kP>(st + L::st_dy, static_cast<const bf16_t*>(a.dy) + int64_t{h} * kP,
                                            a.ld_dy, k.row0, k.len, lane);
      } else if (pw == 1) {
        if (i == 0)
          load_core_tile_warp<kQ, N, true>(sm + L::bs, static_cast<const bf16_t*>(a.Bm) + int64_t{k.g} * N,
                                                   a.ld_B, k.row0, k.len, lane);
        if (a.core_states)
          load_contiguous_async<TH::kBytes, 32, 4>(st + L::st_hin, a.ws_hin + sto, lane);
        else
          load_core_tile_warp<kP, N>(st + L::st_hin, a.ws_hin + sto, N, 0, kP, lane);
      } else {
        if (i == 0)
          load_core_tile_warp<kQ, N>(sm + L::cs, static_cast<const bf16_t*>(a.Cm) + int64_t{k.g} * N, a.ld_C,
                                             k.row0, k.len, lane);
        if (a.core_states)
          load_contiguous_async<TH::kBytes, 32, 4>(st + L::st_dho, a.ws_dhout + sto, lane);
        else
          load_core_tile_warp<kP, N>(st + L::st_dho, a.ws_dhout + sto, N, 0, kP, lane);
      }
      mma::cp_async_commit();
      if (i >= 1) arrive_when_landed<1>(&full[(i - 1) % kBwStages]);
    }
    arrive_when_landed<0>(&full[(k.hpg - 1) % kBwStages]);
    return;  // no copy in flight
  }

  wg::setmaxnreg_inc<kBwConsumerRegs>();
  const int wgi = warp / 4;
  const BwThread th(tid & 127);
  unsigned char* Bs = sm + L::bs;
  unsigned char* Cs = sm + L::cs;
  unsigned char* Ds = sm + L::dg;
  const uint64_t desc_b_k = wg::make_desc(wg::smem_addr(Bs), TN::kKMajorLbo, TN::kKMajorSbo);
  const uint64_t desc_c_k = wg::make_desc(wg::smem_addr(Cs), TN::kKMajorLbo, TN::kKMajorSbo);
  auto wait_full = [&](int i) { mma::mbar_wait(&full[i % kBwStages], static_cast<unsigned>((i / kBwStages) & 1)); };
  // Slot i % 2 free: the epilogue of head i - 2 done. Implied by full(i) as the scan warp orders
  // its work (head i - 2's epilogue before head i's scan); kept so that the hand-over does not
  // rest on that order.
  auto wait_red = [&](int i) {
    if (i >= 2) mma::mbar_wait(&rempty[i & 1], static_cast<unsigned>((i / 2 - 1) & 1));
  };
  auto head_done = [&](int i) {  // this thread's reads of the stage and its row partials done
    mma::mbar_arrive(&empty[i % kBwStages]);
    mma::mbar_arrive(&rfull[i & 1]);
  };
  if (wgi == 0) {
    float gt[32], dgs[32];
    wait_full(0);  // B and C came with the first head's stage
    q_gt<N>(gt, desc_b_k, desc_c_k);
#pragma unroll
    for (int i = 0; i < 32; ++i) dgs[i] = 0.f;
    for (int i = 0; i < k.hpg; ++i) {
      wait_full(i);
      wait_red(i);
      unsigned char* st = stage_of(i);
      q_head<N>(a, k, th, st + L::st_x, st + L::st_dy, st + L::st_dho, desc_b_k, *scan_of(i), reds[i & 1], gt, dgs,
                k.h_first + i);
      head_done(i);
    }
    q_store_dgs(Ds, th, dgs);
    mma::bar_sync(2, 256);  // Ds complete, for warpgroup 1
    return;
  }
  float dca[N / 2], dba[N / 2];
#pragma unroll
  for (int i = 0; i < N / 2; ++i) dca[i] = dba[i] = 0.f;
  for (int i = 0; i < k.hpg; ++i) {
    wait_full(i);
    wait_red(i);
    mma::bar_sync(1, 128);  // Ye, Xw free: the previous head's products on them completed in every warp
    unsigned char* st = stage_of(i);
    n_head<N>(th, st + L::st_x, st + L::st_dy, st + L::st_hin, st + L::st_dho, sm + L::ye, sm + L::xw, desc_c_k,
              *scan_of(i), reds[i & 1], dca, dba, [] {});
    head_done(i);
  }
  mma::bar_sync(2, 256);  // Ds complete
  n_final<N>(a, k, th, Ds, Bs, Cs, dca, dba);
}

// Launches kKernel with `bytes` of dynamic shared memory, raising its limit on the first call.
template <auto kKernel>
void launch_with_smem(const dim3& grid, int threads, size_t bytes, const SsdArgs& a) {
  static const bool attr = [&] {
    HLM_CUDA_CHECK(cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    return true;
  }();
  (void)attr;
  HLM_LAUNCH(kKernel, grid, dim3(threads), bytes, a);
}

}  // namespace

template <int N>
void launch_bwd_chunk_wg(const SsdArgs& a) {
  const dim3 grid(static_cast<unsigned>(a.nchunks), static_cast<unsigned>(a.G), static_cast<unsigned>(a.B));
  constexpr size_t kBytes2 = BwLayout<N, 2>::total, kBytes3 = BwLayout<N, 3>::total;
  switch (a.bwd_variant) {
    case 2: launch_with_smem<ssd_bwd_chunk_ws_kernel<N>>(grid, kWsBwThreads, WsBwLayout<N>::total, a); break;
    case 3: launch_with_smem<ssd_bwd_chunk_wg_kernel<N, true, false>>(grid, kBwThreads, kBytes3, a); break;
    case 4: launch_with_smem<ssd_bwd_chunk_wg_kernel<N, true, true>>(grid, kBwThreads, kBytes3, a); break;
    default: launch_with_smem<ssd_bwd_chunk_wg_kernel<N, false, false>>(grid, kBwThreads, kBytes2, a);
  }
  HLM_CUDA_CHECK_LAUNCH();
}

template void launch_bwd_chunk_wg<128>(const SsdArgs&);
template void launch_bwd_chunk_wg<64>(const SsdArgs&);

}  // namespace hlm::cuda::ssd
