// SSD backward on tensor cores:
//  1. state sweeps (ssd_state.cu), chunk-parallel over segments: local segment sweeps, the state
//     pass over segments, then per (head, segment, row, direction) a block recomputes the states
//     entering each chunk (forwards) and the state gradients leaving each chunk (backwards, from
//     dy), fp32 in registers, storing a bf16 copy per chunk.
//  2. ssd_bwd_chunk: per (row, chunk, group) one block loops over the group's heads and produces
//     dx, d(dt), dB, dC (dB, dC summed over the heads in registers: no atomics) and per-head
//     partial sums of dA, dD, ddt_bias.
//  3. ssd_param_reduce (ssd_generic.cu): sums those partials in a fixed order.
#include "ops/cuda/ssd_kernels.cuh"

namespace hlm::cuda::ssd {
namespace {

// ---------------------------------------------------------------------------------------------
// 2. Chunk gradients. For one chunk of one head (positions t, s in [0, Q); G = C Bᵀ shared by the
// group; L[t,s] = exp(cum_t - cum_s) for s <= t in t's document; w, eoff, gamma as in ChunkScan):
//   y_t = sum_s G L dt_s x_s + eoff_t Hin C_t + D x_t,   Hout = gamma Hin + sum_s w_s dt_s x_s B_sᵀ
// gives, with dYX[t,s] = dy_t . x_s, dG = dYX dt_s L, M = G L:
//   dxdt_s = sum_t M[t,s] dy_t + w_s dHout B_s;  dx_s = D dy_s + dt_s dxdt_s
//   dC_t  += sum_s dG[t,s] B_s + eoff_t Hinᵀ dy_t;   dB_s += sum_t dG[t,s] C_t + w_s dt_s dHoutᵀ x_s
//   dcum_t = sum_s dG G [t,s] - sum_s dG G [s,t] + eoff_t dy_t.(Hin C_t) - v_t,  v_s = w_s dt_s x_s.(dHout B_s)
//   dcum_end += sum_s v_s + gamma <dHout, Hin>;   da = reverse cumsum(dcum)
//   d(dt)_s = x_s . dxdt_s + A da_s;  dA += sum_s da_s dt_s;  dD += sum_t dy_t . x_t

template <class Cfg>
struct ChunkReduce {
  float zrow[Cfg::kColSplit][Cfg::Q];   // row sums of dG G, per column split
  float zcol[Cfg::kRowBlocks][Cfg::Q];  // column sums of dG G, per row block
  float orow[Cfg::kColSplit][Cfg::Q];   // eoff_t dy_t . (Hin C_t)
  float vrow[Cfg::kColSplit][Cfg::Q];   // v_s
  float xrow[Cfg::kColSplit][Cfg::Q];   // x_s . dxdt_s
  float ddiag[Cfg::Q];                  // dy_t . x_t
  float gdot[Cfg::kWarps];              // <dHout, Hin> per warp
};

template <class Cfg>
struct ChunkLayout {
  static constexpr size_t kX = size_t{Cfg::Q} * Cfg::LDX * 2;
  static constexpr size_t kN = size_t{Cfg::Q} * Cfg::LDN * 2;
  static constexpr size_t kM = size_t{Cfg::Q} * Cfg::LDQ * 2;
  static constexpr size_t kH = size_t{Cfg::P} * Cfg::LDN * 2;
  // Per-head tiles are double-buffered (next head prefetched during this one) when that fits.
  // G and the head sum of dG live in shared memory in accumulator order, one column per thread
  // (conflict-free), to keep the kernel within 255 registers.
  static constexpr size_t kPriv = size_t{Cfg::kQTiles} * 4 * Cfg::kThreads * 4;
  static constexpr size_t kRest =
      2 * kN + kM + 3 * Cfg::Q * 4 + 3 * sizeof(ChunkScan<Cfg::Q>) + 2 * sizeof(ChunkReduce<Cfg>) + 2 * kPriv;
  static constexpr int kHeadBufs = kRest + 2 * (2 * kX + 2 * kH) <= 227 * 1024 ? 2 : 1;
  static constexpr size_t bs = 0;
  static constexpr size_t cs = bs + kN;
  static constexpr size_t xs = cs + kN;
  static constexpr size_t ys = xs + kHeadBufs * kX;  // dy
  static constexpr size_t hin = ys + kHeadBufs * kX;
  static constexpr size_t dho = hin + kHeadBufs * kH;
  static constexpr size_t ms = dho + kHeadBufs * kH;
  static constexpr size_t raw = ms + kM;
  static constexpr size_t bnd = raw + 2 * Cfg::Q * 4;
  static constexpr size_t scan = bnd + Cfg::Q * 4;
  static constexpr size_t red = scan + 3 * sizeof(ChunkScan<Cfg::Q>);  // head hi's scan at hi % 3
  static constexpr size_t gp = red + 2 * sizeof(ChunkReduce<Cfg>);     // head hi's partials at hi % 2
  static constexpr size_t dgp = gp + kPriv;
  static constexpr size_t total = dgp + kPriv;
  static_assert(total <= 227 * 1024, "chunk kernel shared memory");
};

template <int Q, int P, int N>
__global__ void __launch_bounds__(256, 1) ssd_bwd_chunk_kernel(const SsdArgs a) {
  using Cfg = FastCfg<Q, P, N>;
  using L = ChunkLayout<Cfg>;
  constexpr int LDX = Cfg::LDX, LDN = Cfg::LDN, LDQ = Cfg::LDQ;
  constexpr int kXE = Q * LDX, kHE = P * LDN;
  constexpr int kQT = Cfg::kQTiles, kPT = Cfg::kPTiles, kNT = Cfg::kNTiles;
  unsigned char* sm = mma::dynamic_smem();
  auto* Bs = reinterpret_cast<bf16_t*>(sm + L::bs);
  auto* Cs = reinterpret_cast<bf16_t*>(sm + L::cs);
  auto* Xs0 = reinterpret_cast<bf16_t*>(sm + L::xs);
  auto* Ys0 = reinterpret_cast<bf16_t*>(sm + L::ys);
  auto* Hin0 = reinterpret_cast<bf16_t*>(sm + L::hin);
  auto* Dho0 = reinterpret_cast<bf16_t*>(sm + L::dho);
  auto* Ms = reinterpret_cast<bf16_t*>(sm + L::ms);
  auto* raw = reinterpret_cast<float*>(sm + L::raw);
  auto* bnd = reinterpret_cast<int*>(sm + L::bnd);
  auto* scans = reinterpret_cast<ChunkScan<Q>*>(sm + L::scan);
  auto* reds = reinterpret_cast<ChunkReduce<Cfg>*>(sm + L::red);
  auto* Gp = reinterpret_cast<float*>(sm + L::gp);    // [kQTiles*4][256]: G = C Bᵀ
  auto* dGp = reinterpret_cast<float*>(sm + L::dgp);  // [kQTiles*4][256]: sum over heads of dG

  const int c = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
  const int hpg = a.H / a.G;
  const int h_first = g * hpg;
  const int T = a.T, C = a.nchunks;
  const int t0 = c * Q;
  const int len = min(Q, T - t0);
  const int64_t row0 = static_cast<int64_t>(b) * T + t0;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wr = warp % Cfg::kRowBlocks, wc = warp / Cfg::kRowBlocks;
  const int r0 = 16 * wr;             // rows (t or s) of this warp
  const int q0 = wc * Cfg::kQCols;    // columns of [Q, Q] tiles
  const int p0 = wc * Cfg::kPCols;    // columns of [Q, P] tiles
  const int n0 = wc * Cfg::kNCols;    // columns of [Q, N] tiles
  const int qd = lane & 3, gr = lane >> 2;
  const bool diag_tiles = q0 <= r0 + 15;  // this warp's [Q,Q] tile reaches the causal triangle

  auto issue_head_loads = [&](int h, int buf) {
    load_tile_async<Q, P, LDX, 256>(Xs0 + buf * kXE, static_cast<const bf16_t*>(a.x) + static_cast<int64_t>(h) * P,
                                    a.ld_x, row0, len);
    load_tile_async<Q, P, LDX, 256>(Ys0 + buf * kXE, static_cast<const bf16_t*>(a.dy) + static_cast<int64_t>(h) * P,
                                    a.ld_dy, row0, len);
    const int64_t st = ((static_cast<int64_t>(b) * a.H + h) * C + c) * P * N;
    load_tile_async<P, N, LDN, 256>(Hin0 + buf * kHE, a.ws_hin + st, N, 0, P);
    load_tile_async<P, N, LDN, 256>(Dho0 + buf * kHE, a.ws_dhout + st, N, 0, P);
  };

  load_tile_async<Q, N, LDN, 256>(Bs, static_cast<const bf16_t*>(a.Bm) + static_cast<int64_t>(g) * N, a.ld_B, row0, len);
  load_tile_async<Q, N, LDN, 256>(Cs, static_cast<const bf16_t*>(a.Cm) + static_cast<int64_t>(g) * N, a.ld_C, row0, len);
  issue_head_loads(h_first, 0);
  mma::cp_async_commit();
  if (tid < Q) {  // raw dt of heads 0 and 1 (head hi's in slot hi % 2)
    bnd[tid] = boundary_at(a, b, t0 + tid);
    raw[tid] = raw_dt_at(a, b, t0 + tid, h_first);
    if (hpg > 1) raw[Q + tid] = raw_dt_at(a, b, t0 + tid, h_first + 1);
  }
  mma::cp_async_wait<0>();
  __syncthreads();
  if (warp == Cfg::kScanWarp) chunk_scan_warp<Q>(scans[0], raw, bnd, len, head_A(a, h_first), head_bias(a, h_first), a.dt_min, a.dt_max);

  // G = C Bᵀ (this warp's [16, kQCols] tile), kept for all heads.
  {
  float G[kQT][4];
#pragma unroll
  for (int j = 0; j < kQT; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) G[j][i] = 0.f;
  if (diag_tiles) {
#pragma unroll
    for (int kk = 0; kk < N / 16; ++kk) {
      uint32_t af[4];
      mma::load_a(af, Cs, LDN, r0, 16 * kk);
#pragma unroll
      for (int j = 0; j < kQT; j += 2)
        if (q0 + 8 * j <= r0 + 15) {
          uint32_t bfr[4];
          mma::load_b2(bfr, Bs, LDN, q0 + 8 * j, 16 * kk);
          mma::mma_bf16(G[j], af, bfr[0], bfr[1]);
          mma::mma_bf16(G[j + 1], af, bfr[2], bfr[3]);
        }
    }
  }
#pragma unroll
  for (int j = 0; j < kQT; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      Gp[(4 * j + i) * Cfg::kThreads + tid] = G[j][i];
      dGp[(4 * j + i) * Cfg::kThreads + tid] = 0.f;
    }
  }
  float dCa[kNT][4], dBa[kNT][4];
#pragma unroll
  for (int j = 0; j < kNT; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) dCa[j][i] = dBa[j][i] = 0.f;

  // dcum -> da -> d(dt) of head hi and its partial sums of dA, dD, ddt_bias (one warp), from the
  // head's row partials; run during the next head's products (or after the loop for the last).
  auto head_epilogue = [&](int hi) {
    const int h = h_first + hi;
    const ChunkScan<Q>& sc = scans[hi % 3];
    const ChunkReduce<Cfg>& red = reds[hi & 1];
    constexpr int E = Q / 32;
    float dcum[E], vs = 0.f;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int t = lane * E + e;
      float v = 0.f, zrow = 0.f, zcol = 0.f, orow = 0.f, vrow = 0.f;
#pragma unroll
      for (int k = 0; k < Cfg::kColSplit; ++k) {
        zrow += red.zrow[k][t];
        orow += red.orow[k][t];
        vrow += red.vrow[k][t];
      }
#pragma unroll
      for (int k = 0; k < Cfg::kRowBlocks; ++k) zcol += red.zcol[k][t];
      v = zrow - zcol + orow - vrow;
      vs += vrow;
      dcum[e] = v;
    }
    vs = warp_sum(vs);
    float gsum = 0.f;
#pragma unroll
    for (int k = 0; k < Cfg::kWarps; ++k) gsum += red.gdot[k];
    auto xrow = [&](int t) {
      float xs = 0.f;
#pragma unroll
      for (int k = 0; k < Cfg::kColSplit; ++k) xs += red.xrow[k][t];
      return xs;
    };
    dt_epilogue_tail<Q>(a, sc, dcum, vs, gsum, head_A(a, h), xrow, [&](int t) { return red.ddiag[t]; }, len, row0, h,
                        a.ws_part ? a.ws_part + ((static_cast<int64_t>(b) * C + c) * a.H + h) * 3 : nullptr);
  };

