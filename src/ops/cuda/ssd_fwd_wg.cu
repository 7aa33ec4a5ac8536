// SSD forward walk on Hopper's warpgroup MMA (wgmma, sm_90a), for P = 64: the same algorithm as
// ssd_fwd.cu's walk (segments, states entering them from ssd_state.cu's pieces), with one
// warpgroup per (head, segment, row) block and every per-chunk product a handful of wgmma on
// shared-memory operands instead of ~750 mma.sync and ~600 ldmatrix:
//
//   G  = C Bᵀ          64 × 64 × N    A = C, B = B tile (both K-major)
//   Yo = C Hᵀ          64 × 64 × N    A = C, B = the bf16 state (K-major)
//   y  = eoff Yo + M x 64 × 64 × 64   A = M in registers (G's accumulators, masked and decayed),
//                                     B = x tile (MN-major)
//   H  = gamma H + (x w dt)ᵀ B   64 × N × 64   A = x w dt (MN-major), B = B tile (MN-major)
//
// The fp32 state stays in the H product's accumulators across chunks. Tiles are stored as 8 × 8
// core matrices (wgmma.cuh's CoreTile), so one copy of the B tile serves as K-major operand of G
// and as MN-major operand of the state update. The dt scan runs one chunk ahead (warp 0, on raw
// dt and doc ids that cp.async brought two chunks ahead). Per chunk, two barriers:
//   (A) tiles, the chunk's scan and the bf16 state in -> the previous chunk's y copied out; G, Yo
//                                          issued; next x and B tiles issued; x w dt into shared
//                                          memory; M from G; y = eoff Yo + M x issued
//   (C) x w dt complete, G and Yo done  -> next C tile issued; H = gamma H + (x w dt)ᵀ B issued;
//                                          y += D x in place of x; warp 0 scans the next chunk;
//                                          the state's bf16 copy written for the next chunk
// Correct but not faster than ssd_fwd.cu's walk on an H100 (64K: 4.92 vs 4.02 ms): opt-in as
// variant 1; bench/cuda/NOTES-ssd.md (round 8) has the profile. Its warp-specialised form below
// (variant 2; 64K 3.75 vs 4.02 ms for ssd_fwd.cu's walk, H100, round 12) and that with its
// consumers' chunk reordered (variant 3: 2.90 ms, round 15), that with y stored by TMA (variant 4:
// 2.67 ms, round 16), and that with x, B and C loaded by TMA (variant 5, the default on sm_90: 2.50
// ms, round 17).
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "ops/cuda/ssd_kernels.cuh"
#include "ops/cuda/ssd_wg.cuh"
#include "ops/cuda/tma.cuh"
#include "ops/cuda/wgmma.cuh"

namespace hlm::cuda::ssd {
namespace {

constexpr int kQ = 64, kP = 64, kThreads = 128;

template <int N>
struct WgLayout {
  using TX = wg::CoreTile<kQ, kP>;  // x, x w dt: [t][p]
  using TN = wg::CoreTile<kQ, N>;   // B, C: [t][n]
  using TH = wg::CoreTile<kP, N>;   // bf16 state: [p][n]
  static constexpr size_t xs = 0;                        // x (then y in place), 3 buffers
  static constexpr size_t bs = xs + 3 * TX::kBytes;      // B, 2 buffers
  static constexpr size_t cs = bs + 2 * TN::kBytes;      // C, 1 buffer
  static constexpr size_t hs = cs + TN::kBytes;          // bf16 state entering the chunk
  static constexpr size_t xw = hs + TH::kBytes;          // x w dt
  static constexpr size_t raw = xw + TX::kBytes;         // raw dt words (cp.async), 2 chunks x Q
  static constexpr size_t doc = raw + 2 * kQ * 4;        // doc ids at t - 1 .. t + Q - 1, 2 chunks
  static constexpr size_t rawf = doc + 2 * (kQ + 4) * 4; // the scan warp's raw dt and boundary flags
  static constexpr size_t bndf = rawf + kQ * 4;
  static constexpr size_t scan = bndf + kQ * 4;          // 2 chunks
  static constexpr size_t total = scan + 2 * sizeof(ChunkScan<kQ>);
};

// All of a block of kThreads (variant 1), fully unrolled.
template <int R, int C, bool kPermute = false>
__device__ __forceinline__ void load_core_tile_block(unsigned char* S, const bf16_t* base, int64_t ld, int64_t row0,
                                                     int valid_rows) {
  load_core_tile_async<R, C, kThreads, R * C / 8 / kThreads, kPermute>(S, base, ld, row0, valid_rows,
                                                                        static_cast<int>(threadIdx.x));
}
// M[t, s] = G[t, s] exp(cum_t - cum_s) dt_s for s <= t in t's document, else 0, as the A fragments
// of y's product: k step ks takes G's column blocks 2 ks, 2 ks + 1. The rows are tokens
// token_of_row(): every warp (W, of its warpgroup) holds 8 early and 8 late tokens t_h, so the
// causal triangle's work is the same for all four (9 of 16 column blocks each); blocks right of a
// half's last token are zero without arithmetic. One instance per warp index, so that which blocks
// are zero is known at compile time: straight-line code the compiler can interleave (with W a
// run-time value the skips were branches, and the profile showed the math as short dependent runs,
// round 15).
template <int W, class Scan>
__device__ __forceinline__ void m_fragments_w(uint32_t (&mf)[4][4], const float (&gacc)[32], const Scan& S, int qq,
                                              const int (&t_h)[2]) {
  constexpr int kTMax0 = 8 * W + 7, kTMax1 = 63 - 8 * W;  // last token of each half in this warp
  const float cum_t[2] = {S.cum[t_h[0]], S.cum[t_h[1]]};
  const int seg_t[2] = {S.seg[t_h[0]], S.seg[t_h[1]]};
#pragma unroll
  for (int ks = 0; ks < 4; ++ks)
#pragma unroll
    for (int jj = 0; jj < 2; ++jj) {
      const int j = 2 * ks + jj, s = 8 * j + 2 * qq;
      if (8 * j > kTMax1) {  // both halves (the late half ends last)
        mf[ks][2 * jj] = mf[ks][2 * jj + 1] = 0u;
        continue;
      }
      const float2 cs = *reinterpret_cast<const float2*>(S.cum + s);
      const float2 ds = *reinterpret_cast<const float2*>(S.dt + s);
      const int2 ss = *reinterpret_cast<const int2*>(S.seg + s);
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int t = t_h[half];
        if (half == 0 && 8 * j > kTMax0) {
          mf[ks][2 * jj] = 0u;
          continue;
        }
        const float m0 = (s <= t && ss.x == seg_t[half])
                             ? gacc[4 * j + 2 * half] * __expf(fminf(cum_t[half] - cs.x, 0.f)) * ds.x
                             : 0.f;
        const float m1 = (s + 1 <= t && ss.y == seg_t[half])
                             ? gacc[4 * j + 2 * half + 1] * __expf(fminf(cum_t[half] - cs.y, 0.f)) * ds.y
                             : 0.f;
        mf[ks][2 * jj + half] = mma::pack_bf16x2(m0, m1);
      }
    }
}
// f(std::integral_constant<int, w>()) for the warp index w (0..3, warp-uniform) of a warpgroup:
// the M builders are instantiated per warp, so that their causal skips are compile-time.
template <class F>
__device__ __forceinline__ void with_warp_index(int w, F&& f) {
  switch (w) {
    case 0: f(std::integral_constant<int, 0>()); break;
    case 1: f(std::integral_constant<int, 1>()); break;
    case 2: f(std::integral_constant<int, 2>()); break;
    default: f(std::integral_constant<int, 3>()); break;
  }
}
template <class Scan>
__device__ __forceinline__ void m_fragments(uint32_t (&mf)[4][4], const float (&gacc)[32], const Scan& S, int w,
                                            int qq, const int (&t_h)[2]) {
  with_warp_index(w, [&](auto W) { m_fragments_w<W.value>(mf, gacc, S, qq, t_h); });
}

// Variant 7's fast chunks (FactoredScan): M[t, s] = G[t, s] fcol[s] for s <= t (the row factor
// pre[t] is applied to y after the product), rows in token_of_row_blocks order: half 0 of warp W
// holds token block W, half 1 block 7 - W, so the blocks left of a half's diagonal block are whole
// (no compare), its diagonal block compares s <= t, and the blocks right of it are zero — all known
// at compile time but the diagonal's compare. kSeg (a boundary in the chunk): s and t also in one
// document.
template <int W, bool kSeg>
__device__ __forceinline__ void m_fragments_factored_w(uint32_t (&mf)[4][4], const float (&gacc)[32],
                                                       const FactoredScan<kQ>& S, int qq, const int (&t_h)[2]) {
  constexpr int kDiag[2] = {W, 7 - W};
  const float* fcol = S.fcol;
  int seg_t[2] = {0, 0};
  if constexpr (kSeg) {
    seg_t[0] = S.seg[t_h[0]];
    seg_t[1] = S.seg[t_h[1]];
  }
#pragma unroll
  for (int ks = 0; ks < 4; ++ks)
#pragma unroll
    for (int jj = 0; jj < 2; ++jj) {
      const int j = 2 * ks + jj, s = 8 * j + 2 * qq;
      if (j > kDiag[0] && j > kDiag[1]) {
        mf[ks][2 * jj] = mf[ks][2 * jj + 1] = 0u;
        continue;
      }
      const float2 f = *reinterpret_cast<const float2*>(fcol + s);
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        if (j > kDiag[half]) {
          mf[ks][2 * jj + half] = 0u;
          continue;
        }
        float m0 = gacc[4 * j + 2 * half] * f.x, m1 = gacc[4 * j + 2 * half + 1] * f.y;
        if (j == kDiag[half]) {
          const int t = t_h[half];
          m0 = s <= t ? m0 : 0.f;
          m1 = s + 1 <= t ? m1 : 0.f;
        }
        if constexpr (kSeg) {
          const int2 ss = *reinterpret_cast<const int2*>(S.seg + s);
          m0 = ss.x == seg_t[half] ? m0 : 0.f;
          m1 = ss.y == seg_t[half] ? m1 : 0.f;
        }
        mf[ks][2 * jj + half] = mma::pack_bf16x2(m0, m1);
      }
    }
}
template <bool kSeg>
__device__ __forceinline__ void m_fragments_factored(uint32_t (&mf)[4][4], const float (&gacc)[32],
                                                     const FactoredScan<kQ>& S, int w, int qq, const int (&t_h)[2]) {
  with_warp_index(w, [&](auto W) { m_fragments_factored_w<W.value, kSeg>(mf, gacc, S, qq, t_h); });
}

