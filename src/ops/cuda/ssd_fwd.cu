// SSD forward on tensor cores, chunk-parallel: the chunks of a row are cut into segments; with
// more than one segment, the states entering them come first (ssd_state.cu: each piece's local
// state as one product over its tokens, then a short pass over pieces). Then one block per (head,
// segment, row) walks the segment's chunks with the fp32 state in registers and writes y, so
// per-chunk states never touch device memory; the last segment's walk leaves h_final.
#include "ops/cuda/ssd_kernels.cuh"

namespace hlm::cuda::ssd {
namespace {

template <class Cfg, int kHeads>
struct FwdLayout {
  static constexpr size_t kX = size_t{Cfg::Q} * Cfg::LDX * 2;  // [Q][LDX] bf16
  static constexpr size_t kN = size_t{Cfg::Q} * Cfg::LDN * 2;  // [Q][LDN] bf16
  static constexpr size_t kM = size_t{Cfg::Q} * Cfg::LDQ * 2;  // [Q][LDQ] bf16
  static constexpr size_t kH = size_t{Cfg::P} * Cfg::LDN * 2;  // [P][LDN] bf16
  static constexpr size_t xs = 0;                              // x tiles, [head][2 buffers]
  static constexpr size_t bs = xs + kHeads * 2 * kX;           // B tiles, 2 buffers
  static constexpr size_t cs = bs + 2 * kN;                    // C tile (read early: 1 buffer)
  static constexpr size_t ms = cs + kN;                        // M = (C Bᵀ ∘ L) dt, per head
  static constexpr size_t hs = ms + kHeads * kM;               // bf16 state entering the chunk, per head
  static constexpr size_t xw = hs + kHeads * kH;               // x w dt (the state update's), per head
  static constexpr size_t raw = xw + kHeads * kX;              // raw dt, [head][2 buffers][Q] floats
  static constexpr size_t bnd = raw + kHeads * 2 * Cfg::Q * 4; // boundary flags, 2 x Q ints
  static constexpr size_t scan = bnd + 2 * Cfg::Q * 4;         // per head
  static constexpr size_t total = scan + kHeads * sizeof(ChunkScan<Cfg::Q>);
};

// One block per (kHeads = kHW x kHG heads of one group, segment, row) walks the segment's chunks
// from the state entering the segment (h0, or the state pass's result). kHG groups of 8 warps each
// take kHW heads (kHW = 2: the two heads' work interleaves in each warp and shares G = C Bᵀ;
// kHG = 2: 16 warps, one head each). All heads share the B and C tiles (the L2 traffic of B, C
// per head divides by kHeads). Per chunk, three barriers:
//   (A) tiles, raw dt and the bf16 states in -> scans (1 warp per head), G = C Bᵀ, Yo = C Hᵀ
//   (B) scans visible, C and Hs free          -> next C tile issued; M = G ∘ decay ∘ dt -> smem;
//                                                x w dt -> smem (scaled once, not per warp)
//   (C) M and x w dt complete                 -> y = M x + eoff Yo + D x; H = gamma H + (x w dt)ᵀ B;
//                                                bf16 copy of H for the next chunk.
template <int Q, int P, int N, int kHW, int kHG>
__global__ void __launch_bounds__(256 * kHG, (P <= 64 && kHW * kHG == 1) ? 2 : 1) ssd_fwd_fast_kernel(const SsdArgs a) {
  using Cfg = FastCfg<Q, P, N>;
  constexpr int kHeads = kHW * kHG, kThreads = 256 * kHG;
  using L = FwdLayout<Cfg, kHeads>;
  static_assert(Cfg::kScanWarp + kHW - 1 < Cfg::kWarps, "scan warps");
  static_assert(kHeads * Q <= kThreads, "raw dt: one element per thread");
  constexpr int LDX = Cfg::LDX, LDN = Cfg::LDN, LDQ = Cfg::LDQ;
  constexpr int kXE = Q * LDX, kNE = Q * LDN, kME = Q * LDQ, kHE = P * LDN;  // elements per buffer
  unsigned char* sm = mma::dynamic_smem();
  auto* Xs0 = reinterpret_cast<bf16_t*>(sm + L::xs);  // head hh, buffer u at (2 hh + u) kXE
  auto* Bs0 = reinterpret_cast<bf16_t*>(sm + L::bs);
  auto* Cs = reinterpret_cast<bf16_t*>(sm + L::cs);
  auto* Ms0 = reinterpret_cast<bf16_t*>(sm + L::ms);
  auto* Hs0 = reinterpret_cast<bf16_t*>(sm + L::hs);
  auto* Xw0 = reinterpret_cast<bf16_t*>(sm + L::xw);  // head hh at hh kXE
  auto* raw = reinterpret_cast<float*>(sm + L::raw);  // head hh, buffer u at (2 hh + u) Q
  auto* bnd = reinterpret_cast<int*>(sm + L::bnd);
  auto* sc = reinterpret_cast<ChunkScan<Q>*>(sm + L::scan);

  const int h_first = blockIdx.x * kHeads, seg = blockIdx.y, b = blockIdx.z;
  const int g = h_first / (a.H / a.G);
  const int tid = threadIdx.x, lw = (tid >> 5) % Cfg::kWarps;  // warp within its group of 8
  const int hb = (tid >> 5) / Cfg::kWarps * kHW;  // this warp group's first head (of the block's)
  const int wr = lw % Cfg::kRowBlocks, wc = lw / Cfg::kRowBlocks;
  const int r0 = 16 * wr;               // rows (t) of this warp in [Q, *] tiles
  const int q0 = wc * Cfg::kQCols;      // columns (s) in [Q, Q] tiles
  const int p0 = wc * Cfg::kPCols;      // columns (p) in [Q, P] tiles
  float A[kHW], Dh[kHW], bias[kHW];  // of heads hb + hh
#pragma unroll
  for (int hh = 0; hh < kHW; ++hh) {
    A[hh] = -expf(load_any(a.A_log, a.A_type, h_first + hb + hh));
    Dh[hh] = a.D ? load_any(a.D, a.D_type, h_first + hb + hh) : 0.f;
    bias[hh] = a.dt_bias ? load_any(a.dt_bias, a.bias_type, h_first + hb + hh) : 0.f;
  }
  const int T = a.T;
  const int c_begin = seg * a.seg_chunks, c_end = min(a.nchunks, c_begin + a.seg_chunks);
  const int64_t rowb = static_cast<int64_t>(b) * T;
  const auto* xg = static_cast<const bf16_t*>(a.x) + static_cast<int64_t>(h_first) * P;  // head hh at + hh P
  const auto* Bg = static_cast<const bf16_t*>(a.Bm) + static_cast<int64_t>(g) * N;
  const auto* Cg = static_cast<const bf16_t*>(a.Cm) + static_cast<int64_t>(g) * N;
  auto* yg = static_cast<bf16_t*>(a.y) + static_cast<int64_t>(h_first) * P;

  auto issue_xb = [&](int c, int buf) {
    const int t0 = c * Q;
    const int valid = min(Q, T - t0);
#pragma unroll
    for (int hh = 0; hh < kHeads; ++hh)
      load_tile_async<Q, P, LDX, kThreads>(Xs0 + (2 * hh + buf) * kXE, xg + hh * P, a.ld_x, rowb + t0, valid);
    load_tile_async<Q, N, LDN, kThreads>(Bs0 + buf * kNE, Bg, a.ld_B, rowb + t0, valid);
  };
  auto issue_c = [&](int c) {
    const int t0 = c * Q;
    load_tile_async<Q, N, LDN, kThreads>(Cs, Cg, a.ld_C, rowb + t0, min(Q, T - t0));
  };

  StateFrag<Cfg> H[kHW];
  const int64_t state_off = (static_cast<int64_t>(b) * a.H + h_first) * P * N;  // head i at + i P N
#pragma unroll
  for (int hh = 0; hh < kHW; ++hh) {
    H[hh].load(a.nseg > 1 ? a.ws_seg + seg_state_offset(a, 0, b, seg, h_first + hb + hh)
                          : (a.h0 ? a.h0 + state_off + (hb + hh) * P * N : nullptr));
    H[hh].store_bf16(Hs0 + (hb + hh) * kHE, LDN);
  }
  issue_xb(c_begin, 0);
  issue_c(c_begin);
  mma::cp_async_commit();
  // Raw dt: thread i < kHeads Q owns position i % Q of head i / Q.
  const int raw_head = tid / Q, raw_pos = tid % Q;
  const bool raw_thread = tid < kHeads * Q;
  if (raw_thread) raw[2 * raw_head * Q + raw_pos] = raw_dt_at(a, b, c_begin * Q + raw_pos, h_first + raw_head);
  if (tid < Q) bnd[tid] = boundary_at(a, b, c_begin * Q + tid);

  for (int c = c_begin; c < c_end; ++c) {
    const int buf = (c - c_begin) & 1;
    const int t0 = c * Q;
    const int len = min(Q, T - t0);
    const bool has_next = c + 1 < c_end;
    const bf16_t* Bs = Bs0 + buf * kNE;
    mma::cp_async_wait<0>();
    __syncthreads();  // (A)
    if (has_next) issue_xb(c + 1, buf ^ 1);  // buffers last read by chunk c-1, before (A)
    mma::cp_async_commit();
    // Raw dt of the next chunk: loaded now, stored at the end of this chunk (latency hidden).
    const bool load_next = has_next && raw_thread;
    const float next_raw = load_next ? raw_dt_at(a, b, t0 + Q + raw_pos, h_first + raw_head) : 0.f;
    const int next_bnd = has_next && tid < Q ? boundary_at(a, b, t0 + Q + tid) : 0;
#pragma unroll
    for (int hh = 0; hh < kHW; ++hh)
      if (lw == Cfg::kScanWarp + hh)
        chunk_scan_warp<Q, false>(sc[hb + hh], raw + (2 * (hb + hh) + buf) * Q, bnd + buf * Q, len, A[hh], bias[hh],
                                  a.dt_min, a.dt_max);

    // G = C Bᵀ for this warp's [16, kQCols] tile; tiles strictly above the diagonal stay zero.
    float gacc[Cfg::kQTiles][4];
#pragma unroll
    for (int j = 0; j < Cfg::kQTiles; ++j) gacc[j][0] = gacc[j][1] = gacc[j][2] = gacc[j][3] = 0.f;
    if (q0 <= r0 + 15) {
#pragma unroll kKUnroll
      for (int kk = 0; kk < N / 16; ++kk) {
        uint32_t af[4];
        mma::load_a(af, Cs, LDN, r0, 16 * kk);
#pragma unroll
        for (int j = 0; j < Cfg::kQTiles; j += 2) {
          if (q0 + 8 * j <= r0 + 15) {
            uint32_t bfr[4];
            mma::load_b2(bfr, Bs, LDN, q0 + 8 * j, 16 * kk);
            mma::mma_bf16(gacc[j], af, bfr[0], bfr[1]);
            mma::mma_bf16(gacc[j + 1], af, bfr[2], bfr[3]);
          }
        }
      }
    }
    // Yo = C Hinᵀ for this warp's [16, kPCols] tile of y, per head.
    float yo[kHW][Cfg::kPTiles][4];
#pragma unroll
    for (int hh = 0; hh < kHW; ++hh)
#pragma unroll
      for (int j = 0; j < Cfg::kPTiles; ++j) yo[hh][j][0] = yo[hh][j][1] = yo[hh][j][2] = yo[hh][j][3] = 0.f;
#pragma unroll kKUnroll
    for (int kk = 0; kk < N / 16; ++kk) {
      uint32_t af[4];
      mma::load_a(af, Cs, LDN, r0, 16 * kk);
#pragma unroll
      for (int hh = 0; hh < kHW; ++hh)
        mma::mma_row<Cfg::kPTiles, false>(yo[hh], af, Hs0 + (hb + hh) * kHE, LDN, p0, 16 * kk);
    }
    __syncthreads();  // (B)
    if (has_next) issue_c(c + 1);  // C is read only before (B)
    mma::cp_async_commit();

    // M[t,s] = G[t,s] exp(cum_t - cum_s) dt_s for s <= t in t's document, else 0. Column tiles
    // right of this row block's diagonal block are never read (y's k loop stops there): skipped.
#pragma unroll
    for (int hh = 0; hh < kHW; ++hh) {
      const ChunkScan<Q>& S = sc[hb + hh];
      bf16_t* Ms = Ms0 + (hb + hh) * kME;
#pragma unroll
      for (int j = 0; j < Cfg::kQTiles; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          if (q0 + 8 * j > r0 + 15) continue;
          const int t = mma::acc_row(r0, 2 * half), s = mma::acc_col(q0 + 8 * j, 0);
          float m[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int ss = s + e;
            m[e] = (ss <= t && S.seg[ss] == S.seg[t])
                       ? gacc[j][2 * half + e] * __expf(fminf(S.cum[t] - S.cum[ss], 0.f)) * S.dt[ss]
                       : 0.f;
          }
          *reinterpret_cast<uint32_t*>(Ms + t * LDQ + s) = mma::pack_bf16x2(m[0], m[1]);
        }
    }
    // x w dt for the state update, all threads (the previous chunk's update read Xw before (A)).
#pragma unroll
    for (int hh = 0; hh < kHeads; ++hh)
      scale_rows<Cfg, kThreads>(Xw0 + hh * kXE, Xs0 + (2 * hh + buf) * kXE, sc[hh].wdt);
    __syncthreads();  // (C)

#pragma unroll
    for (int hh = 0; hh < kHW; ++hh) {
      const ChunkScan<Q>& S = sc[hb + hh];
      const bf16_t* Xs = Xs0 + (2 * (hb + hh) + buf) * kXE;
      const bf16_t* Ms = Ms0 + (hb + hh) * kME;
      // y = M x  +  eoff_t Yo  +  D x   for this warp's [16, kPCols] tile.
      float yd[Cfg::kPTiles][4];
#pragma unroll
      for (int j = 0; j < Cfg::kPTiles; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) yd[j][i] = 0.f;
      for (int ks = 0; ks <= wr; ++ks) {
        uint32_t af[4];
        mma::load_a(af, Ms, LDQ, r0, 16 * ks);
        mma::mma_row<Cfg::kPTiles, true>(yd, af, Xs, LDX, p0, 16 * ks);
      }
#pragma unroll
      for (int j = 0; j < Cfg::kPTiles; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int t = mma::acc_row(r0, 2 * half), p = mma::acc_col(p0 + 8 * j, 0);
          if (t < len) {
            const uint32_t xv = *reinterpret_cast<const uint32_t*>(Xs + t * LDX + p);
            const float e = S.eoff[t];
            const float v0 = yd[j][2 * half] + e * yo[hh][j][2 * half] + Dh[hh] * mma::bf16_lo(xv);
            const float v1 = yd[j][2 * half + 1] + e * yo[hh][j][2 * half + 1] + Dh[hh] * mma::bf16_hi(xv);
            *reinterpret_cast<uint32_t*>(yg + (rowb + t0 + t) * a.ld_y + (hb + hh) * P + p) = mma::pack_bf16x2(v0, v1);
          }
        }
      // State update H = gamma H + (x w dt)ᵀ B; its bf16 copy is the next chunk's Hs (every read
      // of Hs for this chunk happened before (B)).
      H[hh].scale(S.gamma);
      H[hh].add_outer(Xw0 + (hb + hh) * kXE, Bs);
      H[hh].store_bf16(Hs0 + (hb + hh) * kHE, LDN);
    }
    // This slot's previous chunk was scanned before (A).
    if (load_next) raw[(2 * raw_head + (buf ^ 1)) * Q + raw_pos] = next_raw;
    if (has_next && tid < Q) bnd[(buf ^ 1) * Q + tid] = next_bnd;
  }
  if (seg == a.nseg - 1 && a.h_final)
#pragma unroll
    for (int hh = 0; hh < kHW; ++hh) H[hh].store_f32(a.h_final + state_off + (hb + hh) * P * N);
}

}  // namespace

template <int Q, int P, int N, int kHW, int kHG>
void launch_fwd_heads(const SsdArgs& a) {
  using L = FwdLayout<FastCfg<Q, P, N>, kHW * kHG>;
  auto kernel = ssd_fwd_fast_kernel<Q, P, N, kHW, kHG>;
  static const bool attr_set = [&] {  // once per instantiation: keep host work off the hot path
    HLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(L::total)));
    return true;
  }();
  (void)attr_set;
  dim3 grid(static_cast<unsigned>(a.H / (kHW * kHG)), static_cast<unsigned>(a.nseg), static_cast<unsigned>(a.B));
  HLM_LAUNCH(kernel, grid, dim3(256 * kHG), L::total, a);
  HLM_CUDA_CHECK_LAUNCH();
}

template <int Q, int P, int N>
void launch_fwd_fast(const SsdArgs& a) {
  if constexpr (Q == 64 && P == 64) {
    if (a.fwd_variant == 1) return launch_fwd_wg<N>(a);
    if (a.fwd_variant >= 2 && a.fwd_variant <= 7) return launch_fwd_ws<N>(a);
  }
  if (a.nseg > 1) launch_segment_states<Q, P, N>(a, 0, 1);
  if constexpr (P <= 64) {
    if (a.fwd_variant == 21) return launch_fwd_heads<Q, P, N, 2, 1>(a);
    if (a.fwd_variant == 12) return launch_fwd_heads<Q, P, N, 1, 2>(a);
  }
  launch_fwd_heads<Q, P, N, 1, 1>(a);
}

template void launch_fwd_fast<64, 64, 128>(const SsdArgs&);
template void launch_fwd_fast<64, 64, 64>(const SsdArgs&);
template void launch_fwd_fast<64, 128, 128>(const SsdArgs&);

}  // namespace hlm::cuda::ssd