  // Per head two barriers: the scan of head hi runs one head ahead (warp kScanWarp, during head
  // hi-1's products) and its epilogue one head behind (warp kEpilogueWarp, during head hi+1's),
  // so neither single-warp phase holds the other warps at a barrier. Scans rotate over 3 slots,
  // row partials over 2, raw dt over 2 (loaded two heads ahead).
  constexpr int kBufs = L::kHeadBufs;
  constexpr int kEpilogueWarp = 0;  // light on dYX (one tile pair); kScanWarp has none
  static_assert(kEpilogueWarp != Cfg::kScanWarp, "epilogue and scan warps");
  for (int hi = 0; hi < hpg; ++hi) {
    const int h = h_first + hi;
    const int buf = kBufs == 2 ? (hi & 1) : 0;
    const bool has_next = hi + 1 < hpg;
    const float Dh = a.D ? load_any(a.D, a.D_type, h) : 0.f;
    const bf16_t* Xs = Xs0 + buf * kXE;
    const bf16_t* Ys = Ys0 + buf * kXE;
    const bf16_t* Hin = Hin0 + buf * kHE;
    const bf16_t* Dho = Dho0 + buf * kHE;
    const ChunkScan<Q>& sc = scans[hi % 3];
    ChunkReduce<Cfg>& red = reds[hi & 1];
    float next_raw = 0.f;
    if (hi + 2 < hpg && tid < Q) next_raw = raw_dt_at(a, b, t0 + tid, h + 2);
    mma::cp_async_wait<0>();
    // Head h's tiles in; head h's scan (run during head h-1) and head h-1's row partials visible;
    // every read of head h-1's tiles, Ms and scan slot (h+1) % 3 (= h-2's) done.
    __syncthreads();
    if (kBufs == 2 && has_next) issue_head_loads(h + 1, buf ^ 1);
    mma::cp_async_commit();
    if (warp == Cfg::kScanWarp && has_next)
      chunk_scan_warp<Q>(scans[(hi + 1) % 3], raw + ((hi + 1) & 1) * Q, bnd, len, head_A(a, h + 1), head_bias(a, h + 1),
                         a.dt_min, a.dt_max);
    if (hi + 2 < hpg && tid < Q) raw[(hi & 1) * Q + tid] = next_raw;  // head hi's slot: scanned before this barrier
    if (warp == kEpilogueWarp && hi > 0) head_epilogue(hi - 1);

    // (a) dYX = dY Xᵀ on this warp's [16, kQCols] tile.
    float dyx[kQT][4];
#pragma unroll
    for (int j = 0; j < kQT; ++j) dyx[j][0] = dyx[j][1] = dyx[j][2] = dyx[j][3] = 0.f;
    if (diag_tiles) {
#pragma unroll
      for (int kk = 0; kk < P / 16; ++kk) {
        uint32_t af[4];
        mma::load_a(af, Ys, LDX, r0, 16 * kk);
#pragma unroll
        for (int j = 0; j < kQT; j += 2)
          if (q0 + 8 * j <= r0 + 15) {
            uint32_t bfr[4];
            mma::load_b2(bfr, Xs, LDX, q0 + 8 * j, 16 * kk);
            mma::mma_bf16(dyx[j], af, bfr[0], bfr[1]);
            mma::mma_bf16(dyx[j + 1], af, bfr[2], bfr[3]);
          }
      }
    }
    // (c) BdH[s,p] = B_s . dHout[p,:] on this warp's [16, kPCols] tile.
    float bdh[kPT][4];
#pragma unroll
    for (int j = 0; j < kPT; ++j) bdh[j][0] = bdh[j][1] = bdh[j][2] = bdh[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < N / 16; ++kk) {
      uint32_t af[4];
      mma::load_a(af, Bs, LDN, r0, 16 * kk);
      mma::mma_row<kPT, false>(bdh, af, Dho, LDN, p0, 16 * kk);
    }
    // <dHout, Hin> (bf16 copies, fp32 sum).
    {
      float gd = 0.f;
      constexpr int kPieces = N / 8;
      for (int i = tid; i < P * kPieces; i += 256) {
        const int pp = i / kPieces, nn = (i % kPieces) * 8;
        const uint4 u = *reinterpret_cast<const uint4*>(Hin + pp * LDN + nn);
        const uint4 v = *reinterpret_cast<const uint4*>(Dho + pp * LDN + nn);
        gd += mma::bf16_lo(u.x) * mma::bf16_lo(v.x) + mma::bf16_hi(u.x) * mma::bf16_hi(v.x);
        gd += mma::bf16_lo(u.y) * mma::bf16_lo(v.y) + mma::bf16_hi(u.y) * mma::bf16_hi(v.y);
        gd += mma::bf16_lo(u.z) * mma::bf16_lo(v.z) + mma::bf16_hi(u.z) * mma::bf16_hi(v.z);
        gd += mma::bf16_lo(u.w) * mma::bf16_lo(v.w) + mma::bf16_hi(u.w) * mma::bf16_hi(v.w);
      }
      gd = warp_sum(gd);
      if (lane == 0) red.gdot[warp] = gd;
    }

    // Phase 2: masks and decays on the [Q,Q] tile, state terms on [Q,N] tiles.
    {
      float zr[2] = {0.f, 0.f};
      float zc[kQT][2];
#pragma unroll
      for (int j = 0; j < kQT; ++j) {
        zc[j][0] = zc[j][1] = 0.f;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int t = mma::acc_row(r0, 2 * half), s = mma::acc_col(q0 + 8 * j, 0);
          float m[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int ss = s + e, i = 2 * half + e;
            const float Lm = (ss <= t && sc.seg[ss] == sc.seg[t]) ? __expf(fminf(sc.cum[t] - sc.cum[ss], 0.f)) : 0.f;
            const float dg = dyx[j][i] * sc.dt[ss] * Lm;
            const float gv = Gp[(4 * j + i) * Cfg::kThreads + tid];
            dGp[(4 * j + i) * Cfg::kThreads + tid] += dg;
            const float z = dg * gv;
            zr[half] += z;
            zc[j][e] += z;
            m[e] = gv * Lm;
            if (ss == t) red.ddiag[t] = dyx[j][i];
          }
          *reinterpret_cast<uint32_t*>(Ms + t * LDQ + s) = mma::pack_bf16x2(m[0], m[1]);
        }
      }
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const float v = quad_sum(zr[half]);
        if (qd == 0) red.zrow[wc][r0 + gr + 8 * half] = v;
      }
#pragma unroll
      for (int j = 0; j < kQT; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float v = column_sum(zc[j][e]);
          if (gr == 0) red.zcol[wr][q0 + 8 * j + 2 * qd + e] = v;
        }
    }
    {  // v_s = w_s dt_s x_s . BdH_s (this warp's share of p)
      float vr[2] = {0.f, 0.f};
#pragma unroll
      for (int j = 0; j < kPT; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int s = mma::acc_row(r0, 2 * half), p = mma::acc_col(p0 + 8 * j, 0);
          const uint32_t xv = *reinterpret_cast<const uint32_t*>(Xs + s * LDX + p);
          vr[half] += mma::bf16_lo(xv) * bdh[j][2 * half] + mma::bf16_hi(xv) * bdh[j][2 * half + 1];
        }
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int s = r0 + gr + 8 * half;
        const float v = quad_sum(vr[half]);
        if (qd == 0) red.vrow[wc][s] = v * sc.w[s] * sc.dt[s];
      }
    }
    {  // (e) T = dY Hin -> dC += eoff T, orow; (f) U = X dHout -> dB += w dt U.  In slices of 4 n-tiles.
      float orr[2] = {0.f, 0.f};
      const float e0 = sc.eoff[r0 + gr], e1 = sc.eoff[r0 + gr + 8];
      const float u0 = sc.w[r0 + gr] * sc.dt[r0 + gr], u1 = sc.w[r0 + gr + 8] * sc.dt[r0 + gr + 8];
#pragma unroll
      for (int sl = 0; sl < kNT / 4; ++sl) {
        const int nb = n0 + 32 * sl;
        float tt[4][4];
#pragma unroll
        for (int j = 0; j < 4; ++j) tt[j][0] = tt[j][1] = tt[j][2] = tt[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < P / 16; ++kk) {
          uint32_t af[4];
          mma::load_a(af, Ys, LDX, r0, 16 * kk);
          mma::mma_row<4, true>(tt, af, Hin, LDN, nb, 16 * kk);
        }
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            const int t = mma::acc_row(r0, 2 * half), n = mma::acc_col(nb + 8 * j, 0);
            const float e = half ? e1 : e0;
            dCa[4 * sl + j][2 * half] += e * tt[j][2 * half];
            dCa[4 * sl + j][2 * half + 1] += e * tt[j][2 * half + 1];
            const uint32_t cv = *reinterpret_cast<const uint32_t*>(Cs + t * LDN + n);
            orr[half] += mma::bf16_lo(cv) * tt[j][2 * half] + mma::bf16_hi(cv) * tt[j][2 * half + 1];
          }
#pragma unroll
        for (int j = 0; j < 4; ++j) tt[j][0] = tt[j][1] = tt[j][2] = tt[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < P / 16; ++kk) {
          uint32_t af[4];
          mma::load_a(af, Xs, LDX, r0, 16 * kk);
          mma::mma_row<4, true>(tt, af, Dho, LDN, nb, 16 * kk);
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          dBa[4 * sl + j][0] += u0 * tt[j][0];
          dBa[4 * sl + j][1] += u0 * tt[j][1];
          dBa[4 * sl + j][2] += u1 * tt[j][2];
          dBa[4 * sl + j][3] += u1 * tt[j][3];
        }
      }
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const float v = quad_sum(orr[half]);
        if (qd == 0) red.orow[wc][r0 + gr + 8 * half] = v * (half ? e1 : e0);
      }
    }
    __syncthreads();  // Ms and the row partials complete

    {  // (b) dxdt = Mᵀ dY + w BdH; dx = D dy + dt dxdt; x . dxdt
      float accb[kPT][4];
#pragma unroll
      for (int j = 0; j < kPT; ++j) accb[j][0] = accb[j][1] = accb[j][2] = accb[j][3] = 0.f;
      for (int ks = wr; ks < Cfg::kRowBlocks; ++ks) {
        uint32_t af[4];
        mma::load_a_t(af, Ms, LDQ, r0, 16 * ks);
        mma::mma_row<kPT, true>(accb, af, Ys, LDX, p0, 16 * ks);
      }
      float xr[2] = {0.f, 0.f};
      auto* dxg = a.dx ? static_cast<bf16_t*>(a.dx) + static_cast<int64_t>(h) * P : nullptr;
#pragma unroll
      for (int j = 0; j < kPT; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int s = mma::acc_row(r0, 2 * half), p = mma::acc_col(p0 + 8 * j, 0);
          const float ws = sc.w[s], dts = sc.dt[s];
          const float d0 = accb[j][2 * half] + ws * bdh[j][2 * half];
          const float d1 = accb[j][2 * half + 1] + ws * bdh[j][2 * half + 1];
          const uint32_t xv = *reinterpret_cast<const uint32_t*>(Xs + s * LDX + p);
          xr[half] += mma::bf16_lo(xv) * d0 + mma::bf16_hi(xv) * d1;
          if (dxg && s < len) {
            const uint32_t yv = *reinterpret_cast<const uint32_t*>(Ys + s * LDX + p);
            *reinterpret_cast<uint32_t*>(dxg + (row0 + s) * a.ld_dx + p) =
                mma::pack_bf16x2(Dh * mma::bf16_lo(yv) + dts * d0, Dh * mma::bf16_hi(yv) + dts * d1);
          }
        }
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const float v = quad_sum(xr[half]);
        if (qd == 0) red.xrow[wc][r0 + gr + 8 * half] = v;
      }
    }
    if constexpr (kBufs == 1) {
      __syncthreads();  // every read of this head's tiles is done
      if (has_next) issue_head_loads(h + 1, 0);
    }
    mma::cp_async_commit();
  }
  __syncthreads();  // the last head's row partials in; every read of Ms done
  if (warp == kEpilogueWarp) head_epilogue(hpg - 1);

  // dC += dGsum B, dB += dGsumᵀ C (dGsum summed over the group's heads, staged in Ms as bf16).
