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
// Per head one block barrier: the head's tiles (prefetched during the previous head) in, the
// previous head's buffers free. The default on sm_90 (backward variant 1): ~5 % faster than
// ssd_bwd_chunk_kernel in the SSD backward on an H100, and like it latency-bound (ncu, 4K: ~11K warp
// instructions per head-chunk at ~0.9 IPC per SM, one block of 8 warps per SM; bench/cuda/NOTES-ssd.md
// round 12 has the profile and what would cut it).
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

template <int N>
struct BwLayout {
  using TX = wg::CoreTile<kQ, kP>;  // x (rows permuted), dy [t][p]; dGsum [s (permuted)][t]
  using TN = wg::CoreTile<kQ, N>;   // B (rows permuted), C [t][n]
  using TH = wg::CoreTile<kP, N>;   // Hin, dHout [p][n]
  static constexpr size_t bs = 0;
  static constexpr size_t cs = bs + TN::kBytes;
  static constexpr size_t heads = cs + TN::kBytes;  // two head buffers: x, dy, Hin, dHout
  static constexpr size_t h_x = 0, h_dy = h_x + TX::kBytes, h_hin = h_dy + TX::kBytes, h_dho = h_hin + TH::kBytes;
  static constexpr size_t head = h_dho + TH::kBytes;
  static constexpr size_t dg = heads + 2 * head;  // dGsum, bf16
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

// dst[r][:] = bf16(src[r][:] coef[token of row r]) for a CoreTile<Q, P> (rows permuted by
// token_of_row() if kPermuted), by the 128 threads of a warpgroup (this one idx), 16 bytes per
// thread and step; src and dst share the layout. The forward's x w dt rounding.
__device__ __forceinline__ void scale_rows_core(unsigned char* dst, const unsigned char* src, const float* coef,
                                                bool permuted, int idx) {
  using TX = wg::CoreTile<kQ, kP>;
  constexpr int kSteps = kQ * kP / 8 / 128;
  uint4 u[kSteps];
#pragma unroll
  for (int k = 0; k < kSteps; ++k) u[k] = *reinterpret_cast<const uint4*>(src + (idx + k * 128) * 16);
#pragma unroll
  for (int k = 0; k < kSteps; ++k) {
    const int off = (idx + k * 128) * 16;
    // byte offset -> row: (r / 8) row groups of kP * 16 bytes, then (r % 8) 16-byte rows in a core matrix
    const int r = off / TX::kRowGroup * 8 + (off % 128) / 16;
    const float sc = coef[permuted ? token_of_row(r) : r];
    uint32_t v[4] = {u[k].x, u[k].y, u[k].z, u[k].w};
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = mma::pack_bf16x2(mma::bf16_lo(v[e]) * sc, mma::bf16_hi(v[e]) * sc);
    *reinterpret_cast<uint4*>(dst + off) = make_uint4(v[0], v[1], v[2], v[3]);
  }
}

template <int N>
__global__ void __launch_bounds__(kBwThreads, 1) ssd_bwd_chunk_wg_kernel(const SsdArgs a) {
  using L = BwLayout<N>;
  using TX = typename L::TX;
  using TN = typename L::TN;
  using TH = typename L::TH;
  unsigned char* sm = mma::dynamic_smem();
  unsigned char* Bs = sm + L::bs;
  unsigned char* Cs = sm + L::cs;
  unsigned char* Ds = sm + L::dg;
  unsigned char* Ye = sm + L::ye;
  unsigned char* Xw = sm + L::xw;
  auto* raw = reinterpret_cast<float*>(sm + L::raw);
  auto* bnd = reinterpret_cast<int*>(sm + L::bnd);
  auto* scans = reinterpret_cast<ChunkScan<kQ>*>(sm + L::scan);
  auto* reds = reinterpret_cast<BwReduce*>(sm + L::red);

  const int c = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
  const int hpg = a.H / a.G;
  const int h_first = g * hpg;
  const int T = a.T, C = a.nchunks;
  const int t0 = c * kQ;
  const int len = min(kQ, T - t0);
  const int64_t row0 = static_cast<int64_t>(b) * T + t0;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wgi = tid >> 7, lt = tid & 127, w = lt >> 5, gq = lane >> 2, qq = lane & 3;
  // This thread's two accumulator rows (16 w + gq, + 8): tokens (permuted operands) and plain rows.
  const int m_h[2] = {16 * w + gq, 16 * w + gq + 8};
  const int s_h[2] = {token_of_row(m_h[0]), token_of_row(m_h[1])};

  auto head_buf = [&](int hi) { return sm + L::heads + (hi & 1) * L::head; };
  auto issue_head_loads = [&](int h, int hi) {
    unsigned char* hb = head_buf(hi);
    load_core_tile_async<kQ, kP, kBwThreads, 2, true>(hb + L::h_x, static_cast<const bf16_t*>(a.x) + int64_t{h} * kP,
                                                       a.ld_x, row0, len, tid);
    load_core_tile_async<kQ, kP, kBwThreads, 2>(hb + L::h_dy, static_cast<const bf16_t*>(a.dy) + int64_t{h} * kP,
                                                 a.ld_dy, row0, len, tid);
    const int64_t st = ((static_cast<int64_t>(b) * a.H + h) * C + c) * kP * N;
    load_core_tile_async<kP, N, kBwThreads, 4>(hb + L::h_hin, a.ws_hin + st, N, 0, kP, tid);
    load_core_tile_async<kP, N, kBwThreads, 4>(hb + L::h_dho, a.ws_dhout + st, N, 0, kP, tid);
  };
  auto head_A = [&](int h) { return -expf(load_any(a.A_log, a.A_type, h)); };
  auto head_bias = [&](int h) { return a.dt_bias ? load_any(a.dt_bias, a.bias_type, h) : 0.f; };
  auto scan_head = [&](int hi) {
    chunk_scan_warp<kQ>(scans[hi % 3], raw + (hi & 1) * kQ, bnd, len, head_A(h_first + hi), head_bias(h_first + hi),
                        a.dt_min, a.dt_max);
  };

  load_core_tile_async<kQ, N, kBwThreads, 4, true>(Bs, static_cast<const bf16_t*>(a.Bm) + int64_t{g} * N, a.ld_B, row0,
                                                   len, tid);
  load_core_tile_async<kQ, N, kBwThreads, 4>(Cs, static_cast<const bf16_t*>(a.Cm) + int64_t{g} * N, a.ld_C, row0, len,
                                             tid);
  issue_head_loads(h_first, 0);
  mma::cp_async_commit();
  if (tid < kQ) {  // raw dt of heads 0 and 1 (head hi's in slot hi % 2)
    bnd[tid] = boundary_at(a, b, t0 + tid);
    raw[tid] = raw_dt_at(a, b, t0 + tid, h_first);
    if (hpg > 1) raw[kQ + tid] = raw_dt_at(a, b, t0 + tid, h_first + 1);
  }
  mma::cp_async_wait<0>();
  wg::fence_async_smem();
  __syncthreads();
  if (warp == kBwScanWarp) scan_head(0);

  const uint64_t desc_b_k = wg::make_desc(wg::smem_addr(Bs), TN::kKMajorLbo, TN::kKMajorSbo);
  const uint64_t desc_c_k = wg::make_desc(wg::smem_addr(Cs), TN::kKMajorLbo, TN::kKMajorSbo);
  const uint64_t desc_ye_k = wg::make_desc(wg::smem_addr(Ye), TX::kKMajorLbo, TX::kKMajorSbo);
  const uint64_t desc_xw_k = wg::make_desc(wg::smem_addr(Xw), TX::kKMajorLbo, TX::kKMajorSbo);

  // dcum -> da -> d(dt) of head hi and its partial sums of dA, dD, ddt_bias (one warp), from the
  // head's row partials; run during the next head's products (after the loop for the last).
  auto head_epilogue = [&](int hi) {
    const int h = h_first + hi;
    const ChunkScan<kQ>& sc = scans[hi % 3];
    const BwReduce& red = reds[hi & 1];
    const float A = head_A(h);
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
      const float graw = (red.xrow[t] + A * da) * sc.dsp[t];
      if (a.ddt && t < len) store_any(a.ddt, a.ddt_type, (row0 + t) * a.ld_ddt + h, graw);
      pA += da * sc.dt[t];
      pB += graw;
      pD += red.ddiag[t];
    }
    pA = warp_sum(pA);
    pB = warp_sum(pB);
    pD = warp_sum(pD);
    if (lane == 0 && a.ws_part) {
      float* part = a.ws_part + ((static_cast<int64_t>(b) * C + c) * a.H + h) * 3;
      part[0] = pA;
      part[1] = pD;
      part[2] = pB;
    }
  };