// One thread's share of a consumer warpgroup's per-chunk work, common to both walks: lt is the
// thread within its warpgroup (warp w, lane 4 gq + qq), t_h its two product rows' tokens
// (token_of_row, or with kBlockOrder token_of_row_blocks: the order of TMA-loaded C tiles).
// The x, B and C tiles in TMA's 128-byte swizzle (variant 5) are [N / 64][64 rows][64] atom
// columns of kSwAtom bytes.
constexpr uint32_t kSwAtom = kQ * 128;
template <int N, bool kBlockOrder = false>
struct WalkThread {
  using TX = wg::CoreTile<kQ, kP>;
  using TN = wg::CoreTile<kQ, N>;
  using TH = wg::CoreTile<kP, N>;
  int lt, w, gq, qq;
  int t_h[2];
  __device__ explicit WalkThread(int lt_) : lt(lt_), w(lt_ >> 5), gq((lt_ & 31) >> 2), qq(lt_ & 3) {
    t_h[0] = kBlockOrder ? token_of_row_blocks(16 * w + gq) : token_of_row(16 * w + gq);
    t_h[1] = kBlockOrder ? token_of_row_blocks(16 * w + gq + 8) : token_of_row(16 * w + gq + 8);
  }
  // The state: accumulator element 4 j + i is (p, n) = (16 w + gq + 8 (i / 2), 8 j + 2 qq + i % 2).
  // f(p, n, i) for each pair (i, i + 1) of this thread's elements, n even.
  template <class F>
  __device__ __forceinline__ void for_state_pairs(F&& f) const {
#pragma unroll
    for (int j = 0; j < N / 8; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) f(16 * w + gq + 8 * half, 8 * j + 2 * qq, 4 * j + 2 * half);
  }
  // The fp32 [P][N] state at src (zero if null) into the state update's accumulators.
  __device__ __forceinline__ void load_state(float (&hacc)[N / 2], const float* src) const {
    for_state_pairs([&](int p, int n, int i) {
      const float2 v = src ? *reinterpret_cast<const float2*>(src + p * N + n) : make_float2(0.f, 0.f);
      hacc[i] = v.x;
      hacc[i + 1] = v.y;
    });
  }
  __device__ __forceinline__ void store_state(float* dst, const float (&hacc)[N / 2]) const {
    for_state_pairs([&](int p, int n, int i) {
      *reinterpret_cast<float2*>(dst + p * N + n) = make_float2(hacc[i], hacc[i + 1]);
    });
  }
  // The bf16 copy of the state that the next chunk's Yo reads (async proxy, after a barrier).
  __device__ __forceinline__ void store_state_bf16(unsigned char* Hs, const float (&hacc)[N / 2]) const {
    for_state_pairs([&](int p, int n, int i) {
      *reinterpret_cast<uint32_t*>(Hs + TH::offset(p, n)) = mma::pack_bf16x2(hacc[i], hacc[i + 1]);
    });
    wg::fence_async_smem();
  }
  // The same by stmatrix (variant 7): 8 stores of four 8 x 8 core matrices instead of 32 of 4 bytes.
  // Matrix m of store j2 is rows 16 w + 8 (m % 2) .., columns 8 (2 j2 + m / 2) ..; lane l gives the
  // address of row l % 8 of matrix l / 8. Not fenced for the async proxy: the caller's next fence
  // (after x w dt) covers both.
  __device__ __forceinline__ void store_state_bf16_stsm(unsigned char* Hs, const float (&hacc)[N / 2]) const {
    const int lane = lt & 31, m = lane >> 3, p = 16 * w + 8 * (m & 1) + (lane & 7);
#pragma unroll
    for (int j2 = 0; j2 < N / 16; ++j2) {
      uint32_t v[4];
#pragma unroll
      for (int mm = 0; mm < 4; ++mm) {
        const int i = 4 * (2 * j2 + (mm >> 1)) + 2 * (mm & 1);
        v[mm] = mma::pack_bf16x2(hacc[i], hacc[i + 1]);
      }
      mma::stsm_x4(Hs + TH::offset(p, 8 * (2 * j2 + (m >> 1))), v);
    }
  }
  // acc = C Vᵀ over N, one commit group: G with V the B tile (desc_v K-major, step TN's), Yo with V
  // the bf16 state (step TH's). kSwC / kSwV: that operand a 128-byte-swizzled tile (K steps of 32
  // bytes within an atom column, kSwAtom between them; step_v unused).
  template <bool kSwC = false, bool kSwV = false>
  __device__ __forceinline__ static void issue_c_product(float (&acc)[32], uint64_t desc_c, uint64_t desc_v,
                                                         uint32_t step_v) {
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < N / 16; ++kk) {
      const uint32_t sw = (kk / 4) * kSwAtom + (kk % 4) * 32;
      wg::wgmma_ss_n64<0, 0>(acc, wg::desc_advance(desc_c, kSwC ? sw : kk * TN::kKMajorStep),
                             wg::desc_advance(desc_v, kSwV ? sw : kk * step_v), kk > 0);
    }
    wg::commit();
  }
  // y = eoff Yo + M x (Yo complete in yacc, M in mf, x tile X), one commit group.
  __device__ __forceinline__ void issue_y(float (&yacc)[32], const uint32_t (&mf)[4][4], const ChunkScan<kQ>& S,
                                          const unsigned char* X) const {
    issue_y_desc(yacc, mf, S, wg::make_desc(wg::smem_addr(X), TX::kMnMajorLbo, TX::kMnMajorSbo), TX::kMnMajorStep);
  }
  // The same with the x tile behind desc_x (MN-major), k steps of step_x bytes.
  __device__ __forceinline__ void issue_y_desc(float (&yacc)[32], const uint32_t (&mf)[4][4], const ChunkScan<kQ>& S,
                                               uint64_t desc_x, uint32_t step_x) const {
    issue_y_rows(yacc, mf, S.eoff[t_h[0]], S.eoff[t_h[1]], true, desc_x, step_x);
  }
  // The same with the rows' coefficients given (e0, e1: this thread's two rows), applied when scale.
  __device__ __forceinline__ void issue_y_rows(float (&yacc)[32], const uint32_t (&mf)[4][4], float e0, float e1,
                                               bool scale, uint64_t desc_x, uint32_t step_x) const {
    if (scale) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        yacc[4 * j] *= e0;
        yacc[4 * j + 1] *= e0;
        yacc[4 * j + 2] *= e1;
        yacc[4 * j + 3] *= e1;
      }
    }
    wg::fence();
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) wg::wgmma_rs_n64<1>(yacc, mf[ks], wg::desc_advance(desc_x, ks * step_x), true);
    wg::commit();
  }
  // H = gamma H + (x w dt)ᵀ B (x w dt behind desc_xw, B tile Bt), one commit group.
  __device__ __forceinline__ static void issue_state_update(float (&hacc)[N / 2], float gamma, uint64_t desc_xw,
                                                            const unsigned char* Bt) {
    issue_state_update_desc(hacc, gamma, desc_xw, TX::kMnMajorStep,
                            wg::make_desc(wg::smem_addr(Bt), TN::kMnMajorLbo, TN::kMnMajorSbo), TN::kMnMajorStep);
  }
  // The same with the B tile behind desc_bm (MN-major); k steps of step_xw and step_b bytes; H
  // scaled by gamma only when scale (variant 7: when its scan rescales the state).
  __device__ __forceinline__ static void issue_state_update_desc(float (&hacc)[N / 2], float gamma, uint64_t desc_xw,
                                                                 uint32_t step_xw, uint64_t desc_bm, uint32_t step_b,
                                                                 bool scale = true) {
    if (scale) {
#pragma unroll
      for (int i = 0; i < N / 2; ++i) hacc[i] *= gamma;
    }
    wg::fence();
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      const uint64_t da = wg::desc_advance(desc_xw, ks * step_xw);
      const uint64_t db = wg::desc_advance(desc_bm, ks * step_b);
      if constexpr (N == 128)
        wg::wgmma_ss_n128<1, 1>(hacc, da, db, true);
      else
        wg::wgmma_ss_n64<1, 1>(hacc, da, db, true);
    }
    wg::commit();
  }
  // Y = y + D x (y complete in yacc) in the tile layout (kSwY: Y row-major in TMA's 128-byte
  // swizzle, tma::sw128_offset); each element is read from X and written to Y by this thread only,
  // so Y may be X. All 16 loads first: the compiler cannot move a load of X above a store to Y
  // (they may alias), so load, store, load, ... waited on every load (round 15).
  template <bool kSwY = false, bool kSwX = false>
  __device__ __forceinline__ void y_plus_dx(unsigned char* Y, const unsigned char* X, const float (&yacc)[32],
                                            float Dh) const {
    uint32_t xv[16];
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half)
        xv[2 * j + half] = *reinterpret_cast<const uint32_t*>(
            X + (kSwX ? tma::sw128_offset(t_h[half], 8 * j + 2 * qq) : TX::offset(t_h[half], 8 * j + 2 * qq)));
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const float v0 = yacc[4 * j + 2 * half] + Dh * mma::bf16_lo(xv[2 * j + half]);
        const float v1 = yacc[4 * j + 2 * half + 1] + Dh * mma::bf16_hi(xv[2 * j + half]);
        const int off = kSwY ? tma::sw128_offset(t_h[half], 8 * j + 2 * qq) : TX::offset(t_h[half], 8 * j + 2 * qq);
        *reinterpret_cast<uint32_t*>(Y + off) = mma::pack_bf16x2(v0, v1);
      }
  }
  // Y = r y + D x with X and Y in TMA's 128-byte swizzle and rows in token_of_row_blocks order
  // (variant 7): x by 4 ldmatrix, Y by 4 stmatrix of four 8 x 8 blocks each (was 16 loads and 16
  // stores of 4 bytes). Matrix m of step jq is this thread's half m % 2 (token block rows),
  // columns 8 (2 jq + m / 2) ..; lane l gives the address of row l % 8 of matrix l / 8. Y is not X.
  __device__ __forceinline__ void y_plus_dx_ldsm(unsigned char* Y, const unsigned char* X, const float (&yacc)[32],
                                                 float Dh, float r0, float r1) const {
    static_assert(kBlockOrder, "the TMA tiles' row order");
    const int lane = lt & 31, m = lane >> 3, tok = token_of_row_blocks(16 * w + 8 * (m & 1) + (lane & 7));
    uint32_t xv[4][4];
#pragma unroll
    for (int jq = 0; jq < 4; ++jq) mma::ldsm_x4(xv[jq], X + tma::sw128_offset(tok, 8 * (2 * jq + (m >> 1))));
#pragma unroll
    for (int jq = 0; jq < 4; ++jq) {
      uint32_t v[4];
#pragma unroll
      for (int mm = 0; mm < 4; ++mm) {
        const int half = mm & 1, i = 4 * (2 * jq + (mm >> 1)) + 2 * half;
        const float r = half ? r1 : r0;
        v[mm] = mma::pack_bf16x2(r * yacc[i] + Dh * mma::bf16_lo(xv[jq][mm]),
                                 r * yacc[i + 1] + Dh * mma::bf16_hi(xv[jq][mm]));
      }
      mma::stsm_x4(Y + tma::sw128_offset(tok, 8 * (2 * jq + (m >> 1))), v);
    }
  }
  // The first len rows of the y tile Y to dst (row pitch ld): 16 bytes per thread and step (whole
  // 32-byte sectors; the accumulator layout would store 4 bytes per thread, half sectors). All of
  // the thread's shared-memory loads first, then the stores: one load latency, not one per store
  // (the per-row form compiled to load, wait, store, four times over, ~19 % of the consumers'
  // stall samples in round 14's profile). Stored through store16: the plain assignment of v[k]
  // compiled to four 32-bit stores and made variant 2 8 % slower at 64K (round 15).
  __device__ __forceinline__ void copy_out_y(bf16_t* dst, int64_t ld, const unsigned char* Y, int len) const {
    constexpr int kSteps = kQ * kP / 8 / kThreads;
    uint4 v[kSteps];
#pragma unroll
    for (int k = 0; k < kSteps; ++k) {
      const int i = lt + k * kThreads;
      v[k] = *reinterpret_cast<const uint4*>(Y + TX::offset(i / (kP / 8), 8 * (i % (kP / 8))));
    }
#pragma unroll
    for (int k = 0; k < kSteps; ++k) {
      const int i = lt + k * kThreads, r = i / (kP / 8), cg = i % (kP / 8);
      if (r < len) store16(dst + r * ld + 8 * cg, v[k]);  // one 128-bit store (see store16)
    }
  }
};

