// One decode token of the Mamba-2 mixer between its projections (hlm::cuda::mamba_step, ops/ssd.h):
// conv1d + SiLU update, SSD state update and gated RMSNorm in one kernel instead of three.
//
// At batch 1 each of the three is a few microseconds of latency (launch, drain, a dependent load
// chain) between the in_proj and out_proj GEMVs; fused, the chain is one kernel. Layout: one
// thread-block cluster per (batch row, group) — the heads that share the group's B and C and its
// norm group — one block per kHpb heads of it. A block convolves what it reads (its heads' x
// channels and the group's B and C channels: the B / C convolution is repeated by every block of
// the cluster, 2N multiply-adds each), updates its heads' fp32 state (16 threads per state row,
// 16-byte streaming loads and stores, as ssd_step does), gates y with silu(z) and sums the squares.
// The cluster barrier then serves twice: each block reads the other blocks' partial sums through
// distributed shared memory (the norm's group sum, added in rank order: deterministic), and every
// block has read the old B / C convolution state before rank 0 shifts it (the x channels' state
// is shifted by the block that owns them, at once). The arithmetic is the unfused ops', element
// by element (xbc and y rounded to the activation dtype where those ops store them); only the
// order of the sums (y's dot product over N, the norm's sum of squares) differs.
#include <cooperative_groups.h>

#include "ops/cuda/ssd_kernels.cuh"
#include "ops/ssd.h"