  // The start of head hi, all 256 threads: head hi's tiles in; its scan (run during head hi-1) and
  // head hi-1's row partials visible; every read of head hi-1's buffers, scan slot (hi+1) % 3
  // (head hi-2's) and raw slot hi % 2 (scanned during head hi-1) done. Then head hi+1's loads.
  auto head_top = [&](int hi) {
    const int h = h_first + hi;
    float next_raw = 0.f;
    if (hi + 2 < hpg && tid < kQ) next_raw = raw_dt_at(a, b, t0 + tid, h + 2);
    mma::cp_async_wait<0>();
    wg::fence_async_smem();  // the copies are read by wgmma (async proxy)
    __syncthreads();
    if (hi + 1 < hpg) issue_head_loads(h + 1, hi + 1);
    mma::cp_async_commit();
    if (hi + 2 < hpg && tid < kQ) raw[(hi & 1) * kQ + tid] = next_raw;
  };

  // Each warpgroup runs its own head loop (so that neither keeps the other's accumulators live);
  // both pass the same hpg + 1 block barriers.
  if (wgi == 0) {
    // Gᵀ[s, t] = B_s . C_t for all heads, and the head sum of dG.
    float gt[32], dgs[32];
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < N / 16; ++kk)
      wg::wgmma_ss_n64<0, 0>(gt, wg::desc_advance(desc_b_k, kk * TN::kKMajorStep),
                             wg::desc_advance(desc_c_k, kk * TN::kKMajorStep), kk > 0);
    wg::commit();
#pragma unroll
    for (int i = 0; i < 32; ++i) dgs[i] = 0.f;
    wg::wait<0>();
    wg::pin(gt);
    for (int hi = 0; hi < hpg; ++hi) {
      head_top(hi);
      const int h = h_first + hi;
      const unsigned char* hb = head_buf(hi);
      const unsigned char* Xs = hb + L::h_x;
      const unsigned char* Ys = hb + L::h_dy;
      const ChunkScan<kQ>& S = scans[hi % 3];
      BwReduce& red = reds[hi & 1];
      const uint64_t desc_x_k = wg::make_desc(wg::smem_addr(Xs), TX::kKMajorLbo, TX::kKMajorSbo);
      const uint64_t desc_dy_k = wg::make_desc(wg::smem_addr(Ys), TX::kKMajorLbo, TX::kKMajorSbo);
      const uint64_t desc_dho_k = wg::make_desc(wg::smem_addr(hb + L::h_dho), TH::kKMajorLbo, TH::kKMajorSbo);
      float dxy[32], bdh[32];
      wg::fence();
#pragma unroll
      for (int kk = 0; kk < kP / 16; ++kk)
        wg::wgmma_ss_n64<0, 0>(dxy, wg::desc_advance(desc_x_k, kk * TX::kKMajorStep),
                               wg::desc_advance(desc_dy_k, kk * TX::kKMajorStep), kk > 0);
      wg::commit();
#pragma unroll
      for (int kk = 0; kk < N / 16; ++kk)
        wg::wgmma_ss_n64<0, 0>(bdh, wg::desc_advance(desc_b_k, kk * TN::kKMajorStep),
                               wg::desc_advance(desc_dho_k, kk * TH::kKMajorStep), kk > 0);
      wg::commit();

      // Mᵀ[s, t] = G[t, s] L[t, s] (the A fragments of dxdt: k step ks takes columns 16 ks ..),
      // dG[t, s] = dXY[s, t] dt_s L[t, s], L[t, s] = exp(cum_t - cum_s) for t >= s in s's document.
      // Column block j of a half is zero where all its t are below the half's tokens: j < w for
      // the early half (tokens 8 w ..), j < 7 - w for the late one.
      wg::wait<1>();
      wg::pin(dxy);
      uint32_t mf[4][4];
      float zr[2] = {0.f, 0.f}, zc[8][2];
      const float cum_s[2] = {S.cum[s_h[0]], S.cum[s_h[1]]};
      const float dt_s[2] = {S.dt[s_h[0]], S.dt[s_h[1]]};
      const int seg_s[2] = {S.seg[s_h[0]], S.seg[s_h[1]]};
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        zc[j][0] = zc[j][1] = 0.f;
        const int t = 8 * j + 2 * qq;
        const float2 ct = *reinterpret_cast<const float2*>(S.cum + t);
        const int2 sg = *reinterpret_cast<const int2*>(S.seg + t);
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int s = s_h[half];
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
      float dxa[32];
      {
        const uint64_t desc_dy_mn = wg::make_desc(wg::smem_addr(Ys), TX::kMnMajorLbo, TX::kMnMajorSbo);
        wg::fence();
#pragma unroll
        for (int ks = 0; ks < 4; ++ks)
          wg::wgmma_rs_n64<1>(dxa, mf[ks], wg::desc_advance(desc_dy_mn, ks * TX::kMnMajorStep), ks > 0);
        wg::commit();
      }
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const float v = quad_sum(zr[half]);
        if (qq == 0) red.zs[s_h[half]] = v;
      }
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float v = column_sum(zc[j][e]);
          if (gq == 0) red.zt[w][8 * j + 2 * qq + e] = v;
        }
      // v_s = w_s dt_s x_s . BdH_s
      wg::wait<1>();
      wg::pin(bdh);
      float vr[2] = {0.f, 0.f};
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const uint32_t xv = *reinterpret_cast<const uint32_t*>(Xs + TX::offset(m_h[half], 8 * j + 2 * qq));
          vr[half] += mma::bf16_lo(xv) * bdh[4 * j + 2 * half] + mma::bf16_hi(xv) * bdh[4 * j + 2 * half + 1];
        }
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const float v = quad_sum(vr[half]);
        if (qq == 0) red.vrow[s_h[half]] = v * S.wdt[s_h[half]];
      }
      // dxdt = Mᵀ dY + w BdH; dx = D dy + dt dxdt; x . dxdt
      wg::wait<0>();
      wg::pin(dxa);
      const float Dh = a.D ? load_any(a.D, a.D_type, h) : 0.f;
      auto* dxg = a.dx ? static_cast<bf16_t*>(a.dx) + static_cast<int64_t>(h) * kP : nullptr;
      float xr[2] = {0.f, 0.f};
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int s = s_h[half];
        const float ws = S.w[s], dts = S.dt[s];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const int p = 8 * j + 2 * qq, i = 4 * j + 2 * half;
          const float d0 = dxa[i] + ws * bdh[i];
          const float d1 = dxa[i + 1] + ws * bdh[i + 1];
          const uint32_t xv = *reinterpret_cast<const uint32_t*>(Xs + TX::offset(m_h[half], p));
          xr[half] += mma::bf16_lo(xv) * d0 + mma::bf16_hi(xv) * d1;
          if (dxg && s < len) {
            const uint32_t yv = *reinterpret_cast<const uint32_t*>(Ys + TX::offset(s, p));
            *reinterpret_cast<uint32_t*>(dxg + (row0 + s) * a.ld_dx + p) =
                mma::pack_bf16x2(Dh * mma::bf16_lo(yv) + dts * d0, Dh * mma::bf16_hi(yv) + dts * d1);
          }
        }
      }
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const float v = quad_sum(xr[half]);
        if (qq == 0) red.xrow[s_h[half]] = v;
      }
    }
    // dGsum (bf16) into Ds for warpgroup 1's products.
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half)
        *reinterpret_cast<uint32_t*>(Ds + TX::offset(m_h[half], 8 * j + 2 * qq)) =
            mma::pack_bf16x2(dgs[4 * j + 2 * half], dgs[4 * j + 2 * half + 1]);
    wg::fence_async_smem();
    __syncthreads();  // Ds complete; the last head's row partials in
    return;
  }

  // Warpgroup 1: dC [t, n] and dB [s, n] over all heads.
  float dca[N / 2], dba[N / 2];