template <int N>
__global__ void __launch_bounds__(kThreads, 2) ssd_fwd_wg_kernel(const SsdArgs a) {
  using L = WgLayout<N>;
  using TX = typename L::TX;
  using TN = typename L::TN;
  using TH = typename L::TH;
  unsigned char* sm = mma::dynamic_smem();
  unsigned char* Xs0 = sm + L::xs;  // chunk c's x (then y) at + ((c - c_begin) % 3) TX::kBytes
  unsigned char* Bs0 = sm + L::bs;  // chunk c's B at + ((c - c_begin) & 1) TN::kBytes
  unsigned char* Cs = sm + L::cs;
  unsigned char* Hs = sm + L::hs;
  unsigned char* Xw = sm + L::xw;
  auto* rawv = reinterpret_cast<uint32_t*>(sm + L::raw);  // chunk parity u at + u Q
  auto* docv = reinterpret_cast<int*>(sm + L::doc);       // chunk parity u at + u (Q + 4)
  auto* rawf = reinterpret_cast<float*>(sm + L::rawf);
  auto* bndf = reinterpret_cast<int*>(sm + L::bndf);
  auto* scans = reinterpret_cast<ChunkScan<kQ>*>(sm + L::scan);  // chunk parity u at + u

  const int h = blockIdx.x, seg = blockIdx.y, b = blockIdx.z;
  const int g = h / (a.H / a.G);
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31;
  const WalkThread<N> th(tid);
  const float A = -expf(load_any(a.A_log, a.A_type, h));
  const float Dh = a.D ? load_any(a.D, a.D_type, h) : 0.f;
  const float bias = a.dt_bias ? load_any(a.dt_bias, a.bias_type, h) : 0.f;
  const int T = a.T;
  const int c_begin = seg * a.seg_chunks, c_end = min(a.nchunks, c_begin + a.seg_chunks);
  const int64_t rowb = static_cast<int64_t>(b) * T;
  const auto* xg = static_cast<const bf16_t*>(a.x) + static_cast<int64_t>(h) * kP;
  const auto* Bg = static_cast<const bf16_t*>(a.Bm) + static_cast<int64_t>(g) * N;
  const auto* Cg = static_cast<const bf16_t*>(a.Cm) + static_cast<int64_t>(g) * N;
  auto* yg = static_cast<bf16_t*>(a.y) + static_cast<int64_t>(h) * kP;

  auto x_tile = [&](int c) { return Xs0 + (c - c_begin) % 3 * TX::kBytes; };
  auto b_tile = [&](int c) { return Bs0 + ((c - c_begin) & 1) * TN::kBytes; };
  auto issue_xb = [&](int c) {
    const int64_t t0 = rowb + static_cast<int64_t>(c) * kQ;
    const int valid = min(kQ, T - c * kQ);
    load_core_tile_block<kQ, kP>(x_tile(c), xg, a.ld_x, t0, valid);
    load_core_tile_block<kQ, N>(b_tile(c), Bg, a.ld_B, t0, valid);
  };
  auto issue_c = [&](int c) {
    load_core_tile_block<kQ, N, true>(Cs, Cg, a.ld_C, rowb + static_cast<int64_t>(c) * kQ, min(kQ, T - c * kQ));
  };
  // y of chunk c, staged in its x buffer, to global memory.
  auto copy_out_y = [&](int c) {
    th.copy_out_y(yg + (rowb + static_cast<int64_t>(c) * kQ) * a.ld_y, a.ld_y, x_tile(c), min(kQ, T - c * kQ));
  };
  // Raw dt of chunk c as the 4-byte words holding them (a bf16 / f16 element shares its word with a
  // neighbour; raw_word() picks the half), and the doc ids at t - 1 .. t + Q - 1: cp.async, so no
  // thread waits on these scattered loads.
  const int dt_bytes = a.dt_type == kF32 ? 4 : 2;
  auto dt_addr = [&](int t) {  // byte address of dt at position t (< T) of this row and head
    return static_cast<const unsigned char*>(a.dt) + ((rowb + t) * a.ld_dt + h) * dt_bytes;
  };
  auto issue_raw = [&](int c, int u) {
    const int t = c * kQ + (tid & (kQ - 1));
    if (tid < kQ) {
      const uintptr_t p = reinterpret_cast<uintptr_t>(dt_addr(min(t, T - 1))) & ~uintptr_t{3};
      mma::cp_async<4>(rawv + u * kQ + tid, reinterpret_cast<const void*>(p), t < T);
    } else if (a.doc) {
      const int32_t* d = a.doc + static_cast<int64_t>(b) * a.ld_doc;
      mma::cp_async<4>(docv + u * (kQ + 4) + 1 + (tid - kQ), d + min(t, T - 1), t < T);
      if (tid == kQ) mma::cp_async<4>(docv + u * (kQ + 4), d + max(c * kQ - 1, 0), c * kQ >= 1);
    }
  };
  auto raw_word = [&](uint32_t word, int t) {
    if (a.dt_type == kF32) return __uint_as_float(word);
    const bool hi = (reinterpret_cast<uintptr_t>(dt_addr(min(t, T - 1))) & 2) != 0;
    const uint32_t bits = hi ? word >> 16 : word & 0xffffu;
    if (a.dt_type == kBF16) return __uint_as_float(bits << 16);
    __half v;
    const uint16_t b16 = static_cast<uint16_t>(bits);
    memcpy(&v, &b16, 2);
    return __half2float(v);
  };
  // Warp 0: the scan of chunk c (its raw words and doc ids landed) into scans[c & 1].
  auto scan_chunk = [&](int c) {
    const int u = c & 1;
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int e = lane + 32 * k, t = c * kQ + e;
      rawf[e] = t < T ? raw_word(rawv[u * kQ + e], t) : 0.f;
      bndf[e] = a.doc && t > 0 && t < T && docv[u * (kQ + 4) + 1 + e] != docv[u * (kQ + 4) + e] ? 1 : 0;
    }
    __syncwarp();
    chunk_scan_warp<kQ, false>(scans[u], rawf, bndf, min(kQ, T - c * kQ), A, bias, a.dt_min, a.dt_max);
  };

  float hacc[N / 2];
  const int64_t state_off = (static_cast<int64_t>(b) * a.H + h) * kP * N;
  th.load_state(hacc, a.nseg > 1 ? a.ws_seg + seg_state_offset(a, 0, b, seg, h) : (a.h0 ? a.h0 + state_off : nullptr));
  th.store_state_bf16(Hs, hacc);  // read by the next chunk's Yo product after barrier (A)
  issue_xb(c_begin);
  issue_c(c_begin);
  issue_raw(c_begin, c_begin & 1);
  if (c_begin + 1 < c_end) issue_raw(c_begin + 1, (c_begin + 1) & 1);
  mma::cp_async_commit();
  mma::cp_async_wait<0>();
  __syncthreads();
  if (w == 0) scan_chunk(c_begin);  // then one chunk ahead, in the loop

  const uint64_t desc_c = wg::make_desc(wg::smem_addr(Cs), TN::kKMajorLbo, TN::kKMajorSbo);
  const uint64_t desc_h = wg::make_desc(wg::smem_addr(Hs), TH::kKMajorLbo, TH::kKMajorSbo);
  const uint64_t desc_xw = wg::make_desc(wg::smem_addr(Xw), TX::kMnMajorLbo, TX::kMnMajorSbo);

  for (int c = c_begin; c < c_end; ++c) {
    const bool has_next = c + 1 < c_end;
    mma::cp_async_wait<0>();
    wg::fence_async_smem();  // the copies are read by wgmma (async proxy)
    __syncthreads();         // (A)
    const ChunkScan<kQ>& S = scans[c & 1];
    if (c > c_begin) copy_out_y(c - 1);  // its buffer is next written by the copies issued in chunk c+1

    // G = C Bᵀ and Yo = C Hᵀ, two groups, issued before the next chunk's copies (the warpgroup's
    // first wgmma waits for all four warps; ~20 cp.async per thread would delay it).
    unsigned char* X = x_tile(c);
    const unsigned char* Bt = b_tile(c);
    const uint64_t desc_bk = wg::make_desc(wg::smem_addr(Bt), TN::kKMajorLbo, TN::kKMajorSbo);
    float gacc[32], yacc[32];
    th.issue_c_product(gacc, desc_c, desc_bk, TN::kKMajorStep);
    th.issue_c_product(yacc, desc_c, desc_h, TH::kKMajorStep);
    // x of chunk c+1 into the buffer of chunk c-2 (its y copied out at the start of chunk c-1), B
    // into chunk c-1's (whose products all completed).
    if (has_next) issue_xb(c + 1);
    if (c + 2 < c_end) issue_raw(c + 2, c & 1);  // slot last read by the scan of chunk c, in chunk c-1
    mma::cp_async_commit();

    scale_rows_core<kThreads, false>(Xw, X, S.wdt, tid);  // x w dt for the state update
    wg::fence_async_smem();

    uint32_t mf[4][4];
    wg::wait<1>();
    wg::pin(gacc);
    m_fragments(mf, gacc, S, th.w, th.qq, th.t_h);
    wg::wait<0>();
    wg::pin(yacc);
    th.issue_y(yacc, mf, S, X);
    __syncthreads();  // (C)
    if (has_next) issue_c(c + 1);  // C was read only by G and Yo, complete in every thread before (C)
    mma::cp_async_commit();

    th.issue_state_update(hacc, S.gamma, desc_xw, Bt);

    // y += D x, in place of x (the y product, the last reader of x, has completed); copied out at
    // the start of the next chunk.
    wg::wait<1>();
    wg::pin(yacc);
    th.y_plus_dx(X, X, yacc, Dh);
    // Warp 0 scans the next chunk while the state update runs; scans[(c + 1) & 1] was last read in
    // chunk c-1.
    if (w == 0 && has_next) scan_chunk(c + 1);
    wg::wait<0>();
    wg::pin(hacc);
    if (has_next) th.store_state_bf16(Hs, hacc);  // every read of Hs for this chunk completed before (C)
  }
  __syncthreads();
  copy_out_y(c_end - 1);
  if (seg == a.nseg - 1 && a.h_final) th.store_state(a.h_final + state_off, hacc);
}


