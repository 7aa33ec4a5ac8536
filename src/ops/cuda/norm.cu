// CUDA RMSNorm and the Mamba-2 group-wise gated RMSNorm, forward and backward. Statistics in
// fp32; the weight gradient is reduced deterministically: each block owns a fixed chunk of rows and
// writes one partial row, and a second pass adds the partials in chunk order.
#include "ops/norm.h"

#include "ops/cuda/common.cuh"

namespace hlm::cuda {

namespace {

constexpr int kNormThreads = 256;

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

// ---- RMSNorm ---------------------------------------------------------------------------------

template <typename TX, typename TW, typename TY>
__global__ void rmsnorm_forward_kernel(const TX* x, int64_t ldx, const TW* w, float eps, TY* y,
                                       int64_t ldy, float* rstd, int64_t D) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const TX* xr = x + row * ldx;
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
    const float v = to_f32(xr[c]);
    ss += v * v;
  }
  ss = block_sum(ss, red);
  const float r = 1.0f / sqrtf(ss / static_cast<float>(D) + eps);
  if (threadIdx.x == 0) rstd[row] = r;
  TY* yr = y + row * ldy;
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) yr[c] = from_f32<TY>(to_f32(xr[c]) * r * to_f32(w[c]));
}

// Block b handles rows [b·R, b·R + R): dx per row, and its rows' share of dw in shared memory,
// written to partial[b, :].
template <typename TX, typename TW, typename TG, typename TD>
__global__ void rmsnorm_backward_kernel(const TG* dy, int64_t lddy, const TX* x, int64_t ldx,
                                        const TW* w, const float* rstd, TD* dx, int64_t lddx,
                                        int64_t M, int64_t D, int64_t rows_per_block,
                                        float* partial) {
  extern __shared__ float dw_acc[];
  __shared__ float red[32];
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) dw_acc[c] = 0.0f;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * rows_per_block;
  const int64_t r1 = min(M, r0 + rows_per_block);
  const float inv_d = 1.0f / static_cast<float>(D);
  for (int64_t row = r0; row < r1; ++row) {
    const TG* g = dy + row * lddy;
    const TX* xr = x + row * ldx;
    const float r = rstd[row];
    float dot = 0.0f;
    for (int64_t c = threadIdx.x; c < D; c += blockDim.x) dot += to_f32(w[c]) * to_f32(g[c]) * to_f32(xr[c]);
    dot = block_sum(dot, red);
    const float k = r * r * dot * inv_d;
    TD* out = dx + row * lddx;
    for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
      const float gv = to_f32(g[c]), xv = to_f32(xr[c]);
      out[c] = from_f32<TD>(r * (to_f32(w[c]) * gv - xv * k));
      dw_acc[c] += gv * xv * r;  // column c is only ever touched by this thread
    }
  }
  float* part = partial + static_cast<int64_t>(blockIdx.x) * D;
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) part[c] = dw_acc[c];
}

template <typename TW>
__global__ void dw_finish_kernel(const float* partial, int64_t chunks, int64_t D, TW* dw) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= D) return;
  float acc = 0.0f;
  for (int64_t b = 0; b < chunks; ++b) acc += partial[b * D + c];
  dw[c] = from_f32<TW>(to_f32(dw[c]) + acc);
}

// ---- gated RMSNorm: one warp per (row, group) forward -----------------------------------------

template <typename TX, typename TW, typename TY>
__global__ void gated_forward_kernel(const TX* x, int64_t ldx, const TX* z, int64_t ldz,
                                     const TW* w, int64_t gs, int64_t ngroups, float eps, TY* y,
                                     int64_t ldy, float* rstd, int64_t ldr, int64_t M) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (warp >= M * ngroups) return;
  const int64_t row = warp / ngroups, grp = warp % ngroups;
  const int64_t c0 = grp * gs;
  const TX* xr = x + row * ldx + c0;
  const TX* zr = z + row * ldz + c0;
  float ss = 0.0f;
  for (int64_t i = lane; i < gs; i += 32) {
    const float zv = to_f32(zr[i]);
    const float gv = to_f32(xr[i]) * zv * sigmoidf_(zv);
    ss += gv * gv;
  }
  ss = warp_sum(ss);
  const float r = 1.0f / sqrtf(ss / static_cast<float>(gs) + eps);
  if (lane == 0) rstd[row * ldr + grp] = r;
  TY* yr = y + row * ldy + c0;
  for (int64_t i = lane; i < gs; i += 32) {
    const float zv = to_f32(zr[i]);
    const float gv = to_f32(xr[i]) * zv * sigmoidf_(zv);
    yr[i] = from_f32<TY>(gv * r * to_f32(w[c0 + i]));
  }
}