#pragma unroll
  for (int i = 0; i < N / 2; ++i) dca[i] = dba[i] = 0.f;
  for (int hi = 0; hi < hpg; ++hi) {
    head_top(hi);
    const bool has_next = hi + 1 < hpg;
    const unsigned char* hb = head_buf(hi);
    const unsigned char* Xs = hb + L::h_x;
    const unsigned char* Ys = hb + L::h_dy;
    const ChunkScan<kQ>& S = scans[hi % 3];
    BwReduce& red = reds[hi & 1];
    const unsigned char* Hin = hb + L::h_hin;
    const unsigned char* Dho = hb + L::h_dho;
    // eoff dy and w dt x (x's rows permuted), bf16, as the A operands that add this head's
    // terms straight into the dC and dB accumulators.
    scale_rows_core(Ye, Ys, S.eoff, false, lt);
    scale_rows_core(Xw, Xs, S.wdt, true, lt);
    wg::fence_async_smem();
    mma::bar_sync(1, 128);  // warpgroup 1's copies complete
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
    // While they run: the next head's scan (its raw dt landed before this head's barrier), the
    // previous head's epilogue, <dHout, Hin> (bf16 copies, fp32 sums).
    if (warp == kBwScanWarp && has_next) scan_head(hi + 1);
    if (warp == kBwEpilogueWarp && hi > 0) head_epilogue(hi - 1);
    {
      float gd = 0.f;
      constexpr int kPieces = kP * N / 8;
#pragma unroll 4
      for (int i = lt; i < kPieces; i += 128) {
        const int off = i * 16;  // the same offset in both tiles: the layout does not matter for the sum
        const uint4 u = *reinterpret_cast<const uint4*>(Hin + off);
        const uint4 v = *reinterpret_cast<const uint4*>(Dho + off);
        gd += mma::bf16_lo(u.x) * mma::bf16_lo(v.x) + mma::bf16_hi(u.x) * mma::bf16_hi(v.x);
        gd += mma::bf16_lo(u.y) * mma::bf16_lo(v.y) + mma::bf16_hi(u.y) * mma::bf16_hi(v.y);
        gd += mma::bf16_lo(u.z) * mma::bf16_lo(v.z) + mma::bf16_hi(u.z) * mma::bf16_hi(v.z);
        gd += mma::bf16_lo(u.w) * mma::bf16_lo(v.w) + mma::bf16_hi(u.w) * mma::bf16_hi(v.w);
      }
      gd = warp_sum(gd);
      if (lane == 0) red.gdot[w] = gd;
    }
    // orow_t = eoff_t dy_t . (C_t Hinᵀ)  (rows t = m_h)
    wg::wait<1>();
    wg::pin(yo);
    float orr[2] = {0.f, 0.f};
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const uint32_t yv = *reinterpret_cast<const uint32_t*>(Ys + TX::offset(m_h[half], 8 * j + 2 * qq));
        orr[half] += mma::bf16_lo(yv) * yo[4 * j + 2 * half] + mma::bf16_hi(yv) * yo[4 * j + 2 * half + 1];
      }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float v = quad_sum(orr[half]);
      if (qq == 0) red.orow[m_h[half]] = v * S.eoff[m_h[half]];
    }
    wg::wait<0>();  // Ye and Xw are rewritten for the next head after its barrier
    wg::pin(dca);
    wg::pin(dba);
  }
  __syncthreads();  // Ds complete; the last head's row partials in
  if (warp == kBwEpilogueWarp) head_epilogue(hpg - 1);

  // dB[s, n] += sum_t dGsum[t, s] C[t, n]  (A = Ds rows s, K = t);
  // dC[t, n] += sum_s dGsum[t, s] B[s, n]  (A = Ds transposed: rows t, K = s; B rows s permuted as Ds's)
  {
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
  }
  auto* dCg = a.dCm ? static_cast<bf16_t*>(a.dCm) + static_cast<int64_t>(g) * N : nullptr;
  auto* dBg = a.dBm ? static_cast<bf16_t*>(a.dBm) + static_cast<int64_t>(g) * N : nullptr;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int t = m_h[half], s = s_h[half];