// ---- Variant 2: the warp-specialised walk ------------------------------------------------------
//
// One block per (head pair, segment, row): two consumer warpgroups walk the two heads (2 hp and
// 2 hp + 1, one SSM group: they share every B and C tile) with the per-chunk products of the walk
// above, and the producer warpgroup fills a ring of kStages stages ahead of them: per chunk both
// heads' x tiles (its warp 0), B (warp 1), C with rows permuted (warp 2), and both heads' chunk
// scans (warp 3, from dt and doc ids it loads one chunk ahead into registers), so no consumer
// thread issues a copy or runs a scan. Stage s is handed over by two mbarriers: full[s] (count
// 128: the copying warps' lanes arrive once their copies of the chunk landed, waited and fenced
// for the async proxy - one chunk late, so the copies fly while they issue the next stage's - and
// the scan warp's once the scans are written) and empty[s] (all 256 consumer threads arrive once
// their last read of the stage, the state update's B, completed). The consumers never wait for
// each other: each warpgroup has two named barriers per chunk (id 1 + j, 128 threads), so one
// warpgroup's M math, epilogue and state copy run under the other's wgmma.
// Per consumer and chunk:
//   wait full[s]; (A) -> y of the previous chunk copied out of Ys; G, Yo issued; x w dt into Xw;
//   M from G; y = eoff Yo + M x issued; (C) -> H = gamma H + (x w dt)ᵀ B issued; y + D x into Ys;
//   arrive empty[s]; the state's bf16 copy for the next chunk.
// Three warpgroups: the two consumers, then the producer's, so that setmaxnreg can move registers:
// the producer keeps 72, the consumers take 216 (64,512 of 65,536; with nine warps the launch
// bound's 168 each made the N = 128 kernel spill; ptxas -v: no spills at 72 / 216, a few bytes
// with the producer at 56 or 64).
constexpr int kStages = 3, kWsThreads = 3 * kThreads, kProducerRegs = 72, kConsumerRegs = 216;

