// SSD fallback kernels for any P, N and float dtype (tiny test shapes, fp32 activations): the
// sequential recurrence, one block per (row, head), fp32 throughout. Plus the deterministic
// reduction of per-block partial sums into dA_log, dD, ddt_bias shared with the fast path.
#include <algorithm>

#include "ops/cuda/ssd_kernels.cuh"

namespace hlm::cuda::ssd {
namespace {

constexpr int kGenThreads = 128;
constexpr int kGenSeg = 64;  // steps between checkpoints in the backward

template <typename T>
__device__ __forceinline__ float act_at(const void* p, int64_t i) {
  return to_f32<T>(static_cast<const T*>(p)[i]);
}

struct StepScalars {
  float dt, dsp, alpha;
  int bnd;
};
__device__ __forceinline__ StepScalars step_scalars(const SsdArgs& a, int b, int t, int h, float A,
                                                    float bias) {
  StepScalars s;
  dt_from_raw(raw_dt_at(a, b, t, h), bias, a.dt_min, a.dt_max, &s.dt, &s.dsp);
  s.bnd = boundary_at(a, b, t);
  s.alpha = s.bnd ? 0.f : expf(fminf(s.dt * A, 0.f));
  return s;
}

// State layout in the workspace: [N][P] fp32 per (row, head), so threads over p coalesce.
template <typename Act>
__global__ void __launch_bounds__(kGenThreads) ssd_fwd_generic_kernel(const SsdArgs a, float* ws) {
  const int h = blockIdx.x, b = blockIdx.y;
  const int P = a.P, N = a.N, H = a.H, T = a.T;
  const int g = h / (H / a.G);
  const int tid = threadIdx.x;
  auto* sm = reinterpret_cast<float*>(mma::dynamic_smem());
  float* xv = sm;
  float* bv = xv + P;
  float* cv = bv + N;
  const int64_t PN = static_cast<int64_t>(P) * N;
  float* st = ws + (static_cast<int64_t>(b) * H + h) * PN;
  const float* h0 = a.h0 ? a.h0 + (static_cast<int64_t>(b) * H + h) * PN : nullptr;
  for (int64_t e = tid; e < PN; e += kGenThreads) {
    const int64_t n = e / P, p = e % P;
    st[e] = h0 ? h0[p * N + n] : 0.f;
  }
  const float A = -expf(load_any(a.A_log, a.A_type, h));
  const float Dh = a.D ? load_any(a.D, a.D_type, h) : 0.f;
  const float bias = a.dt_bias ? load_any(a.dt_bias, a.bias_type, h) : 0.f;
  for (int t = 0; t < T; ++t) {
    const int64_t row = static_cast<int64_t>(b) * T + t;
    __syncthreads();  // previous step done with the vectors
    for (int i = tid; i < P; i += kGenThreads) xv[i] = act_at<Act>(a.x, row * a.ld_x + static_cast<int64_t>(h) * P + i);
    for (int i = tid; i < N; i += kGenThreads) {
      bv[i] = act_at<Act>(a.Bm, row * a.ld_B + static_cast<int64_t>(g) * N + i);
      cv[i] = act_at<Act>(a.Cm, row * a.ld_C + static_cast<int64_t>(g) * N + i);
    }
    const StepScalars s = step_scalars(a, b, t, h, A, bias);
    __syncthreads();
    for (int p = tid; p < P; p += kGenThreads) {
      const float xd = xv[p] * s.dt;
      float acc = 0.f;
      for (int n = 0; n < N; ++n) {
        float* q = st + static_cast<int64_t>(n) * P + p;
        const float v = s.alpha * *q + xd * bv[n];
        *q = v;
        acc += v * cv[n];
      }
      static_cast<Act*>(a.y)[row * a.ld_y + static_cast<int64_t>(h) * P + p] = from_f32<Act>(acc + Dh * xv[p]);
    }
  }
  if (a.h_final) {
    __syncthreads();
    float* hf = a.h_final + (static_cast<int64_t>(b) * H + h) * PN;
    for (int64_t e = tid; e < PN; e += kGenThreads) {
      const int64_t n = e / P, p = e % P;
      hf[p * N + n] = st[e];
    }
  }
}

// Backward of the recurrence, per (row, head): checkpoints every kGenSeg steps, each segment
// recomputed forwards then walked backwards. dB, dC per head go to dbc ([B*T][H][N] each) and are
// summed over the group by ssd_group_reduce_kernel.
template <typename Act>
__global__ void __launch_bounds__(kGenThreads) ssd_bwd_generic_kernel(const SsdArgs a, float* ws,
                                                                       float* dBp, float* dCp) {
  const int h = blockIdx.x, b = blockIdx.y;
  const int P = a.P, N = a.N, H = a.H, T = a.T;
  const int g = h / (H / a.G);
  const int tid = threadIdx.x;
  auto* sm = reinterpret_cast<float*>(mma::dynamic_smem());
  float* xv = sm;
  float* dyv = xv + P;
  float* pp_ddt = dyv + P;
  float* pp_al = pp_ddt + P;
  float* pp_dd = pp_al + P;
  float* bv = pp_dd + P;
  float* cv = bv + N;
  const int64_t PN = static_cast<int64_t>(P) * N;
  const int nseg = (T + kGenSeg - 1) / kGenSeg;
  float* ck = ws + (static_cast<int64_t>(b) * H + h) * (nseg + kGenSeg + 1) * PN;
  float* sg = ck + static_cast<int64_t>(nseg) * PN;
  float* dh = sg + static_cast<int64_t>(kGenSeg) * PN;
  const int64_t soff = (static_cast<int64_t>(b) * H + h) * PN;
  const float A = -expf(load_any(a.A_log, a.A_type, h));
  const float Dh = a.D ? load_any(a.D, a.D_type, h) : 0.f;
  const float bias = a.dt_bias ? load_any(a.dt_bias, a.bias_type, h) : 0.f;

  auto load_xb = [&](int t) {
    const int64_t row = static_cast<int64_t>(b) * T + t;
    for (int i = tid; i < P; i += kGenThreads) xv[i] = act_at<Act>(a.x, row * a.ld_x + static_cast<int64_t>(h) * P + i);
    for (int i = tid; i < N; i += kGenThreads) bv[i] = act_at<Act>(a.Bm, row * a.ld_B + static_cast<int64_t>(g) * N + i);
  };
  // One forward step from `from` into `to` (both [N][P]; may alias), for this thread's p.
  auto step = [&](const float* from, float* to, const StepScalars& s) {
    for (int p = tid; p < P; p += kGenThreads) {
      const float xd = xv[p] * s.dt;
      for (int n = 0; n < N; ++n) {
        const int64_t e = static_cast<int64_t>(n) * P + p;
        to[e] = s.alpha * from[e] + xd * bv[n];
      }
    }
  };

  // Forward pass: checkpoint the state entering every segment (running state kept in dh).
  for (int p = tid; p < P; p += kGenThreads)
    for (int n = 0; n < N; ++n) dh[static_cast<int64_t>(n) * P + p] = a.h0 ? a.h0[soff + static_cast<int64_t>(p) * N + n] : 0.f;
  for (int t = 0; t < T; ++t) {
    if (t % kGenSeg == 0) {
      float* c = ck + static_cast<int64_t>(t / kGenSeg) * PN;
      for (int p = tid; p < P; p += kGenThreads)
        for (int n = 0; n < N; ++n) c[static_cast<int64_t>(n) * P + p] = dh[static_cast<int64_t>(n) * P + p];
    }
    __syncthreads();
    load_xb(t);
    const StepScalars s = step_scalars(a, b, t, h, A, bias);
    __syncthreads();
    step(dh, dh, s);
  }
  for (int p = tid; p < P; p += kGenThreads)
    for (int n = 0; n < N; ++n)
      dh[static_cast<int64_t>(n) * P + p] = a.dh_final ? a.dh_final[soff + static_cast<int64_t>(p) * N + n] : 0.f;

  float acc_dA = 0.f, acc_dD = 0.f, acc_bias = 0.f;
  for (int seg = nseg - 1; seg >= 0; --seg) {
    const int ts = seg * kGenSeg, te = min(T, ts + kGenSeg);
    const float* c0 = ck + static_cast<int64_t>(seg) * PN;
    for (int t = ts; t < te; ++t) {
      __syncthreads();
      load_xb(t);
      const StepScalars s = step_scalars(a, b, t, h, A, bias);
      __syncthreads();
      step(t == ts ? c0 : sg + static_cast<int64_t>(t - ts - 1) * PN, sg + static_cast<int64_t>(t - ts) * PN, s);
    }
    for (int t = te - 1; t >= ts; --t) {
      const int64_t row = static_cast<int64_t>(b) * T + t;
      __syncthreads();
      load_xb(t);
      for (int i = tid; i < P; i += kGenThreads) dyv[i] = act_at<Act>(a.dy, row * a.ld_dy + static_cast<int64_t>(h) * P + i);
      for (int i = tid; i < N; i += kGenThreads) cv[i] = act_at<Act>(a.Cm, row * a.ld_C + static_cast<int64_t>(g) * N + i);
      const StepScalars s = step_scalars(a, b, t, h, A, bias);
      __syncthreads();
      const float* hprev = t == ts ? c0 : sg + static_cast<int64_t>(t - ts - 1) * PN;
      const float* hcur = sg + static_cast<int64_t>(t - ts) * PN;
      for (int p = tid; p < P; p += kGenThreads) {
        float sbd = 0.f, sal = 0.f;
        for (int n = 0; n < N; ++n) {
          const int64_t e = static_cast<int64_t>(n) * P + p;
          const float d = dh[e] + dyv[p] * cv[n];
          dh[e] = d;
          sbd += d * bv[n];
          sal += d * hprev[e];
        }
        if (a.dx)
          static_cast<Act*>(a.dx)[row * a.ld_dx + static_cast<int64_t>(h) * P + p] = from_f32<Act>(Dh * dyv[p] + s.dt * sbd);
        pp_ddt[p] = xv[p] * sbd;
        pp_al[p] = sal;
        pp_dd[p] = dyv[p] * xv[p];
      }
      __syncthreads();
      for (int n = tid; n < N; n += kGenThreads) {
        float sc = 0.f, sb = 0.f;
        for (int p = 0; p < P; ++p) {
          const int64_t e = static_cast<int64_t>(n) * P + p;
          sc += hcur[e] * dyv[p];
          sb += dh[e] * xv[p];
        }
        const int64_t o = (row * H + h) * N + n;
        dCp[o] = sc;
        dBp[o] = s.dt * sb;
      }
      if (tid == 0) {
        float sddt = 0.f, sal = 0.f, sdd = 0.f;
        for (int p = 0; p < P; ++p) {
          sddt += pp_ddt[p];
          sal += pp_al[p];
          sdd += pp_dd[p];
        }
        const float ddt = sddt + (s.bnd ? 0.f : sal * s.alpha * A);
        const float graw = ddt * s.dsp;
        if (a.ddt) store_any(a.ddt, a.ddt_type, row * a.ld_ddt + h, graw);
        acc_dA += s.bnd ? 0.f : sal * s.alpha * s.dt;
        acc_bias += graw;
        acc_dD += sdd;
      }
      __syncthreads();
      for (int p = tid; p < P; p += kGenThreads)
        for (int n = 0; n < N; ++n) dh[static_cast<int64_t>(n) * P + p] *= s.alpha;
    }
  }
  if (a.dh0)
    for (int p = tid; p < P; p += kGenThreads)
      for (int n = 0; n < N; ++n) a.dh0[soff + static_cast<int64_t>(p) * N + n] = dh[static_cast<int64_t>(n) * P + p];
  if (tid == 0 && a.ws_part) {
    float* part = a.ws_part + (static_cast<int64_t>(b) * H + h) * 3;
    part[0] = acc_dA;
    part[1] = acc_dD;
    part[2] = acc_bias;
  }
}

// dB[row, g, n] = sum over the group's heads of dBp[row][h][n] (fixed order); same for dC.
template <typename T>
__global__ void ssd_group_reduce_kernel(const SsdArgs a, const float* dBp, const float* dCp) {
  const int64_t total = static_cast<int64_t>(a.B) * a.T * a.G * a.N;
  const int hpg = a.H / a.G;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int n = static_cast<int>(i % a.N);
    const int64_t rg = i / a.N;
    const int g = static_cast<int>(rg % a.G);
    const int64_t row = rg / a.G;
    float sb = 0.f, sc = 0.f;
    for (int k = 0; k < hpg; ++k) {
      const int64_t o = (row * a.H + g * hpg + k) * a.N + n;
      sb += dBp[o];
      sc += dCp[o];
    }
    if (a.dBm) static_cast<T*>(a.dBm)[row * a.ld_dB + static_cast<int64_t>(g) * a.N + n] = from_f32<T>(sb);
    if (a.dCm) static_cast<T*>(a.dCm)[row * a.ld_dC + static_cast<int64_t>(g) * a.N + n] = from_f32<T>(sc);
  }
}

constexpr int kReduceThreads = 256;

__global__ void __launch_bounds__(kReduceThreads) ssd_param_reduce_kernel(
    const float* part, int rows, int H, const void* A_log, int A_type, void* dA_log, int dA_type,
    void* dD, int dD_type, void* dbias, int dbias_type) {
  __shared__ float s[3][kReduceThreads];
  const int h = blockIdx.x, tid = threadIdx.x;
  float v[3] = {0.f, 0.f, 0.f};
  for (int r = tid; r < rows; r += kReduceThreads)
    for (int k = 0; k < 3; ++k) v[k] += part[(static_cast<int64_t>(r) * H + h) * 3 + k];
  for (int k = 0; k < 3; ++k) s[k][tid] = v[k];
  __syncthreads();
  for (int w = kReduceThreads / 2; w > 0; w >>= 1) {
    if (tid < w)
      for (int k = 0; k < 3; ++k) s[k][tid] += s[k][tid + w];
    __syncthreads();
  }
  if (tid == 0) {
    if (dA_log) {
      const float A = -expf(load_any(A_log, A_type, h));
      store_any(dA_log, dA_type, h, load_any(dA_log, dA_type, h) + A * s[0][0]);
    }
    if (dD) store_any(dD, dD_type, h, load_any(dD, dD_type, h) + s[1][0]);
    if (dbias) store_any(dbias, dbias_type, h, load_any(dbias, dbias_type, h) + s[2][0]);
  }
}

template <typename F>
void with_act_type(int act_type, F&& f) {
  if (act_type == kBF16)
    f.template operator()<__nv_bfloat16>();
  else if (act_type == kF16)
    f.template operator()<__half>();
  else
    f.template operator()<float>();
}

}  // namespace

