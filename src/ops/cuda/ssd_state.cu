// Chunk-parallel SSD states: the states entering (gradients leaving) each segment — the local state
// of every piece of a segment as one weighted product over its tokens, then a short sequential pass
// over pieces — and the backward's sweeps (states / state gradients over the chunks of one segment,
// fp32 in registers, stored in bf16 per chunk).
#include "ops/cuda/ssd_kernels.cuh"

namespace hlm::cuda::ssd {
namespace {

// The operands of direction dir's recurrence for the heads from h (P columns each) of group g:
// (x, B) forwards, (dy, C) backwards.
struct SweepOperands {
  const bf16_t* act;
  int64_t ld_act;
  const bf16_t* vec;
  int64_t ld_vec;
};
template <int P, int N>
__device__ __forceinline__ SweepOperands sweep_operands(const SsdArgs& a, int dir, int h, int g) {
  const bool reverse = dir == 1;
  return {static_cast<const bf16_t*>(reverse ? a.dy : a.x) + static_cast<int64_t>(h) * P, reverse ? a.ld_dy : a.ld_x,
          static_cast<const bf16_t*>(reverse ? a.Cm : a.Bm) + static_cast<int64_t>(g) * N, reverse ? a.ld_C : a.ld_B};
}

// Both directions are the recurrence S <- gamma S + (act * coef)ᵀ V over chunks, with
// (act, coef, V) = (x, w dt, B) forwards and (dy, eoff, C) backwards.
template <class Cfg, int kHG>
struct SweepLayout {
  static constexpr size_t kX = size_t{Cfg::Q} * Cfg::LDX * 2;
  static constexpr size_t kN = size_t{Cfg::Q} * Cfg::LDN * 2;
  static constexpr size_t as = 0;                              // activation tiles, [head][2 buffers]
  static constexpr size_t vs = as + kHG * 2 * kX;              // B or C tiles (shared), 2 buffers
  static constexpr size_t raw = vs + 2 * kN;                   // raw dt, [head][2][Q] floats
  static constexpr size_t bnd = raw + kHG * 2 * Cfg::Q * 4;    // boundary flags, 2 x Q ints
  static constexpr size_t scan = bnd + 2 * Cfg::Q * 4;         // [head][2] chunk scans (one ahead)
  static constexpr size_t total = scan + kHG * 2 * sizeof(ChunkScan<Cfg::Q>);
};

// kHG heads of one group per block, one per group of 8 warps, sharing the B (C) tiles. One
// barrier per chunk: the scan of the next chunk (warp 0 of each group) and the next tiles
// (cp.async) are prepared while all warps fold the current chunk into the state. (Scaling the
// activation tile once into shared memory, as the walk and the piece kernel do, costs a second
// barrier per chunk here and measured slower: H200, 8 x 8K forward + backward 14.59 against
// 13.96 ms, round 7.)
template <int Q, int P, int N, int kHG>
__global__ void __launch_bounds__(256 * kHG, (P <= 64 && kHG == 1) ? 2 : 1)
    ssd_state_sweep_kernel(const SsdArgs a, int dir_first, int ndir) {
  using Cfg = FastCfg<Q, P, N>;
  using L = SweepLayout<Cfg, kHG>;
  constexpr int LDX = Cfg::LDX, LDN = Cfg::LDN;
  constexpr int kXE = Q * LDX, kNE = Q * LDN, kThreads = 256 * kHG;
  static_assert(kHG * Q <= kThreads, "raw dt: one element per thread");
  unsigned char* sm = mma::dynamic_smem();
  const int tid = threadIdx.x, hg = (tid >> 5) / Cfg::kWarps, lw = (tid >> 5) % Cfg::kWarps;
  auto* As0 = reinterpret_cast<bf16_t*>(sm + L::as) + hg * 2 * kXE;  // this group's head
  auto* Vs0 = reinterpret_cast<bf16_t*>(sm + L::vs);
  auto* raw0 = reinterpret_cast<float*>(sm + L::raw);
  auto* raw = raw0 + hg * 2 * Q;
  auto* bnd = reinterpret_cast<int*>(sm + L::bnd);
  auto* sc = reinterpret_cast<ChunkScan<Q>*>(sm + L::scan) + hg * 2;

  const int h_first = blockIdx.x * kHG, h = h_first + hg, seg = blockIdx.y;
  const int dir = dir_first + static_cast<int>(blockIdx.z) % ndir;
  const int b = static_cast<int>(blockIdx.z) / ndir;
  const bool reverse = dir == 1;
  const int g = h_first / (a.H / a.G);
  const float A = -expf(load_any(a.A_log, a.A_type, h));
  const float bias = a.dt_bias ? load_any(a.dt_bias, a.bias_type, h) : 0.f;
  const int T = a.T, C = a.nchunks;
  const int c_begin = seg * a.seg_chunks, c_end = min(C, c_begin + a.seg_chunks);
  const int nit = c_end - c_begin;
  const int64_t rowb = static_cast<int64_t>(b) * T;
  const auto [act, ld_act, vec, ld_vec] = sweep_operands<P, N>(a, dir, h_first, g);
  bf16_t* ws = (reverse ? a.ws_dhout : a.ws_hin) + (static_cast<int64_t>(b) * a.H + h) * C * P * N;
  const int64_t state_off = (static_cast<int64_t>(b) * a.H + h) * P * N;

  auto chunk_of = [&](int it) { return reverse ? c_end - 1 - it : c_begin + it; };
  auto len_of = [&](int it) { return min(Q, T - chunk_of(it) * Q); };
  auto issue_loads = [&](int it, int buf) {
    const int t0 = chunk_of(it) * Q;
    bf16_t* as_all = reinterpret_cast<bf16_t*>(sm + L::as);
#pragma unroll
    for (int hh = 0; hh < kHG; ++hh)
      load_tile_async<Q, P, LDX, kThreads>(as_all + (2 * hh + buf) * kXE, act + hh * P, ld_act, rowb + t0, len_of(it));
    load_tile_async<Q, N, LDN, kThreads>(Vs0 + buf * kNE, vec, ld_vec, rowb + t0, len_of(it));
  };
  // Raw dt: thread i < kHG Q owns position i % Q of head h_first + i / Q.
  const int raw_head = tid / Q, raw_pos = tid % Q;
  const bool raw_thread = tid < kHG * Q;

  StateFrag<Cfg> S;
  const float* start = nullptr;
  if (a.nseg > 1)
    start = a.ws_seg + seg_state_offset(a, dir, b, seg, h);
  else
    start = reverse ? (a.dh_final ? a.dh_final + state_off : nullptr) : (a.h0 ? a.h0 + state_off : nullptr);
  S.load(start);
  issue_loads(0, 0);
  mma::cp_async_commit();
  for (int j = 0; j < 2 && j < nit; ++j) {
    const int t = chunk_of(j) * Q + raw_pos;
    if (raw_thread) raw0[(2 * raw_head + j) * Q + raw_pos] = raw_dt_at(a, b, t, h_first + raw_head);
    if (tid < Q) bnd[j * Q + tid] = boundary_at(a, b, t);
  }
  __syncthreads();
  if (lw == 0) chunk_scan_warp<Q, false>(sc[0], raw, bnd, len_of(0), A, bias, a.dt_min, a.dt_max);

  for (int it = 0; it < nit; ++it) {
    const int buf = it & 1;
    // The state entering (forwards) / the gradient leaving (backwards) this chunk.
    if (a.core_states)
      S.store_bf16_core(ws + static_cast<int64_t>(chunk_of(it)) * P * N);
    else
      S.store_bf16(ws + static_cast<int64_t>(chunk_of(it)) * P * N, N);
    mma::cp_async_wait<0>();
    __syncthreads();  // tiles and scan of this chunk in; the previous chunk is done with its buffers
    if (it + 1 < nit) issue_loads(it + 1, buf ^ 1);  // buffers last read by the previous chunk
    mma::cp_async_commit();
    const bool load2 = it + 2 < nit;
    float next_raw = 0.f;
    int next_bnd = 0;
    if (load2) {
      const int t = chunk_of(it + 2) * Q + raw_pos;
      if (raw_thread) next_raw = raw_dt_at(a, b, t, h_first + raw_head);
      if (tid < Q) next_bnd = boundary_at(a, b, t);
    }
    if (lw == 0 && it + 1 < nit)
      chunk_scan_warp<Q, false>(sc[buf ^ 1], raw + (buf ^ 1) * Q, bnd + (buf ^ 1) * Q, len_of(it + 1), A, bias,
                                a.dt_min, a.dt_max);
    const ChunkScan<Q>& cur = sc[buf];
    S.scale(cur.gamma);
    S.add_outer(As0 + buf * kXE, Vs0 + buf * kNE, reverse ? cur.eoff : cur.wdt);
    if (load2) {  // chunk it's slot: its scan ran in the previous iteration
      if (raw_thread) raw0[(2 * raw_head + buf) * Q + raw_pos] = next_raw;
      if (tid < Q) bnd[buf * Q + tid] = next_bnd;
    }
  }
  if (reverse && seg == 0 && a.dh0) S.store_f32(a.dh0 + state_off);
}

// Shared memory of the piece kernel: kStages (activation, B or C) tile pairs in flight, the
// piece's per-token coefficients, per-warp scan totals.
template <class Cfg>
struct PieceLayout {
  static constexpr int kStages = 3;
  static constexpr size_t kX = size_t{Cfg::Q} * Cfg::LDX * 2;
  static constexpr size_t kN = size_t{Cfg::Q} * Cfg::LDN * 2;
  static constexpr size_t as = 0;                                   // activation tiles
  static constexpr size_t vs = as + kStages * kX;                   // B or C tiles
  static constexpr size_t xw = vs + kStages * kN;                   // activation tile times c_t
  static constexpr size_t coef = xw + kX;                           // [kMaxPieceChunks Q] floats
  static constexpr size_t wsum = coef + size_t{kMaxPieceChunks} * Cfg::Q * 4;  // [8] floats
  static constexpr size_t wkill = wsum + 8 * 4;                     // [8] ints
  static constexpr size_t total = wkill + 8 * 4;
};

// Local state of one piece (a run of chunks inside a segment) from zero, one block per (piece,
// head, row, direction). Over a piece the chunk recurrence S <- gamma S + (act coef)ᵀ V unrolls into
// one product over its tokens, S = Σ_t c_t act_tᵀ V_t, with the decay folded into c_t:
//   forwards  (x, B):  c_t = dt_t exp(Σ_{r > t} dt_r A), zero if a document starts in (t, end];
//   backwards (dy, C): c_t = exp(Σ_{r <= t} dt_r A),     zero if a document starts in [begin, t].
// The sums are a block scan over the piece's tokens (suffix sums forwards: the decays near the
// end, the ones that matter, stay exact in fp32); the product streams (act, V) tiles through
// kStages cp.async buffers; each tile's activation rows are scaled by c_t once, by all threads,
// into a shared copy (not in each warp's fragments: four warps read every element). The piece's
// total decay goes to ws_piece_gamma. No chain across chunks: every (piece, head) runs in parallel.
template <int Q, int P, int N>
__global__ void __launch_bounds__(256, P <= 64 ? 2 : 1) ssd_piece_state_kernel(const SsdArgs a, int dir_first,
                                                                              int ndir) {
  using Cfg = FastCfg<Q, P, N>;
  using L = PieceLayout<Cfg>;
  constexpr int LDX = Cfg::LDX, LDN = Cfg::LDN, kXE = Q * LDX, kNE = Q * LDN, kStages = L::kStages;
  constexpr int kR = kMaxPieceChunks * Q / 256;  // tokens per thread in the coefficient scan
  static_assert(kR <= 32 && kR % 4 == 0, "one bit per token in a 32-bit mask; float4 stores");
  unsigned char* sm = mma::dynamic_smem();
  auto* As0 = reinterpret_cast<bf16_t*>(sm + L::as);
  auto* Vs0 = reinterpret_cast<bf16_t*>(sm + L::vs);
  auto* Xw = reinterpret_cast<bf16_t*>(sm + L::xw);
  auto* coef = reinterpret_cast<float*>(sm + L::coef);
  auto* wsum = reinterpret_cast<float*>(sm + L::wsum);
  auto* wkill = reinterpret_cast<int*>(sm + L::wkill);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int sp = static_cast<int>(blockIdx.x) / a.pps, j = static_cast<int>(blockIdx.x) % a.pps;
  const int h = blockIdx.y;
  const int dir = dir_first + static_cast<int>(blockIdx.z) % ndir;
  const int b = static_cast<int>(blockIdx.z) / ndir;
  const bool reverse = dir == 1;
  const int s = sp + dir;  // direction 0: segments 0 .. nseg-2; direction 1: 1 .. nseg-1
  const int g = h / (a.H / a.G);
  const int T = a.T;
  const int seg_end = min(a.nchunks, (s + 1) * a.seg_chunks);
  const int cb = min(seg_end, s * a.seg_chunks + j * a.piece_chunks);
  const int ce = min(seg_end, cb + a.piece_chunks);
  const int ntiles = ce - cb;
  const int64_t rowb = static_cast<int64_t>(b) * T;
  const auto [act, ld_act, vec, ld_vec] = sweep_operands<P, N>(a, dir, h, g);

  auto issue = [&](int k) {  // tile k of the piece into buffer k % kStages
    const int t0 = (cb + k) * Q, valid = min(Q, T - t0), buf = k % kStages;
    load_tile_async<Q, P, LDX, 256>(As0 + buf * kXE, act, ld_act, rowb + t0, valid);
    load_tile_async<Q, N, LDN, 256>(Vs0 + buf * kNE, vec, ld_vec, rowb + t0, valid);
  };
#pragma unroll
  for (int k = 0; k < kStages - 1; ++k) {
    if (k < ntiles) issue(k);
    mma::cp_async_commit();
  }

  // Coefficients (while the first tiles load): thread tid owns tokens [tid kR, tid kR + kR).
  const float A = -expf(load_any(a.A_log, a.A_type, h));
  const float bias = a.dt_bias ? load_any(a.dt_bias, a.bias_type, h) : 0.f;
  const int t_first = cb * Q + tid * kR, t_lim = min(ce * Q, T);
  float dt[kR];
  unsigned bmask = 0;  // bit r: a document starts at token r
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    const int t = t_first + r;
    dt[r] = 0.f;
    if (t < t_lim) {
      float dsp;
      dt_from_raw(raw_dt_at(a, b, t, h), bias, a.dt_min, a.dt_max, &dt[r], &dsp);
      if (boundary_at(a, b, t)) bmask |= 1u << r;
    }
  }
  // Within the thread: part[r] = Σ dt A over the tokens after r (forwards) / up to r (backwards),
  // kmask bit r = a boundary in that range.
  float part[kR], tot = 0.f;
  unsigned kmask = 0;
  int any = 0;
#pragma unroll
  for (int i = 0; i < kR; ++i) {
    const int r = reverse ? i : kR - 1 - i;
    const float tot_before = tot;
    const int any_before = any;
    tot += dt[r] * A;
    any |= (bmask >> r) & 1;
    part[r] = reverse ? tot : tot_before;  // backwards inclusive of r, forwards exclusive
    kmask |= static_cast<unsigned>(reverse ? any : any_before) << r;
  }
  // Block scan of the thread totals in token order (backwards) or reverse token order (forwards):
  // exclusive sums over the threads before (after) this one.
  float inc = tot;
  int kinc = any;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const float v = reverse ? __shfl_up_sync(0xffffffffu, inc, off) : __shfl_down_sync(0xffffffffu, inc, off);
    const int kv = reverse ? __shfl_up_sync(0xffffffffu, kinc, off) : __shfl_down_sync(0xffffffffu, kinc, off);
    if (reverse ? lane >= off : lane + off < 32) {
      inc += v;
      kinc |= kv;
    }
  }
  float excl = reverse ? __shfl_up_sync(0xffffffffu, inc, 1) : __shfl_down_sync(0xffffffffu, inc, 1);
  int kexcl = reverse ? __shfl_up_sync(0xffffffffu, kinc, 1) : __shfl_down_sync(0xffffffffu, kinc, 1);
  if (lane == (reverse ? 0 : 31)) {
    excl = 0.f;
    kexcl = 0;
  }
  if (lane == (reverse ? 31 : 0)) {
    wsum[warp] = inc;
    wkill[warp] = kinc;
  }
  __syncthreads();
  float woff = 0.f;
  int wk = 0;
#pragma unroll
  for (int w = 0; w < 8; ++w)
    if (reverse ? w < warp : w > warp) {
      woff += wsum[w];
      wk |= wkill[w];
    }
  const float off = woff + excl;
  const bool killed = (wk | kexcl) != 0;
#pragma unroll
  for (int r = 0; r < kR; r += 4) {
    float c[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float d = __expf(fminf(part[r + e] + off, 0.f));
      const bool zero = killed || ((kmask >> (r + e)) & 1) || t_first + r + e >= t_lim;
      c[e] = zero ? 0.f : (reverse ? d : d * dt[r + e]);
    }
    *reinterpret_cast<float4*>(coef + tid * kR + r) = make_float4(c[0], c[1], c[2], c[3]);
  }
  if (tid == 0) {  // the piece's decay: exp of the whole sum, zero across a document start
    float sum = 0.f;
    int k = 0;
#pragma unroll
    for (int w = 0; w < 8; ++w) {
      sum += wsum[reverse ? w : 7 - w];
      k |= wkill[w];
    }
    a.ws_piece_gamma[piece_index(a, dir, b, sp, j, h)] = k ? 0.f : __expf(fminf(sum, 0.f));
  }

