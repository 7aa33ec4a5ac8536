// Chunk-parallel SSD states: the segment sweeps (states / state gradients over the chunks of one
// segment, fp32 in registers) and the short sequential state pass over segments.
#include "ops/cuda/ssd_kernels.cuh"

namespace hlm::cuda::ssd {
namespace {

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
// (cp.async) are prepared while all warps fold the current chunk into the state.
template <int Q, int P, int N, int kHG>
__global__ void __launch_bounds__(256 * kHG, (P <= 64 && kHG == 1) ? 2 : 1)
    ssd_state_sweep_kernel(const SsdArgs a, int dir_first, int ndir, int local) {
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
  const auto* act = static_cast<const bf16_t*>(reverse ? a.dy : a.x) + static_cast<int64_t>(h_first) * P;
  const int64_t ld_act = reverse ? a.ld_dy : a.ld_x;
  const auto* vec = static_cast<const bf16_t*>(reverse ? a.Cm : a.Bm) + static_cast<int64_t>(g) * N;
  const int64_t ld_vec = reverse ? a.ld_C : a.ld_B;
  bf16_t* ws = local ? nullptr : (reverse ? a.ws_dhout : a.ws_hin) + (static_cast<int64_t>(b) * a.H + h) * C * P * N;
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
  if (!local) {
    if (a.nseg > 1)
      start = a.ws_seg + seg_state_offset(a, dir, b, seg, h);
    else
      start = reverse ? (a.dh_final ? a.dh_final + state_off : nullptr) : (a.h0 ? a.h0 + state_off : nullptr);
  }
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
  float gprod = 1.f;  // decay over the segment (product of the chunk decays)

  for (int it = 0; it < nit; ++it) {
    const int buf = it & 1;
    // The state entering (forwards) / the gradient leaving (backwards) this chunk.
    if (!local) S.store_bf16(ws + static_cast<int64_t>(chunk_of(it)) * P * N, N);
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
    gprod *= cur.gamma;
    S.add_outer(As0 + buf * kXE, Vs0 + buf * kNE, reverse ? cur.eoff : cur.wdt);
    if (load2) {  // chunk it's slot: its scan ran in the previous iteration
      if (raw_thread) raw0[(2 * raw_head + buf) * Q + raw_pos] = next_raw;
      if (tid < Q) bnd[buf * Q + tid] = next_bnd;
    }
  }
  if (local) {
    S.store_f32(a.ws_seg + seg_state_offset(a, dir, b, seg, h));
    if (dir == dir_first && lw == 0 && (tid & 31) == 0)
      a.ws_seg_gamma[(static_cast<int64_t>(b) * a.nseg + seg) * a.H + h] = gprod;
  } else if (reverse && a.nseg == 1 && a.dh0) {
    S.store_f32(a.dh0 + state_off);
  }
}

// One thread per 4 state elements walks the segments in order (forwards: from h0, writing the
// state entering each segment and h_final; backwards: from dh_final, writing the gradient leaving
// each segment and dh0). Loads of a batch of segments are issued before the dependent updates.
__global__ void __launch_bounds__(256) ssd_state_pass_kernel(const SsdArgs a, int dir_first) {
  constexpr int kBatch = 8;
  const int dir = dir_first + static_cast<int>(blockIdx.y);
  const int64_t pn4 = static_cast<int64_t>(a.P) * a.N / 4;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<int64_t>(a.B) * a.H * pn4) return;
  const int64_t e = i % pn4, bh = i / pn4;
  const int h = static_cast<int>(bh % a.H), b = static_cast<int>(bh / a.H);
  const float* start = dir == 0 ? a.h0 : a.dh_final;
  float* finish = dir == 0 ? a.h_final : a.dh0;
  const int64_t so = bh * pn4 * 4 + 4 * e;  // offset in a [B,H,P,N] state
  float4 run = start ? make_float4(start[so], start[so + 1], start[so + 2], start[so + 3]) : make_float4(0.f, 0.f, 0.f, 0.f);
  for (int k0 = 0; k0 < a.nseg; k0 += kBatch) {
    float4 loc[kBatch] = {};
    float gam[kBatch] = {};
    auto seg_of = [&](int k) { return dir == 0 ? k : a.nseg - 1 - k; };
#pragma unroll
    for (int j = 0; j < kBatch; ++j)
      if (k0 + j < a.nseg) {
        const int s = seg_of(k0 + j);
        loc[j] = reinterpret_cast<const float4*>(a.ws_seg + seg_state_offset(a, dir, b, s, h))[e];
        gam[j] = a.ws_seg_gamma[(static_cast<int64_t>(b) * a.nseg + s) * a.H + h];
      }
#pragma unroll
    for (int j = 0; j < kBatch; ++j)
      if (k0 + j < a.nseg) {
        reinterpret_cast<float4*>(a.ws_seg + seg_state_offset(a, dir, b, seg_of(k0 + j), h))[e] = run;
        run.x = gam[j] * run.x + loc[j].x;
        run.y = gam[j] * run.y + loc[j].y;
        run.z = gam[j] * run.z + loc[j].z;
        run.w = gam[j] * run.w + loc[j].w;
      }
  }
  if (finish) {
    finish[so] = run.x;
    finish[so + 1] = run.y;
    finish[so + 2] = run.z;
    finish[so + 3] = run.w;
  }
}

template <int Q, int P, int N, int kHG>
void launch_sweep_heads(const SsdArgs& a, int dir_first, int ndir, bool local) {
  using L = SweepLayout<FastCfg<Q, P, N>, kHG>;
  auto kernel = ssd_state_sweep_kernel<Q, P, N, kHG>;
  static const bool attr_set = [&] {
    HLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(L::total)));
    return true;
  }();
  (void)attr_set;
  dim3 grid(static_cast<unsigned>(a.H / kHG), static_cast<unsigned>(a.nseg), static_cast<unsigned>(a.B * ndir));
  HLM_LAUNCH(kernel, grid, dim3(256 * kHG), L::total, a, dir_first, ndir, local ? 1 : 0);
  HLM_CUDA_CHECK_LAUNCH();
}

}  // namespace

// Two heads of a group per block (sharing the B / C tiles; 128 registers at 512 threads) when
// a.sweep_heads == 2 (P <= 64, even heads per group); else one head per block.
template <int Q, int P, int N>
void launch_state_sweep(const SsdArgs& a, int dir_first, int ndir, bool local) {
  if constexpr (P <= 64) {
    if (a.sweep_heads == 2) return launch_sweep_heads<Q, P, N, 2>(a, dir_first, ndir, local);
  }
  launch_sweep_heads<Q, P, N, 1>(a, dir_first, ndir, local);
}

void launch_state_pass(const SsdArgs& a, int dir_first, int ndir) {
  const int64_t threads = static_cast<int64_t>(a.B) * a.H * a.P * a.N / 4;
  auto kernel = ssd_state_pass_kernel;
  HLM_LAUNCH(kernel, dim3(static_cast<unsigned>((threads + 255) / 256), static_cast<unsigned>(ndir)), dim3(256), 0, a,
             dir_first);
  HLM_CUDA_CHECK_LAUNCH();
}

template void launch_state_sweep<64, 64, 128>(const SsdArgs&, int, int, bool);
template void launch_state_sweep<64, 64, 64>(const SsdArgs&, int, int, bool);
template void launch_state_sweep<64, 128, 128>(const SsdArgs&, int, int, bool);

}  // namespace hlm::cuda::ssd