namespace hlm::cuda {
namespace {

namespace cg = cooperative_groups;
using ssd::env_int;
using ssd::load_any;
using ssd::load_state;
using ssd::store_any;
using ssd::store_state;

constexpr int kThreads = 256;
constexpr int kLanes = 16;  // threads per state row
constexpr int kRowsPerPass = kThreads / kLanes;
constexpr int kK = 4;  // conv width (Mamba-2's d_conv); other widths take the unfused path
// Largest state (B·H·P·N elements) HLM_MAMBA_STEP=1 fuses: batch 4 at the 8B shape.
constexpr int64_t kFusedMaxStateElems = int64_t{4} * 128 * 64 * 128;

struct StepArgs {
  const void* zx;  // [B, Di + Cd + H] rows
  int64_t ld_zx;
  const void* conv_w;  // [Cd, kK]
  int conv_w_type;
  const void* conv_b;  // [Cd] or null
  int conv_b_type;
  void* conv_state;  // [B, Cd, kK-1]
  int conv_state_type;
  const void* A_log;
  int A_type;
  const void* D;
  int D_type;
  const void* dt_bias;
  int bias_type;
  const void* norm_w;  // [Di]
  int norm_w_type;
  float* state;  // [B, H, P, N]
  void* out;     // [B, Di] rows
  int64_t ld_out;
  int H, G;
  float eps, dt_min, dt_max;
};

// The xBC channel that conv slot i of a block handles: its heads' x channels, then the group's B
// and C channels.
__device__ __forceinline__ int conv_channel(int i, int nx, int x0, int Di, int G, int g, int N) {
  if (i < nx) return x0 + i;
  if (i < nx + N) return Di + g * N + (i - nx);
  return Di + G * N + g * N + (i - nx - N);
}

template <typename T, int kP, int kN, int kHpb>
__global__ void __launch_bounds__(kThreads) mamba_step_kernel(const StepArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900  // clusters; the host checks the device
  constexpr int kNx = kHpb * kP;                                 // x channels of the block
  constexpr int kConvSlots = (kNx + 2 * kN + kThreads - 1) / kThreads;  // conv channels per thread
  constexpr int kGateSlots = (kNx + kThreads - 1) / kThreads;    // gated channels per thread
  constexpr int kPass = kP / kRowsPerPass;                       // state rows per thread and head
  constexpr int kF4 = kN / 4 / kLanes;                           // float4s per thread and row
  __shared__ float xs[kNx], ys[kNx];
  __shared__ __align__(16) float bs[kN];
  __shared__ __align__(16) float cs[kN];
  __shared__ float red[kThreads / 32];
  __shared__ float part, total;
  __shared__ float hdt[kHpb], hdecay[kHpb], hD[kHpb];

  cg::cluster_group cluster = cg::this_cluster();
  const int ranks = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  const int g = static_cast<int>(blockIdx.y), b = static_cast<int>(blockIdx.z);
  const int tid = static_cast<int>(threadIdx.x);
  const int h0 = g * (a.H / a.G) + rank * kHpb;
  const int Di = a.H * kP, Cd = Di + 2 * a.G * kN, x0 = h0 * kP;
  const T* zx = static_cast<const T*>(a.zx) + b * a.ld_zx;

  // Weights first: no kernel writes them, so they may load before the wait (PDL).
  float cw[kConvSlots][kK], cb[kConvSlots], nw[kGateSlots];
#pragma unroll
  for (int s = 0; s < kConvSlots; ++s) {
    const int i = tid + s * kThreads;
    const int c = conv_channel(i < kNx + 2 * kN ? i : 0, kNx, x0, Di, a.G, g, kN);
#pragma unroll
    for (int k = 0; k < kK; ++k) cw[s][k] = load_any(a.conv_w, a.conv_w_type, static_cast<int64_t>(c) * kK + k);
    cb[s] = a.conv_b ? load_any(a.conv_b, a.conv_b_type, c) : 0.f;
  }
#pragma unroll
  for (int s = 0; s < kGateSlots; ++s) {
    const int i = tid + s * kThreads;
    nw[s] = i < kNx ? load_any(a.norm_w, a.norm_w_type, x0 + i) : 0.f;
  }
  float A = 0.f, Dh = 0.f, bias = 0.f;
  if (tid < kHpb) {
    A = -expf(load_any(a.A_log, a.A_type, h0 + tid));
    Dh = a.D ? load_any(a.D, a.D_type, h0 + tid) : 0.f;
    bias = a.dt_bias ? load_any(a.dt_bias, a.bias_type, h0 + tid) : 0.f;
  }
  pdl_begin();  // zx comes from in_proj; the states from the previous step

  // The state's loads first (thread: rows r0 + 16 j, float4s q + 16 m of each head): their DRAM
  // latency passes under the convolution's.
  const int q = tid % kLanes, r0 = tid / kLanes;
  float4 sv[kHpb][kPass][kF4];
#pragma unroll
  for (int i = 0; i < kHpb; ++i) {
    const float4* sp = reinterpret_cast<const float4*>(a.state + (static_cast<int64_t>(b) * a.H + h0 + i) * kP * kN);
#pragma unroll
    for (int j = 0; j < kPass; ++j)
#pragma unroll
      for (int m = 0; m < kF4; ++m) sv[i][j][m] = load_state(sp + (r0 + j * kRowsPerPass) * (kN / 4) + q + m * kLanes, true);
  }

  // Convolution (conv_update_kernel's arithmetic), its output rounded to T as xbc is stored.
#pragma unroll
  for (int s = 0; s < kConvSlots; ++s) {
    const int i = tid + s * kThreads;
    if (i >= kNx + 2 * kN) break;
    const int c = conv_channel(i, kNx, x0, Di, a.G, g, kN);
    const float xv = to_f32<T>(zx[Di + c]);
    const int64_t s0 = (static_cast<int64_t>(b) * Cd + c) * (kK - 1);
    float st[kK - 1];
#pragma unroll
    for (int k = 0; k < kK - 1; ++k) st[k] = load_any(a.conv_state, a.conv_state_type, s0 + k);
    float z = cb[s];
#pragma unroll
    for (int k = 0; k < kK - 1; ++k) z += cw[s][k] * st[k];
    z += cw[s][kK - 1] * xv;
    const float v = to_f32<T>(from_f32<T>(z / (1.f + expf(-z))));
    if (i < kNx) {
      xs[i] = v;
      // This block alone reads its x channels' state: shift it now.
#pragma unroll
      for (int k = 0; k + 1 < kK - 1; ++k) store_any(a.conv_state, a.conv_state_type, s0 + k, st[k + 1]);
      store_any(a.conv_state, a.conv_state_type, s0 + kK - 2, xv);
    } else if (i < kNx + kN) {
      bs[i - kNx] = v;
    } else {
      cs[i - kNx - kN] = v;
    }
  }
  if (tid < kHpb) {  // ssd_step's row coefficients
    float dt, dsp;
    ssd::dt_from_raw(to_f32<T>(zx[Di + Cd + h0 + tid]), bias, a.dt_min, a.dt_max, &dt, &dsp);
    hdt[tid] = dt;
    hdecay[tid] = expf(fminf(dt * A, 0.f));
    hD[tid] = Dh;
  }
  __syncthreads();

  // State update: thread (row r0 + 16 j, float4s q + 16 m) of each head (loaded above).
#pragma unroll
  for (int i = 0; i < kHpb; ++i) {
    float4* sp = reinterpret_cast<float4*>(a.state + (static_cast<int64_t>(b) * a.H + h0 + i) * kP * kN);
    const float dt = hdt[i], decay = hdecay[i], Dv = hD[i];
#pragma unroll
    for (int j = 0; j < kPass; ++j) {
      const int p = r0 + j * kRowsPerPass;
      const float xv = xs[i * kP + p], xd = dt * xv;
      float partial = 0.f;
#pragma unroll
      for (int m = 0; m < kF4; ++m) {
        const float4 bv = reinterpret_cast<const float4*>(bs)[q + m * kLanes];
        const float4 cv = reinterpret_cast<const float4*>(cs)[q + m * kLanes];
        float4& s = sv[i][j][m];
        s.x = decay * s.x + xd * bv.x;
        s.y = decay * s.y + xd * bv.y;
        s.z = decay * s.z + xd * bv.z;
        s.w = decay * s.w + xd * bv.w;
        store_state(sp + p * (kN / 4) + q + m * kLanes, s, true);
        partial += s.x * cv.x + s.y * cv.y + s.z * cv.z + s.w * cv.w;
      }
#pragma unroll
      for (int off = kLanes / 2; off > 0; off >>= 1) partial += __shfl_xor_sync(0xffffffffu, partial, off);
      if (q == 0) ys[i * kP + p] = to_f32<T>(from_f32<T>(partial + Dv * xv));
    }
  }
  __syncthreads();

  // Gate, then the block's sum of squares (fixed order).
  float gv[kGateSlots];
  float ss = 0.f;
#pragma unroll
  for (int s = 0; s < kGateSlots; ++s) {
    const int i = tid + s * kThreads;
    gv[s] = 0.f;
    if (i < kNx) {
      const float zf = to_f32<T>(zx[x0 + i]);
      gv[s] = ys[i] * zf * (1.0f / (1.0f + expf(-zf)));
      ss += gv[s] * gv[s];
    }
  }
  ss = warp_sum(ss);
  if ((tid & 31) == 0) red[tid >> 5] = ss;
  __syncthreads();
  if (tid == 0) {
    float t = 0.f;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) t += red[w];
    part = t;
  }
  cluster.sync();  // every block's part is written; every block has read the old B / C conv state
  if (tid < 32) {
    float v = tid < ranks ? *cluster.map_shared_rank(&part, tid) : 0.f;
    v = warp_sum(v);
    if (tid == 0) total = v;
  }
  if (rank == 0) {  // shift the group's B / C convolution state
    for (int i = kNx + tid; i < kNx + 2 * kN; i += kThreads) {
      const int c = conv_channel(i, kNx, x0, Di, a.G, g, kN);
      const int64_t s0 = (static_cast<int64_t>(b) * Cd + c) * (kK - 1);
#pragma unroll
      for (int k = 0; k + 1 < kK - 1; ++k)
        store_any(a.conv_state, a.conv_state_type, s0 + k, load_any(a.conv_state, a.conv_state_type, s0 + k + 1));
      store_any(a.conv_state, a.conv_state_type, s0 + kK - 2, to_f32<T>(zx[Di + c]));
    }
  }
  __syncthreads();
  const float r = 1.0f / sqrtf(total / static_cast<float>(ranks * kNx) + a.eps);
  T* out = static_cast<T*>(a.out) + b * a.ld_out + x0;
#pragma unroll
  for (int s = 0; s < kGateSlots; ++s) {
    const int i = tid + s * kThreads;
    if (i < kNx) out[i] = from_f32<T>(gv[s] * r * nw[s]);
  }
  cluster.sync();  // no block leaves while another may still read its part
#endif
}

// Launches the cluster kernel (cluster = the group's blocks), with PDL where enabled.
template <typename T, int kP, int kN, int kHpb>
bool launch(const StepArgs& a, int B, int ranks) {
  auto kernel = mamba_step_kernel<T, kP, kN, kHpb>;
  if (ranks > 8) {
    static const bool allowed = [&] {
      if (cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
      }
      return true;
    }();
    if (!allowed) return false;
  }
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(static_cast<unsigned>(ranks), static_cast<unsigned>(a.G), static_cast<unsigned>(B));
  cfg.blockDim = dim3(kThreads);
  cfg.stream = stream();
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = static_cast<unsigned>(ranks);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  attr[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[1].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 2 : 1;
  if (ranks > 8) {  // a 16-block cluster must fit one GPC: asked once, before the first launch
    static const bool fits = [&] {
      int clusters = 0;
      if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
      }
      return clusters >= 1;
    }();
    if (!fits) return false;
  }
  HLM_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, a));
  return true;
}