#pragma unroll
  for (int j = 0; j < kQT; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int t = mma::acc_row(r0, 2 * half), s = mma::acc_col(q0 + 8 * j, 0);
      *reinterpret_cast<uint32_t*>(Ms + t * LDQ + s) = mma::pack_bf16x2(
          dGp[(4 * j + 2 * half) * Cfg::kThreads + tid], dGp[(4 * j + 2 * half + 1) * Cfg::kThreads + tid]);
    }
  __syncthreads();
  for (int ks = 0; ks <= wr; ++ks) {
    uint32_t af[4];
    mma::load_a(af, Ms, LDQ, r0, 16 * ks);
    mma::mma_row<kNT, true>(dCa, af, Bs, LDN, n0, 16 * ks);
  }
  for (int ks = wr; ks < Cfg::kRowBlocks; ++ks) {
    uint32_t af[4];
    mma::load_a_t(af, Ms, LDQ, r0, 16 * ks);
    mma::mma_row<kNT, true>(dBa, af, Cs, LDN, n0, 16 * ks);
  }
  auto* dCg = a.dCm ? static_cast<bf16_t*>(a.dCm) + static_cast<int64_t>(g) * N : nullptr;
  auto* dBg = a.dBm ? static_cast<bf16_t*>(a.dBm) + static_cast<int64_t>(g) * N : nullptr;
