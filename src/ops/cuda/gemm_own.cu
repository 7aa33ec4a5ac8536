// Our own GEMM kernels (see gemm_own.cuh): the decode GEMVs (M = 1: W streamed through shared
// memory; M ≤ 8: tensor cores) and the plain tiled fallback GEMM.
#include "ops/cuda/gemm_own.cuh"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "ops/cuda/activation.cuh"
#include "ops/cuda/common.cuh"
#include "ops/cuda/warp_mma.cuh"

namespace hlm::cuda {

namespace {

// 0: none; else the bias dtype's code (read per element, so any float dtype works).
enum BiasKind : int { kNoBias = 0, kBiasF32 = 1, kBiasBF16 = 2, kBiasF16 = 3 };

int bias_kind(const void* bias, DType dtype) {
  if (!bias) return kNoBias;
  switch (dtype) {
    case DType::F32: return kBiasF32;
    case DType::BF16: return kBiasBF16;
    case DType::F16: return kBiasF16;
    default: fail(ErrorKind::Unsupported, "gemm: bias dtype {} is not supported", dtype_name(dtype));
  }
}

__device__ __forceinline__ float bias_at(const void* bias, int kind, int64_t n) {
  switch (kind) {
    case kBiasF32: return static_cast<const float*>(bias)[n];
    case kBiasBF16: return to_f32(static_cast<const __nv_bfloat16*>(bias)[n]);
    case kBiasF16: return to_f32(static_cast<const __half*>(bias)[n]);
    default: return 0.0f;
  }
}

// ---- GEMV: y[M ≤ 8, N] = x · Wᵀ -------------------------------------------------------------
//
// One block (4 warps) owns a tile of 16 W rows and one split of K; its warps take the split's
// 128-wide k steps in turn. In a step, lane (g = lane/4, q = lane%4) loads 16 bytes of W rows g
// and g+8 and of x row g (zero where g ≥ M) at k = step·128 + (i·4 + q)·8, i < 4: 4 lanes read
// 64 contiguous bytes of a row per load, 256 per step, and each lane has 8 W loads in flight.
// Those registers are the m16n8k16 fragments directly: the product sums over k, so any
// permutation of k applied to both operands gives the same result, and lane (g, q) holding k
// offsets {0,1 | 2,3} of its 16 bytes as the fragment's {2q, 2q+1 | 2q+8, 2q+9} is one.
// Warps' accumulators are summed in warp order through shared memory; with several splits, each
// block writes its tile's partial sums and the last block to finish (a per-tile counter) adds
// them in split order and resets the counter: deterministic.

constexpr int kGemvWarps = 4;
constexpr int kGemvThreads = 32 * kGemvWarps;
constexpr int kGemvTileRows = 16;                 // W rows per tile: the mma's M
constexpr int kGemvLoads = 4;                     // 16-byte loads per lane, row and step
constexpr int kGemvStepK = 4 * kGemvLoads * 8;    // k per warp step: 128
constexpr int kGemvTileOut = kGemvTileRows * 8;   // outputs per tile: 16 rows × 8 x rows

struct GemvParams {
  const __nv_bfloat16* x;
  int64_t ldx;
  const __nv_bfloat16* w;
  int64_t ldw;
  void* y;
  int64_t ldy;
  int64_t M, N, K;
  float alpha, beta;
  const void* bias;
  int bias_kind;
  int splits;
  int64_t steps_per_split, nsteps;
  float* partial;  // [tiles, splits, 128] when splits > 1
  int* counters;   // [tiles], zero between launches
  bool prefetch_w;  // stream kernel: request the first W chunks before pdl_begin (w is a weight)
  int act;          // stream kernel: -1, or the Activation applied to the rounded output
};

// alpha · v + beta · y[n] (+ bias[n]): an output of either GEMV before its rounding to TO.
template <typename TO>
__device__ __forceinline__ float gemv_out_value(const GemvParams& p, const TO* out, int64_t n, float v) {
  float o = p.alpha * v;
  if (p.beta != 0.0f) o += p.beta * to_f32(*out);
  return o + bias_at(p.bias, p.bias_kind, n);
}

// Partial sums written by other blocks of this launch: read past L1.
__device__ __forceinline__ float load_l2(const float* p) {
#ifdef HLM_CUDA_EMU
  return *p;
#else
  return __ldcg(p);
#endif
}
__device__ __forceinline__ int take_ticket(int* counter) {
#ifdef HLM_CUDA_EMU
  return (*counter)++;  // blocks run one at a time
#else
  return atomicAdd(counter, 1);
#endif
}

template <typename TO>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(const GemvParams p) {
  __shared__ float red[kGemvWarps][kGemvTileOut];
  __shared__ int last_block;
  const int t = static_cast<int>(threadIdx.x), lane = t & 31, warp = t >> 5;
  const int g = lane >> 2, q = lane & 3;
  const int64_t tile = blockIdx.x;
  const int split = static_cast<int>(blockIdx.y);
  const int64_t n0 = tile * kGemvTileRows;
  const bool va = n0 + g < p.N, vb = n0 + g + 8 < p.N, vx = g < p.M;
  const __nv_bfloat16* wa = p.w + (va ? n0 + g : 0) * p.ldw;
  const __nv_bfloat16* wb = p.w + (vb ? n0 + g + 8 : 0) * p.ldw;
  const __nv_bfloat16* xr = p.x + (vx ? g : 0) * p.ldx;
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  const int64_t s0 = split * p.steps_per_split, s1 = min(p.nsteps, s0 + p.steps_per_split);
  for (int64_t st = s0 + warp; st < s1; st += kGemvWarps) {
    uint4 ra[kGemvLoads], rb[kGemvLoads], rx[kGemvLoads];
#pragma unroll
    for (int i = 0; i < kGemvLoads; ++i) {
      const int64_t k = st * kGemvStepK + (i * 4 + q) * 8;
      const bool vk = k < p.K;  // K % 8 == 0: a 16-byte piece is all in or all out
      const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
      ra[i] = va && vk ? load_stream16(wa + k) : zero;
      rb[i] = vb && vk ? load_stream16(wb + k) : zero;
      rx[i] = vx && vk ? __ldg(reinterpret_cast<const uint4*>(xr + k)) : zero;
    }
#pragma unroll
    for (int i = 0; i < kGemvLoads; ++i) {
      const uint32_t a0[4] = {ra[i].x, rb[i].x, ra[i].y, rb[i].y};
      mma::mma_bf16(acc, a0, rx[i].x, rx[i].y);
      const uint32_t a1[4] = {ra[i].z, rb[i].z, ra[i].w, rb[i].w};
      mma::mma_bf16(acc, a1, rx[i].z, rx[i].w);
    }
  }
  // acc = C(g, 2q), C(g, 2q+1), C(g+8, 2q), C(g+8, 2q+1); C(r, m) = Σ_k W[n0+r, k] · x[m, k].
  red[warp][g * 8 + 2 * q] = acc[0];
  red[warp][g * 8 + 2 * q + 1] = acc[1];
  red[warp][(g + 8) * 8 + 2 * q] = acc[2];
  red[warp][(g + 8) * 8 + 2 * q + 1] = acc[3];
  __syncthreads();
  float v = red[0][t];  // t = r·8 + m: one output of the tile per thread
#pragma unroll
  for (int w = 1; w < kGemvWarps; ++w) v += red[w][t];
  if (p.splits > 1) {
    float* part = p.partial + tile * p.splits * kGemvTileOut;
    part[split * kGemvTileOut + t] = v;
    __threadfence();
    __syncthreads();
    if (t == 0) last_block = take_ticket(&p.counters[tile]) == p.splits - 1;
    __syncthreads();
    if (!last_block) return;
    __threadfence();
    v = load_l2(part + t);
    for (int sp = 1; sp < p.splits; ++sp) v += load_l2(part + sp * kGemvTileOut + t);
    if (t == 0) p.counters[tile] = 0;  // ready for the next launch
  }
  const int r = t >> 3, m = t & 7;
  const int64_t n = n0 + r;
  if (m < p.M && n < p.N) {
    TO* out = static_cast<TO*>(p.y) + m * p.ldy + n;
    *out = from_f32<TO>(gemv_out_value(p, out, n, v));
  }
}

// ---- GEMV at M = 1: W streamed through shared memory ---------------------------------------------
//
// A block owns 2 W rows and walks K in chunks of 2048: every chunk goes to shared memory by
// cp.async, 4 stages deep (32 KB), so a block keeps 24 KB of W in flight — enough bytes in flight
// to stream W at the bandwidth (registers alone, in a row-per-warp design, held too few: 2.2–3.5
// TB/s). Each thread owns the same 16-byte k-pieces of both rows, so one x piece (from L1 / L2)
// and its conversion serve both. fp32 FMAs, sums over the threads in a fixed order:
// deterministic. Launched with PDL: when W is a weight (prefetch_w), the first chunks are
// requested before pdl_begin, overlapping the previous kernel's tail.

constexpr int kStreamThreads = 256;

__device__ __forceinline__ void fma8(float& acc, const uint4& w, const uint4& x) {
  const uint32_t wu[4] = {w.x, w.y, w.z, w.w}, xu[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    acc = fmaf(mma::bf16_lo(wu[i]), mma::bf16_lo(xu[i]), acc);
    acc = fmaf(mma::bf16_hi(wu[i]), mma::bf16_hi(xu[i]), acc);
  }
}

// kRows W rows per block, kChunk K elements per row and stage, kStages stages. Each thread owns
// the same kPerThread k-pieces of every row (kShareX) — one x load and conversion serves all
// kRows rows: the kernel is issue-bound (ncu, round 6: SM throughput 82 % on the LM head), so
// fewer instructions per W byte is what counts — or, with kShareX off, the pieces of one row
// (kRowThreads threads per row; the round-5 mapping, kept for the A/B).
template <int kRows, int kChunk, int kStages, bool kShareX = false>
struct StreamCfg {
  static constexpr int kPieces = kChunk / 8;                                    // 16-byte pieces per row and chunk
  static constexpr int kRowThreads = kShareX ? kStreamThreads : kStreamThreads / kRows;  // threads per row
  static constexpr int kPerThread = kPieces / kRowThreads;                      // pieces per thread, row and chunk
  static constexpr int kIssue = kRows * kPieces / kStreamThreads;               // cp.async per thread and chunk
  static constexpr size_t kSmem = sizeof(uint4) * kStages * kRows * kPieces;
  static_assert(kRowThreads % 32 == 0 && kPerThread >= 1 && kPieces % kRowThreads == 0 && kStages >= 2);
};

template <typename TO, int kRows, int kChunk, int kStages, bool kShareX>
__global__ void __launch_bounds__(kStreamThreads) gemv_stream_kernel(const GemvParams p) {
  using Cfg = StreamCfg<kRows, kChunk, kStages, kShareX>;
  constexpr int kPieces = Cfg::kPieces, kRowThreads = Cfg::kRowThreads, kPer = Cfg::kPerThread;
  constexpr int kMyRows = kShareX ? kRows : 1;  // rows this thread sums
  // Stages in dynamic shared memory: [kStages][kRows][kPieces] 16-byte pieces.
  auto ws = reinterpret_cast<uint4 (*)[kRows][kPieces]>(mma::dynamic_smem());
  __shared__ float red[kMyRows][kStreamThreads / 32];
  const int t = static_cast<int>(threadIdx.x);
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t chunks = (p.K + kChunk - 1) / kChunk;
  // Requests chunk c into stage c % kStages (one commit group per call, empty past the end).
  auto issue = [&](int64_t c) {
    if (c < chunks) {
#pragma unroll
      for (int i = 0; i < Cfg::kIssue; ++i) {  // a stage holds kIssue pieces per thread
        const int piece = t + i * kStreamThreads, r = piece / kPieces, kp = piece % kPieces;
        const int64_t n = n0 + r, k = c * kChunk + kp * 8;
        const bool valid = n < p.N && k < p.K;  // K % 8 == 0: a piece is all in or all out
        mma::cp_async16(&ws[c % kStages][r][kp], p.w + (valid ? n * p.ldw + k : 0), valid);
      }
    }
    mma::cp_async_commit();
  };
  if (!p.prefetch_w) pdl_wait();  // W may come from the previous kernel
  for (int c = 0; c < kStages - 1; ++c) issue(c);
  pdl_begin();
  const int r = kShareX ? 0 : t / kRowThreads, q = t % kRowThreads;  // first row summed; k-slice
  const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
  float acc[kMyRows] = {};
  for (int64_t c = 0; c < chunks; ++c) {
    uint4 xv[kPer];
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int64_t k = c * kChunk + (q + i * kRowThreads) * 8;
      xv[i] = k < p.K ? __ldg(reinterpret_cast<const uint4*>(p.x + k)) : zero;
    }
    mma::cp_async_wait<kStages - 2>();  // chunk c has landed (this thread's pieces)
    __syncthreads();                    // ... and everyone's; all are done with chunk c - 1
#pragma unroll
    for (int i = 0; i < kPer; ++i)
#pragma unroll
      for (int rr = 0; rr < kMyRows; ++rr) fma8(acc[rr], ws[c % kStages][r + rr][q + i * kRowThreads], xv[i]);  // zero past K, N
    issue(c + kStages - 1);  // into the stage chunk c - 1 used
  }
#pragma unroll
  for (int rr = 0; rr < kMyRows; ++rr) {
    const float v = warp_sum(acc[rr]);
    if ((t & 31) == 0) red[rr][t >> 5] = v;
  }
  __syncthreads();
  if (t < kRows && n0 + t < p.N) {
    constexpr int kWarpsPerRow = kRowThreads / 32;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarpsPerRow; ++w) {  // row t: every warp's partial (kShareX) or its own warps'
      if constexpr (kShareX)
        sum += red[t][w];
      else
        sum += red[0][t * kWarpsPerRow + w];
    }
    const int64_t n = n0 + t;
    TO* out = static_cast<TO*>(p.y) + n;
    float o = gemv_out_value(p, out, n, sum);
    if (p.act >= 0) o = act_value_dyn(static_cast<Activation>(p.act), to_f32(from_f32<TO>(o)));  // as stored, then act
    *out = from_f32<TO>(o);
  }
}