  StateFrag<Cfg> S;
  S.load(nullptr);
  for (int k = 0; k < ntiles; ++k) {
    const int buf = k % kStages;
    mma::cp_async_wait<kStages - 2>();
    __syncthreads();  // tile k in (and the coefficients); tile k - 1's buffers and Xw read by all
    if (k + kStages - 1 < ntiles) issue(k + kStages - 1);
    mma::cp_async_commit();
    scale_rows<Cfg, 256>(Xw, As0 + buf * kXE, coef + k * Q);
    __syncthreads();  // Xw complete
    S.add_outer(Xw, Vs0 + buf * kNE);
  }
  S.store_f32(a.ws_piece + piece_index(a, dir, b, sp, j, h) * P * N);
}

// One thread per 4 state elements walks the pieces in order (forwards: from h0; backwards: from
// dh_final, last piece first) and writes the running state at every segment start (forwards) /
// end (backwards) into ws_seg. Loads of a batch of pieces are issued before the dependent updates.
__global__ void __launch_bounds__(256) ssd_state_pass_kernel(const SsdArgs a, int dir_first) {
  constexpr int kBatch = 8;
  const int dir = dir_first + static_cast<int>(blockIdx.y);
  const int64_t pn4 = static_cast<int64_t>(a.P) * a.N / 4;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(a.B) * a.H * pn4) return;
  const int64_t e = i % pn4, bh = i / pn4;
  const int h = static_cast<int>(bh % a.H), b = static_cast<int>(bh / a.H);
  const float* start = dir == 0 ? a.h0 : a.dh_final;
  const int64_t so = bh * pn4 * 4 + 4 * e;  // offset in a [B,H,P,N] state
  float4 run = start ? make_float4(start[so], start[so + 1], start[so + 2], start[so + 3]) : make_float4(0.f, 0.f, 0.f, 0.f);
  auto write_seg = [&](int s) { reinterpret_cast<float4*>(a.ws_seg + seg_state_offset(a, dir, b, s, h))[e] = run; };
  write_seg(dir == 0 ? 0 : a.nseg - 1);
  const int npieces = (a.nseg - 1) * a.pps;
  for (int k0 = 0; k0 < npieces; k0 += kBatch) {
    float4 loc[kBatch] = {};
    float gam[kBatch] = {};
#pragma unroll
    for (int jj = 0; jj < kBatch; ++jj)
      if (k0 + jj < npieces) {
        const int idx = dir == 0 ? k0 + jj : npieces - 1 - (k0 + jj);
        const int64_t pi = piece_index(a, dir, b, idx / a.pps, idx % a.pps, h);
        loc[jj] = reinterpret_cast<const float4*>(a.ws_piece + pi * a.P * a.N)[e];
        gam[jj] = a.ws_piece_gamma[pi];
      }
#pragma unroll
    for (int jj = 0; jj < kBatch; ++jj) {
      const int k = k0 + jj;
      if (k < npieces) {
        run.x = gam[jj] * run.x + loc[jj].x;
        run.y = gam[jj] * run.y + loc[jj].y;
        run.z = gam[jj] * run.z + loc[jj].z;
        run.w = gam[jj] * run.w + loc[jj].w;
        if ((k + 1) % a.pps == 0) write_seg(dir == 0 ? (k + 1) / a.pps : a.nseg - 1 - (k + 1) / a.pps);
      }
    }
  }
}

