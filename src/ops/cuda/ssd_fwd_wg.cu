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
// and as MN-major operand of the state update. Per chunk, three barriers of the warpgroup:
//   (A) tiles and the bf16 state in     -> next tiles issued; G, Yo issued; warp 0 scans dt
//   (B) scan visible                    -> x w dt into shared memory; M from G; y = eoff Yo + M x
//                                          issued
//   (C) x w dt complete, Yo done        -> H = gamma H + (x w dt)ᵀ B issued; y stored; the state's
//                                          bf16 copy written for the next chunk
#include "ops/cuda/ssd_kernels.cuh"
#include "ops/cuda/wgmma.cuh"

namespace hlm::cuda::ssd {
namespace {

constexpr int kQ = 64, kP = 64, kThreads = 128;

template <int N>
struct WgLayout {
  using TX = wg::CoreTile<kQ, kP>;  // x, x w dt: [t][p]
  using TN = wg::CoreTile<kQ, N>;   // B, C: [t][n]
  using TH = wg::CoreTile<kP, N>;   // bf16 state: [p][n]
  static constexpr size_t xs = 0;                        // x, 2 buffers
  static constexpr size_t bs = xs + 2 * TX::kBytes;      // B, 2 buffers
  static constexpr size_t cs = bs + 2 * TN::kBytes;      // C, 2 buffers
  static constexpr size_t hs = cs + 2 * TN::kBytes;      // bf16 state entering the chunk
  static constexpr size_t xw = hs + TH::kBytes;          // x w dt
  static constexpr size_t raw = xw + TX::kBytes;         // raw dt, 2 buffers of Q floats
  static constexpr size_t bnd = raw + 2 * kQ * 4;        // boundary flags, 2 x Q ints
  static constexpr size_t scan = bnd + 2 * kQ * 4;
  static constexpr size_t total = scan + sizeof(ChunkScan<kQ>);
};

// Queues cp.async copies of rows [row0, row0 + R) x columns [0, C) of a bf16 row view into a
// CoreTile<R, C>; rows >= valid_rows are zero-filled. As load_tile_async: thread i copies the
// 16-byte pieces i, i + kThreads, ..., one column and rows kThreads / (C / 8) apart, so source
// and destination advance by constant strides.
template <int R, int C>
__device__ __forceinline__ void load_core_tile_async(unsigned char* S, const bf16_t* base, int64_t ld, int64_t row0,
                                                     int valid_rows) {
  constexpr int kPieces = C / 8;
  constexpr int kRowStep = kThreads / kPieces;
  static_assert(kThreads % kPieces == 0 && kRowStep % 8 == 0 && R % kRowStep == 0, "whole core rows per pass");
  const int r0 = static_cast<int>(threadIdx.x) / kPieces, c = static_cast<int>(threadIdx.x) % kPieces;
  const bf16_t* first = base + row0 * ld + 8 * c;  // a valid row for the zero-filled ones
  const bf16_t* src = first + r0 * ld;
  const int64_t step = kRowStep * ld;
  unsigned char* dst = S + wg::CoreTile<R, C>::offset(r0, 8 * c);
  constexpr int kDstStep = kRowStep / 8 * wg::CoreTile<R, C>::kRowGroup;
#pragma unroll
  for (int k = 0; k < R / kRowStep; ++k) {
    const bool valid = r0 + k * kRowStep < valid_rows;
    mma::cp_async16(dst + k * kDstStep, valid ? src + k * step : first, valid);
  }
}

template <int N>
__global__ void __launch_bounds__(kThreads, 2) ssd_fwd_wg_kernel(const SsdArgs a) {
  using L = WgLayout<N>;
  using TX = typename L::TX;
  using TN = typename L::TN;
  using TH = typename L::TH;
  unsigned char* sm = mma::dynamic_smem();
  unsigned char* Xs0 = sm + L::xs;  // buffer u at + u TX::kBytes
  unsigned char* Bs0 = sm + L::bs;
  unsigned char* Cs0 = sm + L::cs;
  unsigned char* Hs = sm + L::hs;
  unsigned char* Xw = sm + L::xw;
  auto* raw = reinterpret_cast<float*>(sm + L::raw);
  auto* bnd = reinterpret_cast<int*>(sm + L::bnd);
  auto& S = *reinterpret_cast<ChunkScan<kQ>*>(sm + L::scan);

  const int h = blockIdx.x, seg = blockIdx.y, b = blockIdx.z;
  const int g = h / (a.H / a.G);
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, gq = lane >> 2, qq = lane & 3;
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

  auto issue = [&](int c, int buf) {
    const int64_t t0 = rowb + static_cast<int64_t>(c) * kQ;
    const int valid = min(kQ, T - c * kQ);
    load_core_tile_async<kQ, kP>(Xs0 + buf * TX::kBytes, xg, a.ld_x, t0, valid);
    load_core_tile_async<kQ, N>(Bs0 + buf * TN::kBytes, Bg, a.ld_B, t0, valid);
    load_core_tile_async<kQ, N>(Cs0 + buf * TN::kBytes, Cg, a.ld_C, t0, valid);
  };

  // The state: accumulator element 4 j + i is (p, n) = (16 w + gq + 8 (i / 2), 8 j + 2 qq + i % 2).
  float hacc[N / 2];
  const int64_t state_off = (static_cast<int64_t>(b) * a.H + h) * kP * N;
  {
    const float* src = a.nseg > 1 ? a.ws_seg + seg_state_offset(a, 0, b, seg, h) : (a.h0 ? a.h0 + state_off : nullptr);
#pragma unroll
    for (int j = 0; j < N / 8; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int p = 16 * w + gq + 8 * half, n = 8 * j + 2 * qq;
        const float2 v = src ? *reinterpret_cast<const float2*>(src + p * N + n) : make_float2(0.f, 0.f);
        hacc[4 * j + 2 * half] = v.x;
        hacc[4 * j + 2 * half + 1] = v.y;
      }
  }
  auto store_state_bf16 = [&] {
#pragma unroll
    for (int j = 0; j < N / 8; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int p = 16 * w + gq + 8 * half, n = 8 * j + 2 * qq;
        *reinterpret_cast<uint32_t*>(Hs + TH::offset(p, n)) =
            mma::pack_bf16x2(hacc[4 * j + 2 * half], hacc[4 * j + 2 * half + 1]);
      }
    wg::fence_async_smem();  // read by the next chunk's Yo product (async proxy) after barrier (A)
  };
  store_state_bf16();
  issue(c_begin, 0);
  mma::cp_async_commit();
  // Raw dt and boundary flags: thread i < Q owns position i.
  if (tid < kQ) {
    raw[tid] = raw_dt_at(a, b, c_begin * kQ + tid, h);
    bnd[tid] = boundary_at(a, b, c_begin * kQ + tid);
  }

  const uint32_t xs_addr = wg::smem_addr(Xs0), bs_addr = wg::smem_addr(Bs0), cs_addr = wg::smem_addr(Cs0);
  const uint64_t desc_h = wg::make_desc(wg::smem_addr(Hs), TH::kKMajorLbo, TH::kKMajorSbo);
  const uint64_t desc_xw = wg::make_desc(wg::smem_addr(Xw), TX::kMnMajorLbo, TX::kMnMajorSbo);

  for (int c = c_begin; c < c_end; ++c) {
    const int buf = (c - c_begin) & 1;
    const int t0 = c * kQ;
    const int len = min(kQ, T - t0);
    const bool has_next = c + 1 < c_end;
    mma::cp_async_wait<0>();
    wg::fence_async_smem();  // the copies are read by wgmma (async proxy)
    __syncthreads();         // (A)
    if (has_next) issue(c + 1, buf ^ 1);  // buffers last read by chunk c-1, whose products all completed
    mma::cp_async_commit();
    const bool load_next = has_next && tid < kQ;
    const float next_raw = load_next ? raw_dt_at(a, b, t0 + kQ + tid, h) : 0.f;
    const int next_bnd = load_next ? boundary_at(a, b, t0 + kQ + tid) : 0;

    // G = C Bᵀ and Yo = C Hᵀ, two groups; warp 0 scans dt meanwhile.
    const uint64_t desc_c = wg::make_desc(cs_addr + buf * TN::kBytes, TN::kKMajorLbo, TN::kKMajorSbo);
    const uint64_t desc_bk = wg::make_desc(bs_addr + buf * TN::kBytes, TN::kKMajorLbo, TN::kKMajorSbo);
    float gacc[32], yacc[32];
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < N / 16; ++kk)
      wg::wgmma_ss_n64<0, 0>(gacc, wg::desc_advance(desc_c, kk * TN::kKMajorStep),
                             wg::desc_advance(desc_bk, kk * TN::kKMajorStep), kk > 0);
    wg::commit();
#pragma unroll
    for (int kk = 0; kk < N / 16; ++kk)
      wg::wgmma_ss_n64<0, 0>(yacc, wg::desc_advance(desc_c, kk * TN::kKMajorStep),
                             wg::desc_advance(desc_h, kk * TH::kKMajorStep), kk > 0);
    wg::commit();
    if (w == 0) chunk_scan_warp<kQ, false>(S, raw + buf * kQ, bnd + buf * kQ, len, A, bias, a.dt_min, a.dt_max);
    __syncthreads();  // (B)

    // x w dt for the state update (same rounding as the other kernels: bf16 of x times the fp32
    // coefficient), 16 bytes per step; the offsets of x and x w dt agree (same layout).
    {
      const unsigned char* X = Xs0 + buf * TX::kBytes;
      for (int i = tid; i < kQ * kP / 8; i += kThreads) {
        const int r = i / (kP / 8), cc = i % (kP / 8);
        const int off = TX::offset(r, 8 * cc);
        const float sc = S.wdt[r];
        const uint4 u = *reinterpret_cast<const uint4*>(X + off);
        uint32_t v[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) v[k] = mma::pack_bf16x2(mma::bf16_lo(v[k]) * sc, mma::bf16_hi(v[k]) * sc);
        *reinterpret_cast<uint4*>(Xw + off) = make_uint4(v[0], v[1], v[2], v[3]);
      }
      wg::fence_async_smem();
    }

    // M[t, s] = G[t, s] exp(cum_t - cum_s) dt_s for s <= t in t's document, else 0, as the A
    // fragments of y's product: k step ks takes G's column blocks 2 ks, 2 ks + 1. Blocks right
    // of this warp's rows (s >= 16 (w + 1)) are zero.
    const int t_lo = 16 * w + gq;
    const float cum_t[2] = {S.cum[t_lo], S.cum[t_lo + 8]};
    const int seg_t[2] = {S.seg[t_lo], S.seg[t_lo + 8]};
    uint32_t mf[4][4];
    wg::wait<1>();
    wg::pin(gacc);
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      if (ks > w) {
        mf[ks][0] = mf[ks][1] = mf[ks][2] = mf[ks][3] = 0u;
        continue;
      }
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {
        const int j = 2 * ks + jj, s = 8 * j + 2 * qq;
        const float2 cs = *reinterpret_cast<const float2*>(S.cum + s);
        const float2 ds = *reinterpret_cast<const float2*>(S.dt + s);
        const int2 ss = *reinterpret_cast<const int2*>(S.seg + s);
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int t = t_lo + 8 * half;
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
    // y = eoff Yo + M x: Yo's accumulators, scaled per row, accumulate M x.
    wg::wait<0>();
    wg::pin(yacc);
    {
      const float e0 = S.eoff[t_lo], e1 = S.eoff[t_lo + 8];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        yacc[4 * j] *= e0;
        yacc[4 * j + 1] *= e0;
        yacc[4 * j + 2] *= e1;
        yacc[4 * j + 3] *= e1;
      }
    }
    const uint64_t desc_x = wg::make_desc(xs_addr + buf * TX::kBytes, TX::kMnMajorLbo, TX::kMnMajorSbo);
    wg::fence();
#pragma unroll
    for (int ks = 0; ks < 4; ++ks)
      wg::wgmma_rs_n64<1>(yacc, mf[ks], wg::desc_advance(desc_x, ks * TX::kMnMajorStep), true);
    wg::commit();
    __syncthreads();  // (C)

    // H = gamma H + (x w dt)ᵀ B.
    const float gamma = S.gamma;
#pragma unroll
    for (int i = 0; i < N / 2; ++i) hacc[i] *= gamma;
    const uint64_t desc_bm = wg::make_desc(bs_addr + buf * TN::kBytes, TN::kMnMajorLbo, TN::kMnMajorSbo);
    wg::fence();
#pragma unroll
    for (int ks = 0; ks < 4; ++ks) {
      const uint64_t da = wg::desc_advance(desc_xw, ks * TX::kMnMajorStep);
      const uint64_t db = wg::desc_advance(desc_bm, ks * TN::kMnMajorStep);
      if constexpr (N == 128)
        wg::wgmma_ss_n128<1, 1>(hacc, da, db, true);
      else
        wg::wgmma_ss_n64<1, 1>(hacc, da, db, true);
    }
    wg::commit();

    // y += D x, stored.
    wg::wait<1>();
    wg::pin(yacc);
    {
      const unsigned char* X = Xs0 + buf * TX::kBytes;
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int t = t_lo + 8 * half, p = 8 * j + 2 * qq;
          if (t < len) {
            const uint32_t xv = *reinterpret_cast<const uint32_t*>(X + TX::offset(t, p));
            const float v0 = yacc[4 * j + 2 * half] + Dh * mma::bf16_lo(xv);
            const float v1 = yacc[4 * j + 2 * half + 1] + Dh * mma::bf16_hi(xv);
            *reinterpret_cast<uint32_t*>(yg + (rowb + t0 + t) * a.ld_y + p) = mma::pack_bf16x2(v0, v1);
          }
        }
    }
    wg::wait<0>();
    wg::pin(hacc);
    if (has_next) store_state_bf16();  // every read of Hs for this chunk completed before (C)
    if (load_next) {  // this slot was last read by chunk c-1's scan, before its barrier (B)
      raw[(buf ^ 1) * kQ + tid] = next_raw;
      bnd[(buf ^ 1) * kQ + tid] = next_bnd;
    }
  }
  if (seg == a.nseg - 1 && a.h_final) {
    float* dst = a.h_final + state_off;
#pragma unroll
    for (int j = 0; j < N / 8; ++j)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int p = 16 * w + gq + 8 * half, n = 8 * j + 2 * qq;
        *reinterpret_cast<float2*>(dst + p * N + n) = make_float2(hacc[4 * j + 2 * half], hacc[4 * j + 2 * half + 1]);
      }
  }
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

}  // namespace hlm::cuda::ssd