template <typename TO, int kRows, int kChunk, int kStages, bool kShareX = false>
void launch_stream(GemvParams p) {
  using Cfg = StreamCfg<kRows, kChunk, kStages, kShareX>;
  auto kernel = gemv_stream_kernel<TO, kRows, kChunk, kStages, kShareX>;
  const int64_t grid = (p.N + kRows - 1) / kRows;
  HLM_LAUNCH_PDL(kernel, static_cast<unsigned>(grid), kStreamThreads, Cfg::kSmem, p);
  HLM_CUDA_CHECK_LAUNCH();
}

// Rows / chunk / stages: 2 rows × 2048 × 4 stages with x shared by the rows (kShareX) for every
// shape. H200, one run each (bench/RESULTS.md, round 6; µs, the round-5 one-row-per-thread
// mapping in brackets): in_proj 39.0 (41.4), out_proj 21.5 (22.5), mlp_up 35.1 (36.9), mlp_down
// 36.2 (36.5 with one row per block, the round-5 choice for K ≥ 16384), LM head 94.9 (98.8); the
// 8B decode 3.73–3.75 ms (3.85). Round 5's sweep of the older mapping: 2 × 2048 × 4 — in_proj
// 40.7, out_proj 22.7; one row (K ≥ 16384) — mlp_down 36.7; 4 × 1024 × 4 and 2 × 1024 × 6 slower.
// HLM_GEMV_CFG=0|2|5|7 (read per call) forces a variant: 0 = 4 rows × 1024 × 4, 5 = 2 rows × 1024
// × 6, 7 = one row × 2048 × 4; HLM_GEMV_SHAREX=0 the round-5 mapping for 2 rows (0 and 5 only
// have that one; with one row the two mappings are the same).
template <typename TO>
void launch_stream_cfg(const GemvParams& p) {
  const char* v = std::getenv("HLM_GEMV_CFG");
  const char* sx = std::getenv("HLM_GEMV_SHAREX");  // 0: one row per thread (the A/B)
  const bool share_x = !(sx && std::strcmp(sx, "0") == 0);
  switch (v && *v ? std::atoi(v) : 2) {
    case 0: launch_stream<TO, 4, 1024, 4>(p); break;
    case 5: launch_stream<TO, 2, 1024, 6>(p); break;
    case 7: launch_stream<TO, 1, 2048, 4, true>(p); break;  // one row: both mappings are the same
    default:
      if (share_x)
        launch_stream<TO, 2, 2048, 4, true>(p);
      else
        launch_stream<TO, 2, 2048, 4>(p);
      break;
  }
}