// Block b handles rows [b·R, b·R + R); warp k handles groups k, k + nwarps, ... of every row, so
// the dw columns of a group are only ever touched by one warp.
template <typename TX, typename TW, typename TG, typename TD>
__global__ void gated_backward_kernel(const TG* dy, int64_t lddy, const TX* x, int64_t ldx,
                                      const TX* z, int64_t ldz, const TW* w, const float* rstd,
                                      int64_t ldr, int64_t gs, int64_t ngroups, TD* dx,
                                      int64_t lddx, TD* dz, int64_t lddz, int64_t M,
                                      int64_t rows_per_block, float* partial) {
  extern __shared__ float dw_acc[];
  const int64_t D = gs * ngroups;
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) dw_acc[c] = 0.0f;
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * rows_per_block;
  const int64_t r1 = min(M, r0 + rows_per_block);
  const float inv_gs = 1.0f / static_cast<float>(gs);
  for (int64_t row = r0; row < r1; ++row) {
    for (int64_t grp = warp; grp < ngroups; grp += nwarps) {
      const int64_t c0 = grp * gs;
      const TG* g = dy + row * lddy + c0;
      const TX* xr = x + row * ldx + c0;
      const TX* zr = z + row * ldz + c0;
      const float r = rstd[row * ldr + grp];
      float dot = 0.0f;
      for (int64_t i = lane; i < gs; i += 32) {
        const float zv = to_f32(zr[i]);
        const float gate = to_f32(xr[i]) * zv * sigmoidf_(zv);
        dot += to_f32(w[c0 + i]) * to_f32(g[i]) * gate;
      }
      dot = warp_sum(dot);
      const float k = r * r * dot * inv_gs;
      TD* dxr = dx + row * lddx + c0;
      TD* dzr = dz + row * lddz + c0;
      for (int64_t i = lane; i < gs; i += 32) {
        const float zv = to_f32(zr[i]), xv = to_f32(xr[i]), gv = to_f32(g[i]);
        const float s = sigmoidf_(zv);
        const float silu = zv * s;
        const float gate = xv * silu;
        const float dgate = r * (to_f32(w[c0 + i]) * gv - gate * k);
        dxr[i] = from_f32<TD>(dgate * silu);
        dzr[i] = from_f32<TD>(dgate * xv * s * (1.0f + zv * (1.0f - s)));
        dw_acc[c0 + i] += gv * gate * r;
      }
    }
  }
  __syncthreads();
  float* part = partial + static_cast<int64_t>(blockIdx.x) * D;
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) part[c] = dw_acc[c];
}

// Rows per block of the backward passes: enough blocks to fill the device a few times over; a
// function of M and the SM count only, so the summation order is fixed on a given device.
int64_t rows_per_block(int64_t M) {
  const int64_t target = static_cast<int64_t>(num_sms()) * 4;
  return std::max<int64_t>(1, (M + target - 1) / target);
}

template <typename K>
void set_smem(K kernel, size_t bytes, const char* op) {
  if (bytes > 48 * 1024) {
    HLM_REQUIRE(bytes <= static_cast<size_t>(device_props().sharedMemPerBlockOptin),
                ErrorKind::Unsupported, "{}: width needs {} bytes of shared memory", op, bytes);
    HLM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(bytes)));
  }
}

void finish_dw(const float* partial, int64_t chunks, const Tensor& dw, int64_t D, const char* op) {
  dispatch_float(dw.dtype, op, [&]<typename TW>() {
    dw_finish_kernel<TW><<<grid_for(D, 256), 256, 0, stream()>>>(partial, chunks, D, dw.ptr<TW>());
    HLM_CUDA_CHECK_LAUNCH();
  });
}