template <int Q, int P, int N, int kHG>
void launch_sweep_heads(const SsdArgs& a, int dir_first, int ndir) {
  using L = SweepLayout<FastCfg<Q, P, N>, kHG>;
  auto kernel = ssd_state_sweep_kernel<Q, P, N, kHG>;
  static const bool attr_set = [&] {
    HLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(L::total)));
    return true;
  }();
  (void)attr_set;
  dim3 grid(static_cast<unsigned>(a.H / kHG), static_cast<unsigned>(a.nseg), static_cast<unsigned>(a.B * ndir));
  HLM_LAUNCH(kernel, grid, dim3(256 * kHG), L::total, a, dir_first, ndir);
  HLM_CUDA_CHECK_LAUNCH();
}

}  // namespace

// Two heads of a group per block (sharing the B / C tiles; 128 registers at 512 threads) when
// a.sweep_heads == 2 (P <= 64, even heads per group); else one head per block.
template <int Q, int P, int N>
void launch_state_sweep(const SsdArgs& a, int dir_first, int ndir) {
  if constexpr (P <= 64) {
    if (a.sweep_heads == 2) return launch_sweep_heads<Q, P, N, 2>(a, dir_first, ndir);
  }
  launch_sweep_heads<Q, P, N, 1>(a, dir_first, ndir);
}