template <int N, bool kTmaY = false>
struct WsLayout {
  using TX = wg::CoreTile<kQ, kP>;
  using TN = wg::CoreTile<kQ, N>;
  using TH = wg::CoreTile<kP, N>;
  // One stage: x of both heads, B, C (rows permuted), both heads' scans of the chunk.
  static constexpr size_t st_x = 0;
  static constexpr size_t st_b = st_x + 2 * TX::kBytes;
  static constexpr size_t st_c = st_b + TN::kBytes;
  static constexpr size_t st_scan = st_c + TN::kBytes;
  static constexpr size_t stage = st_scan + 2 * sizeof(ChunkScan<kQ>);
  // Per consumer: the bf16 state entering the chunk, x w dt, y staged for the copy out.
  static constexpr size_t c_h = 0;
  static constexpr size_t c_xw = c_h + TH::kBytes;
  static constexpr size_t c_y = c_xw + TX::kBytes;
  static constexpr size_t consumer = c_y + TX::kBytes;
  // kTmaY (variant 4): the consumers' regions last, each y tile 1024-byte aligned for the TMA
  // store's swizzle (a run-time pad of up to 1 KB: the dynamic base's alignment is not promised).
  static constexpr size_t stages_end = kStages * stage;
  static constexpr size_t raw = kTmaY ? stages_end : stages_end + 2 * consumer;  // producer: raw dt [2][Q], boundary flags [Q]
  static constexpr size_t bnd = raw + 2 * kQ * 4;
  static constexpr size_t bars = bnd + kQ * 4;  // full[kStages], empty[kStages]
  static constexpr size_t bars_end = bars + 2 * kStages * 8;
  static constexpr size_t consumers = kTmaY ? bars_end : stages_end;
  static constexpr size_t total = kTmaY ? consumers + 1024 + 2 * consumer : bars_end;
  static_assert(stage % 16 == 0 && consumer % 1024 == 0 && c_y % 1024 == 0 && bars % 8 == 0, "aligned regions");
};

// Variant 5 (TMA loads): every offset from the dynamic base rounded up to 1024 bytes at run time
// (a pad of up to 1 KB in total). One stage: x of both heads, B, C in TMA's 128-byte swizzle
// (kSwAtom-byte atom columns; C's 8-row blocks in token_block_of_row_block order), both heads'
// scans; per consumer the bf16 state (core matrices), x w dt and y (both swizzled); then the
// producer's scan scratch and the barriers.
template <int N, bool kScan2 = false, class Scan = ChunkScan<kQ>>
struct WsTmaLayout {
  using TX = wg::CoreTile<kQ, kP>;
  using TN = wg::CoreTile<kQ, N>;
  using TH = wg::CoreTile<kP, N>;
  static constexpr uint32_t kBcBytes = N / 64 * kSwAtom;  // a B or C tile
  static constexpr size_t st_x = 0;
  static constexpr size_t st_b = st_x + 2 * kSwAtom;
  static constexpr size_t st_c = st_b + kBcBytes;
  static constexpr size_t st_scan = st_c + kBcBytes;
  static constexpr size_t stage = (st_scan + 2 * sizeof(Scan) + 1023) / 1024 * 1024;
  static constexpr uint32_t kStageTx = 2 * kSwAtom + 2 * kBcBytes;  // bytes the loads of a stage bring
  static constexpr size_t c_h = 0;
  static constexpr size_t c_xw = c_h + TH::kBytes;
  static constexpr size_t c_y = c_xw + kSwAtom;
  static constexpr size_t consumer = c_y + kSwAtom;
  static constexpr size_t consumers = kStages * stage;
  static constexpr size_t raw = consumers + 2 * consumer;
  static constexpr size_t bnd = raw + 2 * kQ * 4;
  static constexpr size_t bars = bnd + (kScan2 ? 2 : 1) * kQ * 4;  // kScan2: boundary flags per scan warp
  static constexpr size_t total = bars + 2 * kStages * 8 + 1024;
  static_assert(N % 64 == 0 && consumer % 1024 == 0 && c_xw % 1024 == 0 && bars % 8 == 0, "aligned regions");
  static_assert(total <= 227 * 1024, "fits sm_90's shared memory per block");
};

// The tensor maps of variant 4 (y) and 5 (y, and the loads of x, B and C), one kernel parameter.
struct WsMaps {
  tma::Map y, x, b, c;
};

// kEarlyG: each chunk's G = C Bᵀ (independent of the state) is issued in the chunk before, right
// after the state update, so it runs under the epilogue and the M math can start as soon as the
// chunk's Yo is issued.
// kPipe (variant 3; implies early G): the consumer's chunk reordered so that every stretch of its
// own work runs under a wgmma group of the same chunk (pipelined consumers, below).
// kTmaY (variant 4; with kPipe): y leaves through TMA stores of maps.y (one thread per consumer
// issues each tile) instead of the consumers' own copy-out.
// kTmaLd (variant 5; with kTmaY): the producer's x, B and C tiles come by TMA loads (maps.x, .b,
// .c; one thread issues a stage's 20 boxes, its full barrier counting their bytes) into TMA's
// 128-byte swizzle, which the wgmma descriptors read directly; C's rows in token_of_row_blocks
// order (8-row boxes), x w dt swizzled too.
// kScan2 (variant 6; with kTmaLd): each head's chunk scan on its own producer warp (warps 2 and 3),
// not both on warp 3.
// kFactor (variant 7; with kScan2): the scans in factored form (FactoredScan): the state kept
// scaled, rescaled only when its scale runs low or at a boundary; in chunks without a boundary
// and of moderate decay, M = G ∘ fcol (one multiplication per element, no exponential) and y's
// row factors applied in the epilogue.
template <int N, bool kEarlyG, bool kPipe, bool kTmaY = false, bool kTmaLd = false, bool kScan2 = false,
          bool kFactor = false>