// Split-K workspace: partial sums, and per-tile counters that the kernel leaves zero.
struct GemvWorkspace {
  std::mutex mutex;
  float* partial = nullptr;
  int* counters = nullptr;
};
GemvWorkspace& gemv_workspace() {
  static auto* ws = new GemvWorkspace();
  return *ws;
}

// ---- fallback GEMM: 16 x 16 output tile per block, operands staged through shared memory ------

constexpr int kTile = 16;

template <typename TA, typename TC>
__global__ void __launch_bounds__(kTile* kTile)
    gemm_fallback_kernel(const TA* a, int64_t lda, bool ta, const TA* b, int64_t ldb, bool tb, TC* c,
                         int64_t ldc, int64_t M, int64_t N, int64_t K, float alpha, float beta,
                         const void* bias, int bkind) {
  __shared__ float as[kTile][kTile + 1];
  __shared__ float bs[kTile][kTile + 1];
  const int tx = static_cast<int>(threadIdx.x) % kTile, ty = static_cast<int>(threadIdx.x) / kTile;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kTile + ty;  // x: up to 2^31 - 1 tiles
  const int64_t col = static_cast<int64_t>(blockIdx.y) * kTile + tx;
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < K; k0 += kTile) {
    const int64_t ak = k0 + tx, bk = k0 + ty;
    // as[ty][tx] = op(a)[row, ak]; bs[ty][tx] = op(b)[bk, col]
    as[ty][tx] = (row < M && ak < K) ? to_f32(ta ? a[ak * lda + row] : a[row * lda + ak]) : 0.0f;
    bs[ty][tx] = (bk < K && col < N) ? to_f32(tb ? b[col * ldb + bk] : b[bk * ldb + col]) : 0.0f;
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTile; ++kk) acc += as[ty][kk] * bs[kk][tx];
    __syncthreads();
  }
  if (row < M && col < N) {
    TC* p = c + row * ldc + col;
    float v = alpha * acc;
    if (beta != 0.0f) v += beta * to_f32(*p);
    v += bias_at(bias, bkind, col);
    *p = from_f32<TC>(v);
  }
}

}  // namespace

