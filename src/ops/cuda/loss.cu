// CUDA cross-entropy over the vocabulary: one block per row streams the logits once in 16-byte
// vectors, keeping a running (max, sum of exp) per thread in fp32 registers (no fp32 copy of the
// logits exists); the backward writes scale·(softmax − onehot), in place if asked.
#include "ops/loss.h"

#include "ops/cuda/common.cuh"

namespace hlm::cuda {

namespace {

constexpr int kCeThreads = 512;

// Running log-sum-exp state: m the max seen, s = Σ exp(x − m).
struct Lse {
  float m, s;
};
__device__ __forceinline__ void lse_add_block(Lse& st, float local_max, const float* v, int n) {
  if (local_max > st.m) {
    st.s = st.m == -INFINITY ? 0.0f : st.s * __expf(st.m - local_max);
    st.m = local_max;
  }
  if (st.m == -INFINITY) return;
  for (int i = 0; i < n; ++i) st.s += __expf(v[i] - st.m);
}
__device__ __forceinline__ Lse lse_merge(Lse a, Lse b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return Lse{m, 0.0f};
  const float s = (a.m == -INFINITY ? 0.0f : a.s * __expf(a.m - m)) +
                  (b.m == -INFINITY ? 0.0f : b.s * __expf(b.m - m));
  return Lse{m, s};
}

template <typename T>
__device__ Lse row_lse(const T* x, int64_t V, bool vec) {
  Lse st{-INFINITY, 0.0f};
  constexpr int N = Vec16<T>::N;
  int64_t start = 0;
  if (vec) {
    const int64_t nvec = V / N;
    for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
      float v[N];
      load16(x + i * N, v);
      float mx = v[0];
#pragma unroll
      for (int k = 1; k < N; ++k) mx = fmaxf(mx, v[k]);
      lse_add_block(st, mx, v, N);
    }
    start = nvec * N;
  }
  for (int64_t i = start + threadIdx.x; i < V; i += blockDim.x) {
    float v[1] = {to_f32(x[i])};
    lse_add_block(st, v[0], v, 1);
  }
  // Block merge in a fixed order: warp butterfly, then warp 0 over the warp results.
  __shared__ float sm[32], ss[32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Lse other{__shfl_xor_sync(0xffffffffu, st.m, o), __shfl_xor_sync(0xffffffffu, st.s, o)};
    st = lse_merge(st, other);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  if (lane == 0) {
    sm[warp] = st.m;
    ss[warp] = st.s;
  }
  __syncthreads();
  Lse t = lane < nwarps ? Lse{sm[lane], ss[lane]} : Lse{-INFINITY, 0.0f};
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Lse other{__shfl_xor_sync(0xffffffffu, t.m, o), __shfl_xor_sync(0xffffffffu, t.s, o)};
    t = lse_merge(t, other);
  }
  return t;
}

template <typename T>
__global__ void ce_forward_kernel(const T* logits, int64_t ld, int64_t V, const int32_t* targets,
                                  int32_t ignore_index, float* losses, float* lse, bool vec,
                                  unsigned long long* flag) {
  const int64_t row = blockIdx.x;
  const T* x = logits + row * ld;
  const Lse st = row_lse(x, V, vec);
  if (threadIdx.x == 0) {
    const float l = st.m + logf(st.s);
    lse[row] = l;
    const int32_t t = targets[row];
    if (t == ignore_index) {
      losses[row] = 0.0f;
    } else if (t < 0 || t >= V) {
      report_bad_index(flag, row, t);
      losses[row] = 0.0f;
    } else {
      losses[row] = l - to_f32(x[t]);
    }
  }
}

template <typename T>
__global__ void ce_backward_kernel(const T* logits, int64_t ld, int64_t V, const int32_t* targets,
                                   const float* lse, int32_t ignore_index, float scale, T* dlogits,
                                   int64_t ldd, bool vec, unsigned long long* flag) {
  const int64_t row = blockIdx.x;
  const T* x = logits + row * ld;
  T* d = dlogits + row * ldd;
  const int32_t t = targets[row];
  const bool bad = t != ignore_index && (t < 0 || t >= V);
  if (bad && threadIdx.x == 0) report_bad_index(flag, row, t);
  const bool zero = t == ignore_index || bad;
  const float l = lse[row];
  constexpr int N = Vec16<T>::N;
  int64_t start = 0;
  if (vec) {
    const int64_t nvec = V / N;
    for (int64_t i = threadIdx.x; i < nvec; i += blockDim.x) {
      float v[N];
      load16(x + i * N, v);
#pragma unroll
      for (int k = 0; k < N; ++k) {
        const int64_t col = i * N + k;
        v[k] = zero ? 0.0f : scale * __expf(v[k] - l) - (col == t ? scale : 0.0f);
      }
      store16(d + i * N, v);
    }
    start = nvec * N;
  }
  for (int64_t i = start + threadIdx.x; i < V; i += blockDim.x) {
    const float v = zero ? 0.0f : scale * __expf(to_f32(x[i]) - l) - (i == t ? scale : 0.0f);
    d[i] = from_f32<T>(v);
  }
}

template <typename T>
bool vector_ok(const void* p, int64_t ld) {
  return pointer_alignment(p) >= 16 && (ld * static_cast<int64_t>(sizeof(T))) % 16 == 0;
}

void check_f32_vector(const Tensor& t, int64_t M, const char* op, const char* name) {
  require_cuda(t, op, name);
  require_dtype(t, DType::F32, op, name);
  HLM_REQUIRE(t.is_contiguous() && t.numel() == M, ErrorKind::Internal,
              "{}: {} {} must be contiguous with {} entries", op, name, t.describe(), M);
}

}  // namespace

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int32_t ignore_index,
                           const Tensor& losses, const Tensor& lse) {
  const char* op = "cross_entropy_forward";
  require_cuda(logits, op, "logits");
  require_float(logits, op, "logits");
  RowView L = as_rows(logits, 1, op);
  const int64_t M = L.rows, V = L.cols;
  require_index(targets, M, op, "targets");
  check_f32_vector(losses, M, op, "losses");
  check_f32_vector(lse, M, op, "lse");
  if (M == 0) return;
  HLM_REQUIRE(V > 0, ErrorKind::InvalidArgument, "{}: empty vocabulary", op);
  unsigned long long* flag = index_flag();
  dispatch_float(logits.dtype, op, [&]<typename T>() {
    ce_forward_kernel<T><<<static_cast<unsigned>(M), kCeThreads, 0, stream()>>>(
        static_cast<const T*>(L.data), L.ld, V, targets.ptr<int32_t>(), ignore_index,
        losses.ptr<float>(), lse.ptr<float>(), vector_ok<T>(L.data, L.ld), flag);
    HLM_CUDA_CHECK_LAUNCH();
  });
  check_index_flag(op, "target (not the ignore index)", V);
}