template <int Q, int P, int N>
void launch_segment_states(const SsdArgs& a, int dir_first, int ndir) {
  using L = PieceLayout<FastCfg<Q, P, N>>;
  auto pieces = ssd_piece_state_kernel<Q, P, N>;
  static const bool attr_set = [&] {
    HLM_CUDA_CHECK(cudaFuncSetAttribute(pieces, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(L::total)));
    return true;
  }();
  (void)attr_set;
  HLM_LAUNCH(pieces, dim3(static_cast<unsigned>((a.nseg - 1) * a.pps), static_cast<unsigned>(a.H), static_cast<unsigned>(a.B * ndir)),
             dim3(256), L::total, a, dir_first, ndir);
  HLM_CUDA_CHECK_LAUNCH();
  const int64_t threads = static_cast<int64_t>(a.B) * a.H * a.P * a.N / 4;
  auto pass = ssd_state_pass_kernel;
  HLM_LAUNCH(pass, dim3(static_cast<unsigned>((threads + 255) / 256), static_cast<unsigned>(ndir)), dim3(256), 0, a,
             dir_first);
  HLM_CUDA_CHECK_LAUNCH();
}

template void launch_state_sweep<64, 64, 128>(const SsdArgs&, int, int);
template void launch_state_sweep<64, 64, 64>(const SsdArgs&, int, int);
template void launch_state_sweep<64, 128, 128>(const SsdArgs&, int, int);
template void launch_segment_states<64, 64, 128>(const SsdArgs&, int, int);
template void launch_segment_states<64, 64, 64>(const SsdArgs&, int, int);
template void launch_segment_states<64, 128, 128>(const SsdArgs&, int, int);

}  // namespace hlm::cuda::ssd