#pragma unroll
    for (int j = 0; j < N / 8; ++j) {
      const int n = 8 * j + 2 * qq, i = 4 * j + 2 * half;
      if (dCg && t < len)
        *reinterpret_cast<uint32_t*>(dCg + (row0 + t) * a.ld_dC + n) = mma::pack_bf16x2(dca[i], dca[i + 1]);
      if (dBg && s < len)
        *reinterpret_cast<uint32_t*>(dBg + (row0 + s) * a.ld_dB + n) = mma::pack_bf16x2(dba[i], dba[i + 1]);
    }
  }
}

}  // namespace

template <int N>
void launch_bwd_chunk_wg(const SsdArgs& a) {
  using L = BwLayout<N>;
  auto kernel = ssd_bwd_chunk_wg_kernel<N>;
  static const bool attr = [&] {
    HLM_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(L::total)));
    return true;
  }();
  (void)attr;
  HLM_LAUNCH(kernel, dim3(static_cast<unsigned>(a.nchunks), static_cast<unsigned>(a.G), static_cast<unsigned>(a.B)),
             dim3(kBwThreads), L::total, a);
  HLM_CUDA_CHECK_LAUNCH();
}

template void launch_bwd_chunk_wg<128>(const SsdArgs&);
template void launch_bwd_chunk_wg<64>(const SsdArgs&);

}  // namespace hlm::cuda::ssd