__global__ void __launch_bounds__(kWsThreads, 1)
    ssd_fwd_ws_kernel(const SsdArgs a, const __grid_constant__ WsMaps maps) {
  static_assert(!kTmaY || kPipe, "the TMA store of y is variant 3's");
  static_assert(!kTmaLd || kTmaY, "the TMA loads are variant 4's");
  static_assert(!kScan2 || kTmaLd, "two scan warps need the TMA loads' free producer warps");
  static_assert(!kFactor || kScan2, "the factored scans run on variant 6's scan warps");
  using Scan = std::conditional_t<kFactor, FactoredScan<kQ>, ChunkScan<kQ>>;
  using L = std::conditional_t<kTmaLd, WsTmaLayout<N, kScan2, Scan>, WsLayout<N, kTmaY>>;
  using TX = typename L::TX;
  using TN = typename L::TN;
  using TH = typename L::TH;
  unsigned char* sm = mma::dynamic_smem();
  if constexpr (kTmaLd) sm += (1024u - (wg::smem_addr(sm) & 1023u)) & 1023u;  // the swizzled tiles' alignment
  auto* full = reinterpret_cast<uint64_t*>(sm + L::bars);
  uint64_t* empty = full + kStages;
  const int hp = blockIdx.x, seg = blockIdx.y, b = blockIdx.z;
  const int h0 = 2 * hp, g = h0 / (a.H / a.G);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int T = a.T;
  const int c_begin = seg * a.seg_chunks, c_end = min(a.nchunks, c_begin + a.seg_chunks), nck = c_end - c_begin;
  const int64_t rowb = static_cast<int64_t>(b) * T;
  const auto* Bg = static_cast<const bf16_t*>(a.Bm) + static_cast<int64_t>(g) * N;
  const auto* Cg = static_cast<const bf16_t*>(a.Cm) + static_cast<int64_t>(g) * N;
  auto stage_of = [&](int k) { return sm + (k % kStages) * L::stage; };
  if (tid == 0)
    for (int s = 0; s < kStages; ++s) {
      mma::mbar_init(&full[s], kTmaLd ? 1 + (kScan2 ? 64 : 32) : kThreads);  // the producer warpgroup's threads (kTmaLd: the
                                                             // loading thread and the scan warp)
      mma::mbar_init(&empty[s], 2 * kThreads);     // every consumer thread
    }
  __syncthreads();

  if (warp >= 2 * kThreads / 32) {  // the producer warpgroup: warp pw fills its part of each stage
    wg::setmaxnreg_dec<kProducerRegs>();
    const int pw = warp - 2 * kThreads / 32;
    auto wait_empty = [&](int k) {
      if (k >= kStages) mma::mbar_wait(&empty[k % kStages], static_cast<unsigned>((k / kStages - 1) & 1));
    };
    // The chunk scans: both heads on warp 3, or (kScan2) head h0 + pw - 2 on warps 2 and 3.
    if (kScan2 ? pw >= 2 : pw == 3) {
      constexpr int kH = kScan2 ? 1 : 2;     // heads per scan warp
      const int hj0 = kScan2 ? pw - 2 : 0;  // its first head, h0 + hj0
      float Av[kH], biasv[kH];
#pragma unroll
      for (int jj = 0; jj < kH; ++jj) Av[jj] = -expf(load_any(a.A_log, a.A_type, h0 + hj0 + jj));
#pragma unroll
      for (int jj = 0; jj < kH; ++jj) biasv[jj] = a.dt_bias ? load_any(a.dt_bias, a.bias_type, h0 + hj0 + jj) : 0.f;
      // this warp's scratch: raw dt of head jj at rawf + jj Q, the boundary flags at bndf
      auto* rawf = reinterpret_cast<float*>(sm + L::raw) + hj0 * kQ;
      auto* bndf = reinterpret_cast<int*>(sm + L::bnd) + hj0 * kQ;
      const int32_t* docr = a.doc ? a.doc + static_cast<int64_t>(b) * a.ld_doc : nullptr;
      // Raw dt of the warp's heads and the boundary flags of chunk c, tokens lane and lane + 32:
      // loaded one chunk ahead (the loads fly while this chunk is scanned).
      float dtv[kH][2];
      int bv[2];
      auto fetch = [&](int c) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int t = c * kQ + lane + 32 * e, tc = min(t, T - 1);
          const int64_t i = (rowb + tc) * a.ld_dt + h0 + hj0;
#pragma unroll
          for (int jj = 0; jj < kH; ++jj) dtv[jj][e] = t < T ? load_any(a.dt, a.dt_type, i + jj) : 0.f;
          bv[e] = docr && t > 0 && t < T && docr[tc] != docr[tc - 1] ? 1 : 0;
        }
      };
      fetch(c_begin);
      float gam = 1.f;  // kFactor: the state's scale entering the chunk (FactoredScan)
      for (int k = 0; k < nck; ++k) {
        const int c = c_begin + k;
        wait_empty(k);
        __syncwarp();  // the previous chunk's scans finished reading rawf / bndf
#pragma unroll
        for (int e = 0; e < 2; ++e) {
#pragma unroll
          for (int jj = 0; jj < kH; ++jj) rawf[jj * kQ + lane + 32 * e] = dtv[jj][e];
          bndf[lane + 32 * e] = bv[e];
        }
        __syncwarp();
        if (k + 1 < nck) fetch(c + 1);
        const int valid = min(kQ, T - c * kQ);
        auto* scans = reinterpret_cast<Scan*>(stage_of(k) + L::st_scan);
        if constexpr (kFactor)
          chunk_scan_factored_warp<kQ>(scans[hj0], rawf, bndf, valid, Av[0], biasv[0], a.dt_min, a.dt_max, gam);
        else
#pragma unroll
          for (int jj = 0; jj < kH; ++jj)
            chunk_scan_warp<kQ, false>(scans[hj0 + jj], rawf + jj * kQ, bndf, valid, Av[jj], biasv[jj], a.dt_min,
                                       a.dt_max);
        mma::mbar_arrive(&full[k % kStages]);  // releases the scans' writes
      }
      return;
    }
    if constexpr (kTmaLd) {  // lane 0 of warp 0 issues every load; warps 1 and 2 (kScan2: 1) have nothing to do
      if (pw != 0 || lane != 0) return;
      for (int k = 0; k < nck; ++k) {
        const int c = c_begin + k, t0 = c * kQ;
        unsigned char* st = stage_of(k);
        uint64_t* bar = &full[k % kStages];
        wait_empty(k);
        tma::arrive_expect_tx(bar, L::kStageTx);
        tma::load_3d(&maps.x, st + L::st_x, bar, h0 * kP, t0, b);
        tma::load_3d(&maps.x, st + L::st_x + kSwAtom, bar, (h0 + 1) * kP, t0, b);
#pragma unroll
        for (int at = 0; at < N / 64; ++at) {
          tma::load_3d(&maps.b, st + L::st_b + at * kSwAtom, bar, g * N + 64 * at, t0, b);
#pragma unroll
          for (int rb = 0; rb < 8; ++rb)
            tma::load_3d(&maps.c, st + L::st_c + at * kSwAtom + rb * 1024, bar, g * N + 64 * at,
                         t0 + 8 * token_block_of_row_block(rb), b);
        }
      }
      return;  // the loads complete on the full barriers, which the consumers wait for
    }
    // Warps 0, 1, 2 of the producer: both heads' x tiles, B, C (rows permuted). Each hands a stage
    // over one chunk late, once its copies landed (waited and fenced for the async proxy), so the
    // copies fly while it issues the next stage's.
    const auto* xg = static_cast<const bf16_t*>(a.x) + static_cast<int64_t>(h0) * kP;
    for (int k = 0; k < nck; ++k) {
      const int c = c_begin + k;
      unsigned char* st = stage_of(k);
      wait_empty(k);
      const int64_t t0 = rowb + static_cast<int64_t>(c) * kQ;
      const int valid = min(kQ, T - c * kQ);
      if (pw == 0) {
        load_core_tile_warp<kQ, kP>(st + L::st_x, xg, a.ld_x, t0, valid, lane);
        load_core_tile_warp<kQ, kP>(st + L::st_x + TX::kBytes, xg + kP, a.ld_x, t0, valid, lane);
      } else if (pw == 1) {
        load_core_tile_warp<kQ, N>(st + L::st_b, Bg, a.ld_B, t0, valid, lane);
      } else {
        load_core_tile_warp<kQ, N, true>(st + L::st_c, Cg, a.ld_C, t0, valid, lane);
      }
      mma::cp_async_commit();
      if (k >= 1) arrive_when_landed<1>(&full[(k - 1) % kStages]);
    }
    arrive_when_landed<0>(&full[(nck - 1) % kStages]);
    return;  // no copy in flight
  }

  // A consumer warpgroup: head h = h0 + j; w is the warp within the warpgroup.
  wg::setmaxnreg_inc<kConsumerRegs>();
  const int j = warp / 4, h = h0 + j;
  const WalkThread<N, kTmaLd> th(tid - kThreads * j);
  const float Dh = a.D ? load_any(a.D, a.D_type, h) : 0.f;
  unsigned char* cbase = sm + L::consumers;
  if constexpr (kTmaY && !kTmaLd) cbase += (1024u - (wg::smem_addr(cbase) & 1023u)) & 1023u;  // the y tiles' alignment
  unsigned char* cb = cbase + j * L::consumer;
  unsigned char* Hs = cb + L::c_h;
  unsigned char* Xw = cb + L::c_xw;
  unsigned char* Ys = cb + L::c_y;
  auto* yg = static_cast<bf16_t*>(a.y) + static_cast<int64_t>(h) * kP;
  // y of chunk c out of Ys (written by all four warps, each fenced for the async proxy under
  // kTmaY, and a barrier since). kTmaY: thread 0 issues one store (rows past T are clipped) and
  // waits for its read of Ys before the barrier after which Ys is next written.
  auto copy_out_y = [&](int c) {
    if constexpr (kTmaY) {
      if (th.lt == 0) {
        tma::store_3d(&maps.y, Ys, h * kP, c * kQ, b);
        tma::commit();
      }
    } else {
      th.copy_out_y(yg + (rowb + static_cast<int64_t>(c) * kQ) * a.ld_y, a.ld_y, Ys, min(kQ, T - c * kQ));
    }
  };
  float hacc[N / 2];
  const int64_t state_off = (static_cast<int64_t>(b) * a.H + h) * kP * N;
  th.load_state(hacc, a.nseg > 1 ? a.ws_seg + seg_state_offset(a, 0, b, seg, h) : (a.h0 ? a.h0 + state_off : nullptr));
  th.store_state_bf16(Hs, hacc);  // read by the next chunk's Yo product after barrier (A)
  const uint64_t desc_h = wg::make_desc(wg::smem_addr(Hs), TH::kKMajorLbo, TH::kKMajorSbo);
  // x w dt as the state update's MN-major A operand (kTmaLd: swizzled, one atom column; K groups of
  // 8 rows 1024 bytes apart, k steps of 16 rows)
  const uint64_t desc_xw = kTmaLd ? wg::make_desc_sw128(wg::smem_addr(Xw), kSwAtom, 1024)
                                  : wg::make_desc(wg::smem_addr(Xw), TX::kMnMajorLbo, TX::kMnMajorSbo);
  constexpr uint32_t kStepXw = kTmaLd ? 2048 : TX::kMnMajorStep;
  const int bar = 1 + j;
  auto wait_full = [&](int k) { mma::mbar_wait(&full[k % kStages], static_cast<unsigned>((k / kStages) & 1)); };
  float gacc[32];
  // C of a stage as the K-major A operand of G and Yo (kTmaLd: swizzled, 8-row groups 1024 bytes
  // apart; LBO unused)
  auto c_desc = [&](const unsigned char* st) {
    return kTmaLd ? wg::make_desc_sw128(wg::smem_addr(st + L::st_c), 16, 1024)
                  : wg::make_desc(wg::smem_addr(st + L::st_c), TN::kKMajorLbo, TN::kKMajorSbo);
  };
  auto issue_g = [&](int k) {  // G = C Bᵀ of chunk k (its stage full)
    unsigned char* st = stage_of(k);
    const uint64_t desc_bk = kTmaLd ? wg::make_desc_sw128(wg::smem_addr(st + L::st_b), 16, 1024)
                                    : wg::make_desc(wg::smem_addr(st + L::st_b), TN::kKMajorLbo, TN::kKMajorSbo);
    th.template issue_c_product<kTmaLd, kTmaLd>(gacc, c_desc(st), desc_bk, TN::kKMajorStep);
  };
  if constexpr (kPipe) {
    // Variant 3. Per chunk k (Hs = the bf16 state entering it, Xw = its x w dt, gacc = its G):
    //   (A) -> Yo = C Hsᵀ and H = gamma H + (x w dt)ᵀ B issued together; the previous chunk's y
    //   copied out and M built from G under them; Yo waited, y = eoff Yo + M x issued; H waited;
    //   (B) -> the next chunk's G issued; under it and y: the state's bf16 copy and the next
    //   chunk's x w dt (their last readers, Yo and H, completed in every warp before (B)), then
    //   y + D x into Ys (every warp's copy-out of Ys finished before (B)); arrive empty[s].
    // The state's dependency chain per chunk is H issue -> H wait -> (B) -> bf16 copy -> (A); the
    // M math, copy-out and epilogue no longer sit between a wait and the next issue.
    auto scale_xw = [&](int kk) {  // x w dt of chunk kk (its stage full) into Xw
      unsigned char* stk = stage_of(kk);
      const Scan& Sk = reinterpret_cast<const Scan*>(stk + L::st_scan)[j];
      if constexpr (kTmaLd)
        scale_rows_sw128<kThreads>(Xw, stk + L::st_x + j * kSwAtom, Sk.wdt, th.lt);
      else
        scale_rows_core<kThreads, false>(Xw, stk + L::st_x + j * TX::kBytes, Sk.wdt, th.lt);
      wg::fence_async_smem();
    };
    wait_full(0);
    scale_xw(0);
    issue_g(0);
    wg::wait<0>();
    wg::pin(gacc);
    float gam = 1.f;  // kFactor: the scale of the state in hacc (the last chunk's Gam_out)
    int k = 0;
    do {  // at least one chunk per block, as below
      const int c = c_begin + k;
      unsigned char* st = stage_of(k);
      mma::bar_sync(bar, kThreads);  // (A): Hs, Xw and Ys (the previous chunk's y) written by all four warps
      const Scan& S = reinterpret_cast<const Scan*>(st + L::st_scan)[j];
      const unsigned char* X = st + L::st_x + j * (kTmaLd ? kSwAtom : TX::kBytes);
      float yacc[32];
      th.template issue_c_product<kTmaLd, false>(yacc, c_desc(st), desc_h, TH::kKMajorStep);
      // kFactor: the chunk's kind and row factors (FactoredScan); r0, r1 y's in the epilogue; the
      // state scaled by rho only where the scan rescales it
      int kind = kExactChunk;
      float r0 = 1.f, r1 = 1.f, decay;
      bool scale_h = true;
      if constexpr (kFactor) {
        kind = S.fast;
        gam = S.gam;
        decay = S.rho;
        scale_h = decay != 1.f;
        r0 = S.pre[th.t_h[0]];
        r1 = S.pre[th.t_h[1]];
      } else {
        decay = S.gamma;
      }
      if constexpr (kTmaLd)  // B MN-major: atom columns of 64 states kSwAtom apart, 8-row groups 1024
        th.issue_state_update_desc(hacc, decay, desc_xw, kStepXw,
                                   wg::make_desc_sw128(wg::smem_addr(st + L::st_b), kSwAtom, 1024), 2048, scale_h);
      else
        th.issue_state_update(hacc, decay, desc_xw, st + L::st_b);
      if (k > 0) copy_out_y(c - 1);
      uint32_t mf[4][4];
      if constexpr (kFactor) {  // G of this chunk completed in the previous one
        if (kind == kFastChunk || kind == kFastMidChunk)
          m_fragments_factored<false>(mf, gacc, S, th.w, th.qq, th.t_h);
        else if (kind == kFastDocChunk)
          m_fragments_factored<true>(mf, gacc, S, th.w, th.qq, th.t_h);
        else
          m_fragments(mf, gacc, S, th.w, th.qq, th.t_h);
      } else {
        m_fragments(mf, gacc, S, th.w, th.qq, th.t_h);
      }
      wg::wait<1>();
      wg::pin(yacc);
      if constexpr (kFactor) {  // fast: y's rows scaled in the epilogue (Yo's masked to the first
                                // document where the chunk has a boundary, scaled by sigma about
                                // the middle); else Yo's rows here
        const float sigma = S.sigma;
        const float e0 = kind == kFastDocChunk ? (S.seg[th.t_h[0]] == 0 ? 1.f : 0.f) : kind == kFastMidChunk ? sigma : r0;
        const float e1 = kind == kFastDocChunk ? (S.seg[th.t_h[1]] == 0 ? 1.f : 0.f) : kind == kFastMidChunk ? sigma : r1;
        th.issue_y_rows(yacc, mf, e0, e1, kind != kFastChunk, wg::make_desc_sw128(wg::smem_addr(X), kSwAtom, 1024),
                        2048);
        if (kind == kExactChunk) r0 = r1 = 1.f;
      } else if constexpr (kTmaLd) {  // x MN-major: one atom column, 8-row groups 1024 bytes apart
        th.issue_y_desc(yacc, mf, S, wg::make_desc_sw128(wg::smem_addr(X), kSwAtom, 1024), 2048);
      } else {
        th.issue_y(yacc, mf, S, X);
      }
      wg::wait<1>();  // the state update (y may still run)
      wg::pin(hacc);
      if constexpr (kTmaY)
        if (k > 0 && th.lt == 0) tma::wait<0, true>();  // the previous chunk's y read out of Ys
      mma::bar_sync(bar, kThreads);  // (B): Yo and H (the last readers of Hs, Xw) done in all warps; Ys copied out
      // The next chunk's G; in the last chunk a dummy one on its own stage (still held), so that
      // every chunk has the same wgmma groups (see kEarlyG below).
      if (k + 1 < nck) wait_full(k + 1);
      issue_g(min(k + 1, nck - 1));
      if (k + 1 < nck) {
        if constexpr (kFactor)
          th.store_state_bf16_stsm(Hs, hacc);  // fenced with x w dt
        else
          th.store_state_bf16(Hs, hacc);
        scale_xw(k + 1);
      }
      wg::wait<1>();  // y
      wg::pin(yacc);
      if constexpr (kFactor)
        th.y_plus_dx_ldsm(Ys, X, yacc, Dh, r0, r1);
      else
        th.template y_plus_dx<kTmaY, kTmaLd>(Ys, X, yacc, Dh);
      if constexpr (kTmaY) wg::fence_async_smem();  // Ys for the TMA store after (A)
      wg::wait<0>();  // the next G: nothing in flight across the loop's back edge
      wg::pin(gacc);
      mma::mbar_arrive(&empty[k % kStages]);  // this chunk's stage: every read done
    } while (++k < nck);
    mma::bar_sync(bar, kThreads);
    copy_out_y(c_end - 1);
    if constexpr (kTmaY)
      if (th.lt == 0) tma::wait<0, false>();  // y written before the block's shared memory goes
    if (seg == a.nseg - 1 && a.h_final) {
      if constexpr (kFactor)  // the state is hacc times its scale
#pragma unroll
        for (int i = 0; i < N / 2; ++i) hacc[i] *= gam;
      th.store_state(a.h_final + state_off, hacc);
    }
    return;
  }
  if (kEarlyG) {
    wait_full(0);
    issue_g(0);
  }

  int k = 0;
  do {  // at least one chunk per block (nseg = ceil(nchunks / seg_chunks)); the compiler knows it
    const int c = c_begin + k, s = k % kStages;
    unsigned char* st = stage_of(k);
    if (!kEarlyG) wait_full(k);    // (with kEarlyG, waited before the previous chunk's G)
    mma::bar_sync(bar, kThreads);  // (A): Hs and Ys of the previous chunk written by all four warps
    if (k > 0 && !a.ws_late_copy) copy_out_y(c - 1);
    const ChunkScan<kQ>& S = reinterpret_cast<const ChunkScan<kQ>*>(st + L::st_scan)[j];
    const unsigned char* X = st + L::st_x + j * TX::kBytes;
    const unsigned char* Bt = st + L::st_b;
    const uint64_t desc_c = wg::make_desc(wg::smem_addr(st + L::st_c), TN::kKMajorLbo, TN::kKMajorSbo);
    float yacc[32];
    if (!kEarlyG) issue_g(k);
    th.issue_c_product(yacc, desc_c, desc_h, TH::kKMajorStep);
    // With ws_late_copy (opt-in; 2.91 against 3.05 ms at 64K, run13/c) the previous chunk's y goes
    // out under this Yo product instead of before it: Ys is next written by y_plus_dx, after (C).
    if (k > 0 && a.ws_late_copy) copy_out_y(c - 1);
    // x w dt for the state update; the previous chunk's state update (its last reader) completed before (A)
    scale_rows_core<kThreads, false>(Xw, X, S.wdt, th.lt);
    wg::fence_async_smem();
    uint32_t mf[4][4];
    wg::wait<1>();
    wg::pin(gacc);
    m_fragments(mf, gacc, S, th.w, th.qq, th.t_h);
    wg::wait<0>();
    wg::pin(yacc);
    th.issue_y(yacc, mf, S, X);
    mma::bar_sync(bar, kThreads);  // (C): x w dt complete; Yo (the last reader of Hs) done in all warps

    th.issue_state_update(hacc, S.gamma, desc_xw, Bt);
    if (kEarlyG) {  // the next chunk's G (M above consumed this one's accumulators); in the last
                    // chunk a dummy one on its own stage (still held), so that every chunk has the
                    // same wgmma groups: a conditional group makes ptxas insert a full wait
      if (k + 1 < nck) wait_full(k + 1);
      issue_g(min(k + 1, nck - 1));
    }

    // y + D x into Ys (copied out after the next chunk's (A); the copy of the previous chunk's y
    // finished before (C)).
    if (kEarlyG)
      wg::wait<2>();
    else
      wg::wait<1>();
    wg::pin(yacc);
    th.y_plus_dx(Ys, X, yacc, Dh);
    wg::wait<0>();  // the state update (and with kEarlyG the next chunk's G: nothing in flight across
                    // the loop's back edge, which makes ptxas serialise the wgmma)
    wg::pin(hacc);
    mma::mbar_arrive(&empty[s]);  // this thread's reads of the stage (and the warpgroup's wgmma) are done
    if (k + 1 < nck) th.store_state_bf16(Hs, hacc);
  } while (++k < nck);
  mma::bar_sync(bar, kThreads);
  copy_out_y(c_end - 1);
  if (seg == a.nseg - 1 && a.h_final) th.store_state(a.h_final + state_off, hacc);
}

}  // namespace

