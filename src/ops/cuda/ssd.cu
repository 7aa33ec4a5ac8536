// CUDA entry points of the Mamba-2 SSD scan (hlm::cuda::ssd_forward / ssd_backward / ssd_step):
// argument checks, the choice between the tensor-core path and the generic fallback, workspace.
//
// Tensor-core path (bf16 activations, 16-byte aligned rows, (P, N) in kFastShapes), chunk Q = 64:
// the chunks of each row are cut into segments (enough blocks to fill the GPU, see
// choose_seg_chunks), the segments into pieces; with one segment the state passes are skipped.
//  forward   3 kernels: local state of each piece (one weighted product over its tokens), state
//                       pass over pieces, then per (head, segment, row) a block walks the
//                       segment's chunks: G = C Bᵀ, M = G ∘ decay ∘ dt, y = M x + decay (C Hᵀ) +
//                       D x, fp32 state in registers (ssd_state.cu, ssd_fwd.cu).
//  backward  5 kernels: piece states and the state pass (both directions), state sweeps storing
//                       the states entering / gradients leaving each chunk, per-(chunk, group)
//                       gradients, parameter reduction (ssd_state.cu, ssd_bwd.cu,
//                       ssd_generic.cu).
// Generic path (anything else): the sequential recurrence in fp32, one block per (row, head).
// SsdParams::chunk is a hint for the CPU algorithm; the CUDA path picks its own chunk (results
// agree to rounding).
#include <algorithm>
#include <cstdlib>
#include <utility>
#include <vector>

#include "ops/cuda/ssd_kernels.cuh"
#include "ops/ssd.h"