void cross_entropy_backward(const Tensor& logits, const Tensor& targets, const Tensor& lse,
                            int32_t ignore_index, float scale, const Tensor& dlogits) {
  const char* op = "cross_entropy_backward";
  require_cuda(logits, op, "logits");
  require_cuda(dlogits, op, "dlogits");
  require_float(logits, op, "logits");
  require_dtype(dlogits, logits.dtype, op, "dlogits");
  RowView L = as_rows(logits, 1, op), DL = as_rows(dlogits, 1, op);
  const int64_t M = L.rows, V = L.cols;
  HLM_REQUIRE(DL.rows == M && DL.cols == V, ErrorKind::Internal, "{}: dlogits {} must match {}",
              op, dlogits.describe(), logits.describe());
  require_index(targets, M, op, "targets");
  check_f32_vector(lse, M, op, "lse");
  if (M == 0) return;
  unsigned long long* flag = index_flag();
  dispatch_float(logits.dtype, op, [&]<typename T>() {
    const bool vec = vector_ok<T>(L.data, L.ld) && vector_ok<T>(DL.data, DL.ld);
    ce_backward_kernel<T><<<static_cast<unsigned>(M), kCeThreads, 0, stream()>>>(
        static_cast<const T*>(L.data), L.ld, V, targets.ptr<int32_t>(), lse.ptr<float>(),
        ignore_index, scale, static_cast<T*>(DL.data), DL.ld, vec, flag);
    HLM_CUDA_CHECK_LAUNCH();
  });
  check_index_flag(op, "target (not the ignore index)", V);
}

}  // namespace hlm::cuda