template <int N>
void launch_fwd_wg(const SsdArgs& a) {
  if (a.nseg > 1) launch_segment_states<kQ, kP, N>(a, 0, 1);
  using L = WgLayout<N>;
  auto kernel = ssd_fwd_wg_kernel<N>;
  static const bool attr_set = [&] {  // once per instantiation: keep host work off the hot path
    HLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(L::total)));
    return true;
  }();
  (void)attr_set;
  dim3 grid(static_cast<unsigned>(a.H), static_cast<unsigned>(a.nseg), static_cast<unsigned>(a.B));
  HLM_LAUNCH(kernel, grid, dim3(kThreads), L::total, a);
  HLM_CUDA_CHECK_LAUNCH();
}

template void launch_fwd_wg<128>(const SsdArgs&);
template void launch_fwd_wg<64>(const SsdArgs&);

// HLM_SSD_WS_EARLY_G=0 turns off variant 2's early G (on by default; A/B knob);
// HLM_SSD_WS_LATE_COPY=1 moves its y copy-out under the Yo product (opt-in; variant 3 does so too).
// Variant 4: variant 3 with y stored through TMA (a tensor map over y: columns H P, rows T, batch B;
// box 64 x 64 x 1), where TMA can describe y (16-byte aligned base and row pitch); else 3. Variant 5
// (the default on sm_90): 4 with x, B and C loaded by TMA too (maps of the same form; C's box 64 x 8
// x 1), where TMA can describe them; else 4. Variants 6 (a scan warp per head) and 7 (6 with the
// factored scans) fall back to 4 as 5 does.
// One warp-specialised kernel's launch, its shared-memory limit raised once per instantiation (on
// its first launch: host work stays off the hot path).
template <auto kKernel, class Layout>
void launch_ws_kernel(const SsdArgs& args, const WsMaps& maps) {
  static const bool attr_set = [] {
    HLM_CUDA_CHECK(cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(Layout::total)));
    return true;
  }();
  (void)attr_set;
  dim3 grid(static_cast<unsigned>(args.H / 2), static_cast<unsigned>(args.nseg), static_cast<unsigned>(args.B));
  HLM_LAUNCH(kKernel, grid, dim3(kWsThreads), Layout::total, args, maps);
  HLM_CUDA_CHECK_LAUNCH();
}