bool gemv_mma_forced() {
  const char* v = std::getenv("HLM_GEMV");
  return v && std::strcmp(v, "mma") == 0;
}

bool gemv_applies(const GemmMat& x, const GemmMat& w, const GemmMat& y) {
  const int64_t M = x.rows, K = x.cols;
  if (M < 1 || M > kGemvMaxRows || K < 8 || K % 8 != 0) return false;
  if (x.dtype != DType::BF16 || w.dtype != DType::BF16) return false;
  if (y.dtype != DType::F32 && y.dtype != DType::BF16 && y.dtype != DType::F16) return false;
  if (pointer_alignment(x.data) < 16 || pointer_alignment(w.data) < 16) return false;
  if (M > 1 && x.ld % 8 != 0) return false;
  if (w.rows > 1 && w.ld % 8 != 0) return false;
  return true;
}

bool gemv_streams(const GemmMat& x) { return x.rows == 1 && !gemv_mma_forced(); }

bool gemv_epilogue_act_applies(const GemmMat& x, const GemmMat& w, const GemmMat& y) {
  return gemv_applies(x, w, y) && gemv_streams(x);
}

void gemv(const GemmMat& x, const GemmMat& w, const GemmMat& y, float alpha, float beta,
          const void* bias, DType bias_dtype, bool w_is_weight, int act) {
  const int64_t M = x.rows, N = w.rows, K = x.cols;
  HLM_REQUIRE(gemv_applies(x, w, y) && w.cols == K && y.rows == M && y.cols == N, ErrorKind::Internal,
              "gemv: unsupported operands (M={} N={} K={})", M, N, K);
  if (N == 0) return;
  GemvParams p{};
  p.x = static_cast<const __nv_bfloat16*>(x.data);
  p.ldx = x.ld;
  p.w = static_cast<const __nv_bfloat16*>(w.data);
  p.ldw = w.ld;
  p.y = const_cast<void*>(y.data);
  p.ldy = y.ld;
  p.M = M;
  p.N = N;
  p.K = K;
  p.alpha = alpha;
  p.beta = beta;
  p.bias = bias;
  p.bias_kind = bias_kind(bias, bias_dtype);
  p.prefetch_w = w_is_weight;
  p.act = act;
  HLM_REQUIRE(act < 0 || gemv_epilogue_act_applies(x, w, y), ErrorKind::Internal,
              "gemv: an activation epilogue needs the one-row streaming kernel");
  if (gemv_streams(x)) {
    dispatch_float(y.dtype, "gemv", [&]<typename TO>() { launch_stream_cfg<TO>(p); });
    return;
  }
  // Split K until there are ~4 blocks per SM (small N), keeping at least one step per warp.
  const int64_t tiles = (N + kGemvTileRows - 1) / kGemvTileRows;
  p.nsteps = (K + kGemvStepK - 1) / kGemvStepK;
  const int64_t want = (4 * static_cast<int64_t>(num_sms()) + tiles - 1) / tiles;
  const int64_t splits = std::clamp<int64_t>(want, 1, std::max<int64_t>(1, p.nsteps / kGemvWarps));
  p.steps_per_split = (p.nsteps + splits - 1) / splits;
  p.splits = static_cast<int>((p.nsteps + p.steps_per_split - 1) / p.steps_per_split);
  if (p.splits > 1) {
    // splits > 1 only when tiles < 4·SMs, so tiles·splits < 8·SMs: one fixed-size workspace,
    // allocated on first use and never moved (a recorded CUDA graph keeps its address).
    const size_t max_tiles = 4 * static_cast<size_t>(num_sms()), max_parts = 2 * max_tiles;
    HLM_REQUIRE(static_cast<size_t>(tiles) < max_tiles && static_cast<size_t>(tiles * p.splits) <= max_parts,
                ErrorKind::Internal, "gemv: {} tiles x {} splits exceed the workspace", tiles, p.splits);
    GemvWorkspace& ws = gemv_workspace();
    std::lock_guard<std::mutex> lock(ws.mutex);
    if (!ws.partial) {
      HLM_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ws.partial), max_parts * kGemvTileOut * sizeof(float)));
      HLM_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ws.counters), max_tiles * sizeof(int)));
      HLM_CUDA_CHECK(cudaMemsetAsync(ws.counters, 0, max_tiles * sizeof(int), stream()));
    }
    p.partial = ws.partial;
    p.counters = ws.counters;
  }
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.splits));
  dispatch_float(y.dtype, "gemv", [&]<typename TO>() {
    HLM_LAUNCH(gemv_kernel<TO>, grid, dim3(kGemvThreads), 0, p);
    HLM_CUDA_CHECK_LAUNCH();
  });
}

void gemm_fallback(const GemmMat& a, bool ta, const GemmMat& b, bool tb, const GemmMat& c,
                   float alpha, float beta, const void* bias, DType bias_dtype) {
  const int64_t M = c.rows, N = c.cols, K = ta ? a.rows : a.cols;
  if (M == 0 || N == 0) return;
  const int bkind = bias_kind(bias, bias_dtype);
  HLM_REQUIRE(N <= int64_t{65535} * kTile, ErrorKind::Unsupported, "gemm_fallback: N={} is too large", N);
  const dim3 grid(grid_for(M, kTile), grid_for(N, kTile));
  dispatch_float(a.dtype, "gemm_fallback", [&]<typename TA>() {
    dispatch_float(c.dtype, "gemm_fallback", [&]<typename TC>() {
      auto* kernel = gemm_fallback_kernel<TA, TC>;
      HLM_LAUNCH(kernel, grid, dim3(kTile * kTile), 0,
                 static_cast<const TA*>(a.data), a.ld, ta, static_cast<const TA*>(b.data), b.ld, tb,
                 static_cast<TC*>(const_cast<void*>(c.data)), c.ld, M, N, K, alpha, beta, bias, bkind);
      HLM_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace hlm::cuda