void check_vector(const Tensor& v, int64_t D, const char* op, const char* name) {
  require_cuda(v, op, name);
  require_float(v, op, name);
  HLM_REQUIRE(v.is_contiguous() && v.numel() == D, ErrorKind::Internal,
              "{}: {} {} must be contiguous with {} entries", op, name, v.describe(), D);
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y,
                     const Tensor& rstd) {
  const char* op = "rmsnorm_forward";
  require_cuda(x, op, "x");
  require_cuda(y, op, "y");
  require_float(x, op, "x");
  require_float(y, op, "y");
  RowView X = as_rows(x, 1, op), Y = as_rows(y, 1, op);
  const int64_t M = X.rows, D = X.cols;
  HLM_REQUIRE(Y.rows == M && Y.cols == D, ErrorKind::Internal, "{}: y {} must match x {}", op,
              y.describe(), x.describe());
  check_vector(w, D, op, "w");
  require_cuda(rstd, op, "rstd");
  require_dtype(rstd, DType::F32, op, "rstd");
  HLM_REQUIRE(rstd.is_contiguous() && rstd.numel() == M, ErrorKind::Internal,
              "{}: rstd {} must be contiguous with {} entries", op, rstd.describe(), M);
  if (M == 0) return;
  dispatch_float(x.dtype, op, [&]<typename TX>() {
    dispatch_float(w.dtype, op, [&]<typename TW>() {
      dispatch_float(y.dtype, op, [&]<typename TY>() {
        rmsnorm_forward_kernel<TX, TW, TY><<<static_cast<unsigned>(M), kNormThreads, 0, stream()>>>(
            static_cast<const TX*>(X.data), X.ld, w.ptr<TW>(), eps, static_cast<TY*>(Y.data), Y.ld,
            rstd.ptr<float>(), D);
        HLM_CUDA_CHECK_LAUNCH();
      });
    });
  });
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      const Tensor& dx, const Tensor& dw) {
  const char* op = "rmsnorm_backward";
  require_cuda(dy, op, "dy");
  require_cuda(x, op, "x");
  require_cuda(dx, op, "dx");
  require_float(dy, op, "dy");
  require_float(x, op, "x");
  require_float(dx, op, "dx");
  RowView G = as_rows(dy, 1, op), X = as_rows(x, 1, op), DX = as_rows(dx, 1, op);
  const int64_t M = X.rows, D = X.cols;
  HLM_REQUIRE(G.rows == M && G.cols == D && DX.rows == M && DX.cols == D, ErrorKind::Internal,
              "{}: dy {}, x {} and dx {} must match", op, dy.describe(), x.describe(), dx.describe());
  check_vector(w, D, op, "w");
  check_vector(dw, D, op, "dw");
  require_cuda(rstd, op, "rstd");
  require_dtype(rstd, DType::F32, op, "rstd");
  HLM_REQUIRE(rstd.is_contiguous() && rstd.numel() == M, ErrorKind::Internal,
              "{}: rstd {} must be contiguous with {} entries", op, rstd.describe(), M);
  if (M == 0 || D == 0) return;
  const int64_t rpb = rows_per_block(M);
  const int64_t chunks = (M + rpb - 1) / rpb;
  float* partial = scratch_as<float>(Scratch::Reduce, static_cast<size_t>(chunks * D));
  const size_t smem = static_cast<size_t>(D) * sizeof(float);
  dispatch_float(x.dtype, op, [&]<typename TX>() {
    dispatch_float(w.dtype, op, [&]<typename TW>() {
      dispatch_float(dy.dtype, op, [&]<typename TG>() {
        dispatch_float(dx.dtype, op, [&]<typename TD>() {
          auto kernel = rmsnorm_backward_kernel<TX, TW, TG, TD>;
          set_smem(kernel, smem, op);
          kernel<<<static_cast<unsigned>(chunks), kNormThreads, smem, stream()>>>(
              static_cast<const TG*>(G.data), G.ld, static_cast<const TX*>(X.data), X.ld,
              w.ptr<TW>(), rstd.ptr<float>(), static_cast<TD*>(DX.data), DX.ld, M, D, rpb, partial);
          HLM_CUDA_CHECK_LAUNCH();
        });
      });
    });
  });
  finish_dw(partial, chunks, dw, D, op);
}