void launch_fwd_generic(const SsdArgs& a, int act_type, float* ws_state) {
  const size_t smem = static_cast<size_t>(a.P + 2 * a.N) * sizeof(float);
  with_act_type(act_type, [&]<typename T>() {
    auto kernel = ssd_fwd_generic_kernel<T>;
    HLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    HLM_LAUNCH(kernel, dim3(static_cast<unsigned>(a.H), static_cast<unsigned>(a.B)), dim3(kGenThreads), smem, a, ws_state);
    HLM_CUDA_CHECK_LAUNCH();
  });
}

size_t generic_bwd_ws_floats(const SsdArgs& a) {
  const size_t nseg = static_cast<size_t>((a.T + kGenSeg - 1) / kGenSeg);
  const size_t states = static_cast<size_t>(a.B) * a.H * (nseg + kGenSeg + 1) * a.P * a.N;
  const size_t dbc = 2 * static_cast<size_t>(a.B) * a.T * a.H * a.N;
  return states + dbc;
}

void launch_bwd_generic(const SsdArgs& a, int act_type, float* ws) {
  const size_t nseg = static_cast<size_t>((a.T + kGenSeg - 1) / kGenSeg);
  float* dBp = ws + static_cast<size_t>(a.B) * a.H * (nseg + kGenSeg + 1) * a.P * a.N;
  float* dCp = dBp + static_cast<size_t>(a.B) * a.T * a.H * a.N;
  const size_t smem = static_cast<size_t>(5 * a.P + 2 * a.N) * sizeof(float);
  with_act_type(act_type, [&]<typename T>() {
    auto kernel = ssd_bwd_generic_kernel<T>;
    HLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    HLM_LAUNCH(kernel, dim3(static_cast<unsigned>(a.H), static_cast<unsigned>(a.B)), dim3(kGenThreads), smem, a, ws, dBp, dCp);
    HLM_CUDA_CHECK_LAUNCH();
    if (a.dBm || a.dCm) {
      const int64_t total = static_cast<int64_t>(a.B) * a.T * a.G * a.N;
      const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 65535));
      auto red = ssd_group_reduce_kernel<T>;
      HLM_LAUNCH(red, dim3(blocks), dim3(256), 0, a, static_cast<const float*>(dBp), static_cast<const float*>(dCp));
      HLM_CUDA_CHECK_LAUNCH();
    }
  });
}

void launch_param_reduce(const float* part, int rows, int H, const void* A_log, int A_type,
                         void* dA_log, int dA_type, void* dD, int dD_type, void* dbias,
                         int dbias_type) {
  if (!dA_log && !dD && !dbias) return;
  auto kernel = ssd_param_reduce_kernel;
  HLM_LAUNCH(kernel, dim3(static_cast<unsigned>(H)), dim3(kReduceThreads), 0, part, rows, H, A_log, A_type,
             dA_log, dA_type, dD, dD_type, dbias, dbias_type);
  HLM_CUDA_CHECK_LAUNCH();
}

}  // namespace hlm::cuda::ssd