template <int N>
void launch_fwd_ws(const SsdArgs& a) {
  if (a.nseg > 1) launch_segment_states<kQ, kP, N>(a, 0, 1);
  using L = WsLayout<N>;
  using LT = WsLayout<N, true>;
  using LL = WsTmaLayout<N>;
  using LS = WsTmaLayout<N, true>;
  using LF = WsTmaLayout<N, true, FactoredScan<kQ>>;
  const char* env = std::getenv("HLM_SSD_WS_EARLY_G");  // read per call, as the other SSD knobs
  const bool early_g = !(env && std::atoi(env) == 0);
  WsMaps maps{};
  bool tma_y = false, tma_ld = false;
  // A [B][T][cols] bf16 row view (row pitch ld elements) as a 3-d tensor map with box 64 x rows x 1.
  auto encode = [&](tma::Map& m, const void* base, int64_t cols, int64_t ld, uint32_t rows) {
    const uint64_t pitch = static_cast<uint64_t>(ld) * 2;
    const uint64_t dims[3] = {static_cast<uint64_t>(cols), static_cast<uint64_t>(a.T), static_cast<uint64_t>(a.B)};
    const uint64_t strides[2] = {pitch, pitch * static_cast<uint64_t>(a.T)};
    const uint32_t box[3] = {64, rows, 1};
    return tma::encode_bf16_3d_sw128(m, base, dims, strides, box);
  };
  if (a.fwd_variant >= 4) {
    tma_y = encode(maps.y, a.y, a.H * kP, a.ld_y, kQ);
    tma_ld = a.fwd_variant >= 5 && tma_y && encode(maps.x, a.x, a.H * kP, a.ld_x, kQ) &&
             encode(maps.b, a.Bm, a.G * N, a.ld_B, kQ) && encode(maps.c, a.Cm, a.G * N, a.ld_C, 8);
    // Asked for by name: a once-per-process note, so that an A/B never times 3 as 4 (or 4 as 5) unseen.
    static bool warned = false;
    const bool short_of = a.fwd_variant >= 5 ? !tma_ld : !tma_y;
    const char* venv = !short_of || warned ? nullptr : std::getenv("HLM_SSD_FWD_VARIANT");
    if (venv && std::atoi(venv) == a.fwd_variant) {
      warned = true;
      std::fprintf(stderr,
                   "hybridlm: SSD forward variant %d: TMA cannot describe %s (a base or row pitch not a multiple "
                   "of 16 bytes); using variant %d\n",
                   a.fwd_variant, tma_y ? "x, B or C" : "y", tma_y ? 4 : 3);
    }
  }
  const char* late_env = std::getenv("HLM_SSD_WS_LATE_COPY");
  SsdArgs args = a;
  args.ws_late_copy = late_env && std::atoi(late_env) == 1;
  if (tma_ld && a.fwd_variant == 7)
    launch_ws_kernel<ssd_fwd_ws_kernel<N, true, true, true, true, true, true>, LF>(args, maps);
  else if (tma_ld && a.fwd_variant == 6)
    launch_ws_kernel<ssd_fwd_ws_kernel<N, true, true, true, true, true>, LS>(args, maps);
  else if (tma_ld)
    launch_ws_kernel<ssd_fwd_ws_kernel<N, true, true, true, true>, LL>(args, maps);
  else if (tma_y)
    launch_ws_kernel<ssd_fwd_ws_kernel<N, true, true, true>, LT>(args, maps);
  else if (a.fwd_variant >= 3)
    launch_ws_kernel<ssd_fwd_ws_kernel<N, true, true>, L>(args, maps);
  else if (early_g)
    launch_ws_kernel<ssd_fwd_ws_kernel<N, true, false>, L>(args, maps);
  else
    launch_ws_kernel<ssd_fwd_ws_kernel<N, false, false>, L>(args, maps);
}

template void launch_fwd_ws<128>(const SsdArgs&);
template void launch_fwd_ws<64>(const SsdArgs&);

}  // namespace hlm::cuda::ssd