namespace hlm::cuda {
namespace {

using ssd::SsdArgs;

// Device scratch that grows on demand (stream-ordered allocation, never shrinks).
class SsdScratch {
 public:
  void* get(size_t bytes) {
    if (bytes > size_) {
      note_reallocation();  // recorded graphs holding the old address must be re-recorded
      if (ptr_) HLM_CUDA_CHECK(cudaFreeAsync(ptr_, stream()));
      size_t rounded = (bytes + (size_t{1} << 21) - 1) & ~((size_t{1} << 21) - 1);
      HLM_CUDA_CHECK(cudaMallocAsync(&ptr_, rounded, stream()));
      size_ = rounded;
    }
    return ptr_;
  }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};
SsdScratch& ssd_scratch() {
  static SsdScratch s;
  return s;
}

void require(const Tensor& t, std::initializer_list<int64_t> shape, const char* what) {
  HLM_CHECK_ARG(t.defined(), "ssd (CUDA): {} is not set", what);
  HLM_CHECK_ARG(t.device == Device::CUDA, "ssd (CUDA): {} is on {}, expected CUDA", what, device_name(t.device));
  bool ok = t.ndim == static_cast<int>(shape.size());
  int d = 0;
  for (int64_t s : shape) ok = ok && t.shape[static_cast<size_t>(d++)] == s;
  if (!ok) {
    std::string want;
    for (int64_t s : shape) {
      if (!want.empty()) want += ',';
      want += std::to_string(s);
    }
    fail(ErrorKind::InvalidArgument, "ssd (CUDA): {} has shape {}, expected [{}]", what, t.shape_str(), want);
  }
}
void require_opt(const Tensor& t, std::initializer_list<int64_t> shape, const char* what) {
  if (t.defined()) require(t, shape, what);
}
void require_contiguous_f32(const Tensor& t, const char* what) {
  if (!t.defined()) return;
  HLM_CHECK_ARG(t.dtype == DType::F32, "ssd (CUDA): {} must be F32, got {}", what, dtype_name(t.dtype));
  HLM_CHECK_ARG(t.is_contiguous(), "ssd (CUDA): {} must be contiguous", what);
}
void require_vector(const Tensor& t, int64_t H, const char* what) {
  if (!t.defined()) return;
  require(t, {H}, what);
  HLM_CHECK_ARG(t.stride[0] == 1 || H == 1, "ssd (CUDA): {} must be contiguous", what);
  ssd::scalar_type(t, "ssd", what);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }
bool row_view_aligned(const void* p, int64_t ld) { return aligned16(p) && ld % 8 == 0; }

struct Dims {
  int64_t B, T, H, P, G, N;
};

// Checks the inputs shared by forward and backward and fills the input half of the descriptor.
Dims check_inputs(const SsdParams& p, SsdArgs* a) {
  HLM_CHECK_ARG(p.x.defined() && p.x.ndim == 4, "ssd (CUDA): x must be [B,T,H,P], got {}",
                p.x.defined() ? p.x.describe() : std::string("nothing"));
  HLM_CHECK_ARG(p.Bm.defined() && p.Bm.ndim == 4, "ssd (CUDA): Bm must be [B,T,G,N]");
  Dims d{p.x.size(0), p.x.size(1), p.x.size(2), p.x.size(3), p.Bm.size(2), p.Bm.size(3)};
  require(p.x, {d.B, d.T, d.H, d.P}, "x");
  require(p.Bm, {d.B, d.T, d.G, d.N}, "Bm");
  require(p.Cm, {d.B, d.T, d.G, d.N}, "Cm");
  require(p.dt, {d.B, d.T, d.H}, "dt");
  require_vector(p.A_log, d.H, "A_log");
  HLM_CHECK_ARG(p.A_log.defined(), "ssd (CUDA): A_log is not set");
  require_vector(p.D, d.H, "D");
  require_vector(p.dt_bias, d.H, "dt_bias");
  require_opt(p.doc, {d.B, d.T}, "doc");
  HLM_CHECK_ARG(!p.doc.defined() || p.doc.dtype == DType::I32, "ssd (CUDA): doc must be I32");
  require_opt(p.h0, {d.B, d.H, d.P, d.N}, "h0");
  require_contiguous_f32(p.h0, "h0");
  HLM_CHECK_ARG(d.G > 0 && d.H % d.G == 0, "ssd (CUDA): heads {} not divisible by groups {}", d.H, d.G);
  HLM_CHECK_ARG(d.P > 0 && d.N > 0, "ssd (CUDA): P and N must be positive");
  HLM_CHECK_ARG(p.x.dtype == p.Bm.dtype && p.x.dtype == p.Cm.dtype,
                "ssd (CUDA): x, Bm, Cm must share a dtype ({}, {}, {})", dtype_name(p.x.dtype),
                dtype_name(p.Bm.dtype), dtype_name(p.Cm.dtype));
  HLM_CHECK_ARG(p.dt_min <= p.dt_max, "ssd (CUDA): dt_min {} > dt_max {}", p.dt_min, p.dt_max);
  HLM_CHECK_ARG(d.B < 65536 && d.T < (int64_t{1} << 31) && d.H < 65536,
                "ssd (CUDA): sizes out of range (B {}, T {}, H {})", d.B, d.T, d.H);
  ssd::scalar_type(p.x, "ssd", "x");
  a->B = static_cast<int>(d.B);
  a->T = static_cast<int>(d.T);
  a->H = static_cast<int>(d.H);
  a->G = static_cast<int>(d.G);
  a->P = static_cast<int>(d.P);
  a->N = static_cast<int>(d.N);
  a->dt_min = p.dt_min;
  a->dt_max = p.dt_max;
  if (d.B * d.T == 0) return d;
  RowView x = as_rows(p.x, 2, "ssd x"), bm = as_rows(p.Bm, 2, "ssd Bm"), cm = as_rows(p.Cm, 2, "ssd Cm");
  RowView dt = as_rows(p.dt, 1, "ssd dt");
  a->x = x.data;
  a->ld_x = x.ld;
  a->Bm = bm.data;
  a->ld_B = bm.ld;
  a->Cm = cm.data;
  a->ld_C = cm.ld;
  a->dt = dt.data;
  a->ld_dt = dt.ld;
  a->dt_type = ssd::scalar_type(p.dt, "ssd", "dt");
  a->A_log = p.A_log.data;
  a->A_type = ssd::scalar_type(p.A_log, "ssd", "A_log");
  if (p.D.defined()) {
    a->D = p.D.data;
    a->D_type = ssd::scalar_type(p.D, "ssd", "D");
  }
  if (p.dt_bias.defined()) {
    a->dt_bias = p.dt_bias.data;
    a->bias_type = ssd::scalar_type(p.dt_bias, "ssd", "dt_bias");
  }
  if (p.doc.defined()) {
    RowView doc = as_rows(p.doc, 1, "ssd doc");
    a->doc = static_cast<const int32_t*>(doc.data);
    a->ld_doc = doc.ld;
  }
  a->h0 = p.h0.defined() ? p.h0.ptr<float>() : nullptr;
  return d;
}

using FastFn = void (*)(const SsdArgs&);
struct FastShape {
  int P, N;
  FastFn fwd, bwd;
};
constexpr FastShape kFastShapes[] = {
    {64, 128, ssd::launch_fwd_fast<64, 64, 128>, ssd::launch_bwd_fast<64, 64, 128>},
    {64, 64, ssd::launch_fwd_fast<64, 64, 64>, ssd::launch_bwd_fast<64, 64, 64>},
    {128, 128, ssd::launch_fwd_fast<64, 128, 128>, ssd::launch_bwd_fast<64, 128, 128>},
};
constexpr int kFastChunk = 64;
// Seconds per chunk of the wgmma walk with two heads per SM (the cost model's main_s; the mma.sync
// walk's is 7.5e-6): ~8.6e-6 measured on an H100 (64K, two segments: 4.4 ms of walk for 512
// chunks per block; run8-2026-12-06/c-wg-scan-ahead-h100).
constexpr double kWgWalkSeconds = 8.5e-6;
// The warp-specialised walk's seconds per chunk and block of two heads (one block per SM, so the
// same two heads per SM): 6.2e-6 measured on an H100 (64K, one segment: 6.38 ms for 1,024 chunks
// per block; run11-2026-12-07/a-h100).
constexpr double kWsWalkSeconds = 6.2e-6;
// Variants 4-7 (y by TMA store; 5-7 with TMA loads): variant 5 takes 2.48 ms at 64K on an H200 for
// 512 chunks per block in one wave, segment states included (run15-2026-12-07/f), so <= 4.9e-6
// (variant 4: 2.69 ms, 5.3e-6). At gpu.md's shapes (8B: 2K-256K, 8 x 8K; the 1.43B's 64 heads at
// 8K-128K) any value from 3.7e-6 to 7.5e-6 picks the same segments; other shapes may differ.
constexpr double kTmaWalkSeconds = 4.9e-6;

const FastShape* fast_shape(const SsdArgs& a) {
  for (const FastShape& s : kFastShapes)
    if (s.P == a.P && s.N == a.N) return &s;
  return nullptr;
}

// Chunks per segment for nseg = ceil(nchunks / seg_chunks) segments: the count with the fewest
// predicted seconds. `units` heads run per segment index (B * H, times 2 for the backward's two
// directions), `slots` heads fit on the GPU at once. The walks (or the backward's sweeps) cost
// waves x chunks per segment x main_s; with more than one segment the piece states cost local_s
// per (unit, chunk) of the segments they cover, spread over all slots (the pieces run in
// parallel), plus their traffic (~8 bytes per state element of each piece and segment, at
// ~3.5 TB/s) and ~5 us for the two extra launches. Near-ties (2%) go to fewer segments.
// HLM_SSD_SEG_CHUNKS=n forces n (tests, experiments).
int choose_seg_chunks(int nchunks, int64_t units, int64_t slots, int64_t state_elems_per_unit, double main_s,
                      double local_s) {
  if (const char* env = std::getenv("HLM_SSD_SEG_CHUNKS")) {
    const int v = std::atoi(env);
    if (v > 0) return std::min(v, nchunks);
  }
  constexpr double kBytesPerSecond = 3.5e12, kLaunchSeconds = 5e-6;
  constexpr int64_t kMaxSegs = 4096;  // search bound (grid.y allows 65535)
  auto ceil_div = [](int64_t x, int64_t y) { return (x + y - 1) / y; };
  auto cost = [&](int64_t len) {
    const int64_t segs = ceil_div(nchunks, len);
    const double walk = static_cast<double>(ceil_div(segs * units, slots) * len) * main_s;  // per slot
    if (segs == 1) return walk;
    const int64_t pieces = segs * units + 2 * slots;  // segment states + pieces (~2 per slot)
    return walk + static_cast<double>(units * (nchunks - len)) * local_s / static_cast<double>(slots) +
           kLaunchSeconds + static_cast<double>(pieces * state_elems_per_unit) * 8.0 / kBytesPerSecond;
  };
  std::vector<std::pair<double, int64_t>> c;  // (seconds, chunks per segment) by segment count
  for (int64_t s = 1; s <= std::min<int64_t>(nchunks, kMaxSegs); ++s) {
    const int64_t len = ceil_div(nchunks, s);
    if (c.empty() || c.back().second != len) c.emplace_back(cost(len), len);
  }
  double best = 1e30;
  for (const auto& e : c) best = std::min(best, e.first);
  for (const auto& e : c)  // fewest segments first (len decreasing)
    if (e.first <= 1.02 * best) return static_cast<int>(e.second);
  return nchunks;
}

// Sets nchunks, seg_chunks, nseg of the fast path (per-chunk seconds: see the NOTES' model), and
// the pieces: ~2 piece blocks per slot, 16 .. kMaxPieceChunks chunks each (a piece block's fixed
// cost, its coefficient scan and pipeline start, is worth several chunks; H200: 4K forward
// 0.304 ms with 16-chunk pieces against ~0.35 with 4). HLM_SSD_PIECE_CHUNKS=n forces n, capped to
// the shared-memory limit.
void split_segments(SsdArgs* a, int64_t units, bool backward) {
  a->nchunks = (a->T + kFastChunk - 1) / kFastChunk;
  const int64_t slots = static_cast<int64_t>(num_sms()) * (a->P <= 64 ? 2 : 1);
  double main_s = 7.5e-6;  // the mma.sync walks
  if (backward)
    main_s = 3.0e-6;
  else if (a->fwd_variant == 1)
    main_s = kWgWalkSeconds;
  else if (a->fwd_variant == 2 || a->fwd_variant == 3)
    main_s = kWsWalkSeconds;
  else if (a->fwd_variant >= 4 && a->fwd_variant <= 7)
    main_s = kTmaWalkSeconds;
  constexpr double local_s = 0.8e-6;
  a->seg_chunks = choose_seg_chunks(a->nchunks, units, slots, static_cast<int64_t>(a->P) * a->N, main_s, local_s);
  a->nseg = (a->nchunks + a->seg_chunks - 1) / a->seg_chunks;
  const char* env = std::getenv("HLM_SSD_SWEEP_HEADS");  // 1: one head per sweep block
  a->sweep_heads = a->P <= 64 && (a->H / a->G) % 2 == 0 && !(env && std::atoi(env) == 1) ? 2 : 1;
  a->pps = 1;
  a->piece_chunks = a->seg_chunks;
  if (a->nseg > 1) {
    const int64_t per_piece = units * (a->nseg - 1);  // blocks per piece index
    int64_t pc = 0;
    if (const char* penv = std::getenv("HLM_SSD_PIECE_CHUNKS")) pc = std::max(0, std::atoi(penv));  // 0: automatic
    if (pc == 0) {
      const int64_t pps = std::max<int64_t>(1, (2 * slots + per_piece - 1) / per_piece);
      pc = std::max<int64_t>(std::min<int64_t>(16, a->seg_chunks), (a->seg_chunks + pps - 1) / pps);
    }
    pc = std::min<int64_t>({pc, ssd::kMaxPieceChunks, a->seg_chunks});
    a->pps = static_cast<int>((a->seg_chunks + pc - 1) / pc);
    a->piece_chunks = static_cast<int>(pc);
  }
}

// The forward walk's kernel (SsdArgs::fwd_variant). 5 (the default on sm_90 for P = 64 and an even
// number of heads per group): variant 4 with the producer's x, B and C tiles brought by TMA loads
// (one thread issues a stage's boxes; 128-byte-swizzled tiles that the wgmma descriptors read
// directly): 64K 2.50 ms against 2.69 for 4 and 4.09 for 11; 4K 0.200 against 0.217; 8 x 8K 1.95
// against 2.22 (H100, one run: run15-2026-12-07/b-h100-forward-ab); where TMA cannot describe x, B
// or C (a base or row pitch not a multiple of 16 bytes) the launch runs 4. 4: variant 3 with y
// stored by TMA (one thread per consumer issues each 64 x 64 tile) instead of the consumers'
// copy-out: 64K 2.67 ms against 2.91 for 3 (run14-2026-12-07/b-h100-forward-ab); where TMA cannot
// describe y the launch runs 3. 3: the
// warp-specialised wgmma walk (ssd_fwd_wg.cu; two heads and a
// producer warpgroup per block) with its consumers' chunk reordered (Yo and the state update
// issued together): 64K 2.90 ms against 3.01 for 2 and 4.06 for 11 (H100, one run:
// run13-2026-12-07/b-h100-forward-ab; round 14's default, 2, read 3.18 there). 2: the same walk in
// round 11's order (HLM_SSD_WS_LATE_COPY=1: its y copy-out under the Yo product, 2.91 against
// 3.05 ms, run13/c), measured 7 % faster than 11
// on an H100 (64K: 3.75 vs 4.02 ms; 4K: 0.275 vs 0.292; run11-2026-12-07/a-h100). 1 (sm_90,
// P = 64): one warpgroup per head on wgmma; slower than 11 (64K: 4.69 ms in the same run). The
// mma.sync walks (ssd_fwd.cu), used elsewhere: 11: one head per block, 2 blocks/SM - measured
// fastest of the three on the H200 (64K: 5.25 ms vs 5.43 for 12, 6.22 for 21); 12: two heads of a
// group on 16 warps sharing the B, C tiles; 21: both heads in each of 8 warps. (Variant 5 in
// clusters of head-pair blocks sharing B and C by TMA multicast was slower: 64K 3.00 ms in
// clusters of 2, 6.11 in clusters of 4, run15/b; its code is in ad566df.)
// 6 (opt-in): 5 with each head's chunk scan on its own producer warp (where 5 runs). 7 (opt-in):
// 6 with the scans in factored form (ssd_kernels.cuh, FactoredScan): the state kept scaled and
// rescaled only when its scale runs low, and in chunks without a boundary and of moderate decay
// M = G ∘ fcol (no exponential); its time depends on the decays (dt, A) of the data.
// HLM_SSD_FWD_VARIANT picks among those that apply.
int forward_variant(int64_t P, int64_t heads_per_group) {
  const bool wgmma = P == 64 && device_props().major == 9;
  const char* env = std::getenv("HLM_SSD_FWD_VARIANT");
  const int v = env && *env ? std::atoi(env) : (wgmma && heads_per_group % 2 == 0 ? 5 : 11);
  if (v == 1 && wgmma) return 1;
  if (v >= 2 && v <= 7 && wgmma && heads_per_group % 2 == 0) return v;
  if ((v == 12 || v == 21) && P <= 64 && heads_per_group % 2 == 0) return v;
  return 11;
}

// The backward's chunk-gradient kernel (SsdArgs::bwd_variant): 1 (the default on sm_90 for
// P = 64) the wgmma kernel (ssd_bwd_wg.cu), measured ~5 % faster than the mma.sync kernel on an
// H100 (fwd + bwd 64K: 13.18 vs 13.92 ms; 8 x 8K 12.83 vs 13.57; run11-2026-12-07/a-h100; with the
// variant-2 forward 12.71 vs 13.57, d-h100-defaults); 2 (sm_90, P = 64) its warp-specialised form
// (a producer warpgroup and an mbarrier ring): correct, not faster (12.80 ms at 64K, same run);
// 3 (sm_90, P = 64) variant 1 with warpgroup 0's products pipelined over two heads, 4 that with
// warpgroup 1 alone issuing the copies (12.87 and 12.52 against 12.43 ms, run12-2026-12-07/a);
// 0 the mma.sync kernel (ssd_bwd.cu), used elsewhere. HLM_SSD_BWD_VARIANT picks.
int backward_variant(int64_t P) {
  const bool wgmma = P == 64 && device_props().major == 9;
  const char* env = std::getenv("HLM_SSD_BWD_VARIANT");
  const int v = env && *env ? std::atoi(env) : 1;
  return v >= 1 && v <= 4 && wgmma ? v : 0;
}

// Zero-fills or copies a [B,H,P,N] fp32 state (for T == 0).
void copy_or_zero(float* dst, const float* src, size_t n) {
  if (src)
    HLM_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, stream()));
  else
    HLM_CUDA_CHECK(cudaMemsetAsync(dst, 0, n * sizeof(float), stream()));
}

}  // namespace