template <typename T, int kP, int kN>
bool launch_hpb(const StepArgs& a, int B, int hpb, int ranks) {
  if (hpb == 1) return launch<T, kP, kN, 1>(a, B, ranks);
  if constexpr (kP * kN <= 64 * 128) {
    if (hpb == 2) return launch<T, kP, kN, 2>(a, B, ranks);
  }
  return false;
}

// The fused kernel, where the shape, dtypes and device allow it; false: the caller runs the
// unfused ops. hpb: heads per block (1 or 2).
bool launch_fused(const MambaStepParams& p, const Tensor& conv_state, const Tensor& ssm_state, const Tensor& out,
                  int hpb) {
  const int64_t B = p.zx.size(0), H = p.heads, P = p.head_dim, G = p.groups, N = p.state_dim;
  const int64_t hpg = H / G;
  if (P == 128) hpb = 1;
  const bool shape_ok = ((P == 64 && (N == 128 || N == 64)) || (P == 128 && N == 128)) && p.conv_w.size(1) == kK &&
                        p.norm_group == hpg * P && B > 0 && B <= 65535 && hpg % hpb == 0 && hpg / hpb <= 16;
  const bool dtypes_ok = p.zx.dtype == out.dtype && p.zx.dtype != DType::I32 && ssm_state.dtype == DType::F32 &&
                         ssm_state.is_contiguous() && conv_state.is_contiguous() && p.conv_w.is_contiguous() &&
                         (reinterpret_cast<uintptr_t>(ssm_state.data) & 15) == 0;
  if (!shape_ok || !dtypes_ok || device_props().major < 9) return false;
  for (const Tensor* t : {&p.A_log, &p.D, &p.dt_bias, &p.norm_w, &p.conv_b})
    HLM_CHECK_ARG(!t->defined() || t->device == Device::CUDA, "mamba_step (CUDA): a parameter is not on CUDA");
  const char* op = "mamba_step";
  RowView zx = as_rows(p.zx, 1, "mamba_step zx"), o = as_rows(out, 1, "mamba_step out");
  StepArgs a{};
  a.zx = zx.data;
  a.ld_zx = zx.ld;
  a.conv_w = p.conv_w.data;
  a.conv_w_type = ssd::scalar_type(p.conv_w, op, "conv_w");
  if (p.conv_b.defined()) {
    a.conv_b = p.conv_b.data;
    a.conv_b_type = ssd::scalar_type(p.conv_b, op, "conv_b");
  }
  a.conv_state = conv_state.data;
  a.conv_state_type = ssd::scalar_type(conv_state, op, "conv_state");
  a.A_log = p.A_log.data;
  a.A_type = ssd::scalar_type(p.A_log, op, "A_log");
  if (p.D.defined()) {
    a.D = p.D.data;
    a.D_type = ssd::scalar_type(p.D, op, "D");
  }
  if (p.dt_bias.defined()) {
    a.dt_bias = p.dt_bias.data;
    a.bias_type = ssd::scalar_type(p.dt_bias, op, "dt_bias");
  }
  a.norm_w = p.norm_w.data;
  a.norm_w_type = ssd::scalar_type(p.norm_w, op, "norm_w");
  a.state = ssm_state.ptr<float>();
  a.out = o.data;
  a.ld_out = o.ld;
  a.H = static_cast<int>(H);
  a.G = static_cast<int>(G);
  a.eps = p.norm_eps;
  a.dt_min = p.dt_min;
  a.dt_max = p.dt_max;
  const int ranks = static_cast<int>(hpg / hpb);
  bool done = false;
  dispatch_float(p.zx.dtype, "mamba_step zx", [&]<typename T>() {
    if (P == 64 && N == 128) done = launch_hpb<T, 64, 128>(a, static_cast<int>(B), hpb, ranks);
    else if (P == 64 && N == 64) done = launch_hpb<T, 64, 64>(a, static_cast<int>(B), hpb, ranks);
    else done = launch_hpb<T, 128, 128>(a, static_cast<int>(B), hpb, ranks);
  });
  return done;
}

}  // namespace