void gated_rmsnorm_forward(const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size,
                           float eps, const Tensor& y, const Tensor& rstd) {
  const char* op = "gated_rmsnorm_forward";
  for (auto [t, name] : {std::pair{&x, "x"}, {&z, "z"}, {&y, "y"}}) {
    require_cuda(*t, op, name);
    require_float(*t, op, name);
  }
  require_dtype(z, x.dtype, op, "z");
  RowView X = as_rows(x, 1, op), Z = as_rows(z, 1, op), Y = as_rows(y, 1, op);
  const int64_t M = X.rows, D = X.cols;
  HLM_REQUIRE(Z.rows == M && Z.cols == D && Y.rows == M && Y.cols == D, ErrorKind::Internal,
              "{}: x {}, z {} and y {} must match", op, x.describe(), z.describe(), y.describe());
  HLM_REQUIRE(group_size > 0 && D % group_size == 0, ErrorKind::InvalidArgument,
              "{}: group size {} does not divide the width {}", op, group_size, D);
  const int64_t ng = D / group_size;
  check_vector(w, D, op, "w");
  require_cuda(rstd, op, "rstd");
  require_dtype(rstd, DType::F32, op, "rstd");
  RowView RS = as_rows(rstd, 1, op);
  HLM_REQUIRE(RS.rows == M && RS.cols == ng, ErrorKind::Internal, "{}: rstd {} must be [{},{}]",
              op, rstd.describe(), M, ng);
  if (M == 0) return;
  const int64_t warps = M * ng;
  const unsigned blocks = static_cast<unsigned>((warps * 32 + kNormThreads - 1) / kNormThreads);
  dispatch_float(x.dtype, op, [&]<typename TX>() {
    dispatch_float(w.dtype, op, [&]<typename TW>() {
      dispatch_float(y.dtype, op, [&]<typename TY>() {
        gated_forward_kernel<TX, TW, TY><<<blocks, kNormThreads, 0, stream()>>>(
            static_cast<const TX*>(X.data), X.ld, static_cast<const TX*>(Z.data), Z.ld, w.ptr<TW>(),
            group_size, ng, eps, static_cast<TY*>(Y.data), Y.ld, static_cast<float*>(RS.data),
            RS.ld, M);
        HLM_CUDA_CHECK_LAUNCH();
      });
    });
  });
}

void gated_rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& z, const Tensor& w,
                            const Tensor& rstd, int64_t group_size, const Tensor& dx,
                            const Tensor& dz, const Tensor& dw) {
  const char* op = "gated_rmsnorm_backward";
  for (auto [t, name] : {std::pair{&dy, "dy"}, {&x, "x"}, {&z, "z"}, {&dx, "dx"}, {&dz, "dz"}}) {
    require_cuda(*t, op, name);
    require_float(*t, op, name);
  }
  require_dtype(z, x.dtype, op, "z");
  require_dtype(dz, dx.dtype, op, "dz");
  RowView G = as_rows(dy, 1, op), X = as_rows(x, 1, op), Z = as_rows(z, 1, op),
          DX = as_rows(dx, 1, op), DZ = as_rows(dz, 1, op);
  const int64_t M = X.rows, D = X.cols;
  for (const RowView* r : {&G, &Z, &DX, &DZ})
    HLM_REQUIRE(r->rows == M && r->cols == D, ErrorKind::Internal,
                "{}: dy, x, z, dx and dz must all be [{},{}]", op, M, D);
  HLM_REQUIRE(group_size > 0 && D % group_size == 0, ErrorKind::InvalidArgument,
              "{}: group size {} does not divide the width {}", op, group_size, D);
  const int64_t ng = D / group_size;
  check_vector(w, D, op, "w");
  check_vector(dw, D, op, "dw");
  require_cuda(rstd, op, "rstd");
  require_dtype(rstd, DType::F32, op, "rstd");
  RowView RS = as_rows(rstd, 1, op);
  HLM_REQUIRE(RS.rows == M && RS.cols == ng, ErrorKind::Internal, "{}: rstd {} must be [{},{}]",
              op, rstd.describe(), M, ng);
  if (M == 0 || D == 0) return;
  const int64_t rpb = rows_per_block(M);
  const int64_t chunks = (M + rpb - 1) / rpb;
  float* partial = scratch_as<float>(Scratch::Reduce, static_cast<size_t>(chunks * D));
  const size_t smem = static_cast<size_t>(D) * sizeof(float);
  dispatch_float(x.dtype, op, [&]<typename TX>() {
    dispatch_float(w.dtype, op, [&]<typename TW>() {
      dispatch_float(dy.dtype, op, [&]<typename TG>() {
        dispatch_float(dx.dtype, op, [&]<typename TD>() {
          auto kernel = gated_backward_kernel<TX, TW, TG, TD>;
          set_smem(kernel, smem, op);
          kernel<<<static_cast<unsigned>(chunks), kNormThreads, smem, stream()>>>(
              static_cast<const TG*>(G.data), G.ld, static_cast<const TX*>(X.data), X.ld,
              static_cast<const TX*>(Z.data), Z.ld, w.ptr<TW>(), static_cast<const float*>(RS.data),
              RS.ld, group_size, ng, static_cast<TD*>(DX.data), DX.ld, static_cast<TD*>(DZ.data),
              DZ.ld, M, rpb, partial);
          HLM_CUDA_CHECK_LAUNCH();
        });
      });
    });
  });
  finish_dw(partial, chunks, dw, D, op);
}

}  // namespace hlm::cuda