void ssd_forward(const SsdParams& p, const Tensor& y, const Tensor& h_final) {
  SsdArgs a;
  Dims d = check_inputs(p, &a);
  require(y, {d.B, d.T, d.H, d.P}, "y");
  HLM_CHECK_ARG(y.dtype == p.x.dtype, "ssd (CUDA): y dtype {} differs from x dtype {}", dtype_name(y.dtype),
                dtype_name(p.x.dtype));
  require_opt(h_final, {d.B, d.H, d.P, d.N}, "h_final");
  require_contiguous_f32(h_final, "h_final");
  a.h_final = h_final.defined() ? h_final.ptr<float>() : nullptr;
  const size_t state_elems = static_cast<size_t>(d.B * d.H * d.P * d.N);
  if (d.B * d.T == 0) {
    if (a.h_final && state_elems) copy_or_zero(a.h_final, a.h0, state_elems);
    return;
  }
  RowView yr = as_rows(y, 2, "ssd y");
  a.y = yr.data;
  a.ld_y = yr.ld;
  const FastShape* fs = fast_shape(a);
  const bool fast = fs && p.x.dtype == DType::BF16 && row_view_aligned(a.x, a.ld_x) &&
                    row_view_aligned(a.Bm, a.ld_B) && row_view_aligned(a.Cm, a.ld_C) &&
                    row_view_aligned(a.y, a.ld_y);
  if (fast) {
    a.fwd_variant = forward_variant(d.P, d.H / d.G);
    split_segments(&a, d.B * d.H, false);
    if (a.nseg > 1) {
      const size_t seg_states = static_cast<size_t>(d.B) * a.nseg * d.H * d.P * d.N;
      const size_t pieces = static_cast<size_t>(d.B) * (a.nseg - 1) * a.pps * d.H;
      auto* base = static_cast<float*>(ssd_scratch().get((seg_states + pieces * (d.P * d.N + 1)) * 4));
      a.ws_seg = base;
      a.ws_piece = base + seg_states;
      a.ws_piece_gamma = a.ws_piece + pieces * d.P * d.N;
    }
    fs->fwd(a);
  } else {
    auto* ws = static_cast<float*>(ssd_scratch().get(state_elems * sizeof(float)));
    ssd::launch_fwd_generic(a, ssd::scalar_type(p.x, "ssd", "x"), ws);
  }
}