#pragma unroll
  for (int j = 0; j < kNT; ++j)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int t = mma::acc_row(r0, 2 * half), n = mma::acc_col(n0 + 8 * j, 0);
      if (t < len) {
        if (dCg)
          *reinterpret_cast<uint32_t*>(dCg + (row0 + t) * a.ld_dC + n) =
              mma::pack_bf16x2(dCa[j][2 * half], dCa[j][2 * half + 1]);
        if (dBg)
          *reinterpret_cast<uint32_t*>(dBg + (row0 + t) * a.ld_dB + n) =
              mma::pack_bf16x2(dBa[j][2 * half], dBa[j][2 * half + 1]);
      }
    }
}

}  // namespace

template <int Q, int P, int N>
void launch_bwd_fast(const SsdArgs& a) {
  using Cfg = FastCfg<Q, P, N>;
  using LC = ChunkLayout<Cfg>;
  const bool chunk_outputs = a.dx || a.ddt || a.dBm || a.dCm || a.ws_part;
  if (a.nseg > 1) launch_segment_states<Q, P, N>(a, 0, 2);
  if (!chunk_outputs) {  // only dh0: the backward sweeps write it (segment 0's)
    if (a.dh0) launch_state_sweep<Q, P, N>(a, 1, 1);
    return;
  }
  launch_state_sweep<Q, P, N>(a, 0, 2);
  if constexpr (Q == 64 && P == 64) {
    if (a.bwd_variant != 0) {  // backward_variant() picks a wgmma kernel only where it applies
      launch_bwd_chunk_wg<N>(a);
      return;
    }
  }
  auto chunk = ssd_bwd_chunk_kernel<Q, P, N>;
  static const bool chunk_attr = [&] {
    HLM_CUDA_CHECK(cudaFuncSetAttribute(chunk, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(LC::total)));
    return true;
  }();
  (void)chunk_attr;
  HLM_LAUNCH(chunk, dim3(static_cast<unsigned>(a.nchunks), static_cast<unsigned>(a.G), static_cast<unsigned>(a.B)),
             dim3(256), LC::total, a);
  HLM_CUDA_CHECK_LAUNCH();
}

template void launch_bwd_fast<64, 64, 128>(const SsdArgs&);
template void launch_bwd_fast<64, 64, 64>(const SsdArgs&);
template void launch_bwd_fast<64, 128, 128>(const SsdArgs&);

}  // namespace hlm::cuda::ssd