// Knobs (read per call, for A/B runs): HLM_MAMBA_STEP unset or 0 runs the three unfused ops (the
// default), =1 the fused kernel up to kFusedMaxStateElems, =2 at any batch;
// HLM_MAMBA_STEP_HPB=1|2 forces the heads per block (default: 2 where a group has more than 8
// heads, so that a cluster has at most 8 blocks, the portable size; else 1).
//
// Opt-in: measured no faster than the three kernels at batch 1 and slower at batch 32 (H100, 8B
// shape, the mixer step in one graph: 88.1 / 223 µs fused against 87.3 / 192 µs unfused, same run;
// bench/cuda/NOTES-core.md, round 9). A large batch's state update is a bandwidth problem that
// ssd_step's kernel, with more loads in flight per SM, solves better.
void mamba_step(const MambaStepParams& p, const Tensor& conv_state, const Tensor& ssm_state,
                const MambaStepWork& work, const Tensor& out) {
  const MambaStepViews v = mamba_step_views(p, conv_state, ssm_state, work, out);  // checks shapes
  const int mode = env_int("HLM_MAMBA_STEP", 0);
  if (mode == 2 || (mode == 1 && p.zx.size(0) * p.heads * p.head_dim * p.state_dim <= kFusedMaxStateElems)) {
    int hpb = env_int("HLM_MAMBA_STEP_HPB", 0);
    if (hpb != 1 && hpb != 2) hpb = p.heads / p.groups > 8 ? 2 : 1;
    if (launch_fused(p, conv_state, ssm_state, out, hpb)) return;
  }
  mamba_step_unfused(p, v, conv_state, ssm_state, work, out);
}

}  // namespace hlm::cuda