void ssd_backward(const SsdParams& p, const Tensor& dy, const Tensor& dh_final, const SsdGrads& g) {
  SsdArgs a;
  Dims d = check_inputs(p, &a);
  require(dy, {d.B, d.T, d.H, d.P}, "dy");
  HLM_CHECK_ARG(dy.dtype == p.x.dtype, "ssd (CUDA): dy dtype {} differs from x dtype {}", dtype_name(dy.dtype),
                dtype_name(p.x.dtype));
  require_opt(dh_final, {d.B, d.H, d.P, d.N}, "dh_final");
  require_contiguous_f32(dh_final, "dh_final");
  require_opt(g.dx, {d.B, d.T, d.H, d.P}, "dx");
  require_opt(g.ddt, {d.B, d.T, d.H}, "ddt");
  require_opt(g.dBm, {d.B, d.T, d.G, d.N}, "dBm");
  require_opt(g.dCm, {d.B, d.T, d.G, d.N}, "dCm");
  require_vector(g.dA_log, d.H, "dA_log");
  require_vector(g.dD, d.H, "dD");
  require_vector(g.ddt_bias, d.H, "ddt_bias");
  require_opt(g.dh0, {d.B, d.H, d.P, d.N}, "dh0");
  require_contiguous_f32(g.dh0, "dh0");
  for (const Tensor* t : {&g.dx, &g.dBm, &g.dCm})
    HLM_CHECK_ARG(!t->defined() || t->dtype == p.x.dtype, "ssd (CUDA): gradient dtype {} differs from x dtype {}",
                  dtype_name(t->dtype), dtype_name(p.x.dtype));
  HLM_CHECK_ARG(!g.dD.defined() || p.D.defined(), "ssd (CUDA): dD requested but D is not set");
  a.dh_final = dh_final.defined() ? dh_final.ptr<float>() : nullptr;
  a.dh0 = g.dh0.defined() ? g.dh0.ptr<float>() : nullptr;
  const size_t state_elems = static_cast<size_t>(d.B * d.H * d.P * d.N);
  if (d.B * d.T == 0) {
    if (a.dh0 && state_elems) copy_or_zero(a.dh0, a.dh_final, state_elems);
    return;
  }
  RowView dyr = as_rows(dy, 2, "ssd dy");
  a.dy = dyr.data;
  a.ld_dy = dyr.ld;
  auto set_out = [](const Tensor& t, int inner, const char* what, void** ptr, int64_t* ld) {
    if (!t.defined()) return;
    RowView r = as_rows(t, inner, what);
    *ptr = r.data;
    *ld = r.ld;
  };
  set_out(g.dx, 2, "ssd dx", &a.dx, &a.ld_dx);
  set_out(g.ddt, 1, "ssd ddt", &a.ddt, &a.ld_ddt);
  set_out(g.dBm, 2, "ssd dBm", &a.dBm, &a.ld_dB);
  set_out(g.dCm, 2, "ssd dCm", &a.dCm, &a.ld_dC);
  if (g.ddt.defined()) a.ddt_type = ssd::scalar_type(g.ddt, "ssd", "ddt");
  const bool params = g.dA_log.defined() || g.dD.defined() || g.ddt_bias.defined();

  const FastShape* fs = fast_shape(a);
  bool fast = fs && p.x.dtype == DType::BF16 && row_view_aligned(a.x, a.ld_x) && row_view_aligned(a.Bm, a.ld_B) &&
              row_view_aligned(a.Cm, a.ld_C) && row_view_aligned(a.dy, a.ld_dy);
  for (auto [ptr, ld] : {std::pair{a.dx, a.ld_dx}, std::pair{a.dBm, a.ld_dB}, std::pair{a.dCm, a.ld_dC}})
    if (ptr) fast = fast && row_view_aligned(ptr, ld);

  int part_rows = 0;
  if (fast) {
    a.bwd_variant = backward_variant(d.P);
    // The sweeps store each chunk's bf16 state in core-matrix order where a wgmma chunk kernel
    // reads them, so it copies each as 16 KB of contiguous bytes (no row addressing: ~8 of its 12
    // cp.async per thread and head become plain offsets); fwd + bwd at 64K 10.95 ms against 12.43
    // row-major (H100, run12-2026-12-07). HLM_SSD_CORE_STATES=0 gives the row-major states.
    const char* core_env = std::getenv("HLM_SSD_CORE_STATES");
    a.core_states = a.bwd_variant >= 1 && !(core_env && std::atoi(core_env) == 0);
    split_segments(&a, 2 * d.B * d.H, true);
    const size_t states = static_cast<size_t>(d.B) * d.H * a.nchunks * d.P * d.N;  // per workspace
    const size_t part = (static_cast<size_t>(d.B) * a.nchunks * d.H * 3 + 3) / 4 * 4;  // 16-byte aligned after
    const size_t seg_states = a.nseg > 1 ? static_cast<size_t>(2 * d.B) * a.nseg * d.H * d.P * d.N : 0;
    const size_t pieces = a.nseg > 1 ? static_cast<size_t>(2 * d.B) * (a.nseg - 1) * a.pps * d.H : 0;
    auto* base = static_cast<unsigned char*>(
        ssd_scratch().get(2 * states * 2 + (part + seg_states + pieces * (d.P * d.N + 1)) * 4));
    a.ws_hin = reinterpret_cast<ssd::bf16_t*>(base);
    a.ws_dhout = a.ws_hin + states;
    auto* f32 = reinterpret_cast<float*>(base + 4 * states);
    a.ws_part = params ? f32 : nullptr;
    a.ws_seg = a.nseg > 1 ? f32 + part : nullptr;
    a.ws_piece = a.nseg > 1 ? a.ws_seg + seg_states : nullptr;
    a.ws_piece_gamma = a.nseg > 1 ? a.ws_piece + pieces * d.P * d.N : nullptr;
    part_rows = static_cast<int>(d.B) * a.nchunks;
    fs->bwd(a);
  } else {
    const size_t floats = ssd::generic_bwd_ws_floats(a);
    const size_t part = static_cast<size_t>(d.B) * d.H * 3;
    auto* base = static_cast<float*>(ssd_scratch().get((floats + part) * sizeof(float)));
    a.ws_part = params ? base + floats : nullptr;
    part_rows = static_cast<int>(d.B);
    ssd::launch_bwd_generic(a, ssd::scalar_type(p.x, "ssd", "x"), base);
  }
  if (params)
    ssd::launch_param_reduce(a.ws_part, part_rows, a.H, a.A_log, a.A_type, g.dA_log.data,
                             g.dA_log.defined() ? ssd::scalar_type(g.dA_log, "ssd", "dA_log") : 0, g.dD.data,
                             g.dD.defined() ? ssd::scalar_type(g.dD, "ssd", "dD") : 0, g.ddt_bias.data,
                             g.ddt_bias.defined() ? ssd::scalar_type(g.ddt_bias, "ssd", "ddt_bias") : 0);
}

}  // namespace hlm::cuda
