// CUDA glue ops: dtype conversion, fills, scaled adds, scaling, and a deterministic sum of squares
// (fixed per-block partials in double, summed in block order).
#include "ops/elementwise.h"

#include <type_traits>

#include "ops/cuda/common.cuh"

namespace hlm::cuda {

namespace {

// A tensor as rows of contiguous elements (a flat single row when contiguous).
struct Rows {
  void* data;
  int64_t rows, cols, ld;
  int64_t count() const { return rows * cols; }
};

Rows rows_of(const Tensor& t, const char* op) {
  if (t.is_contiguous()) return Rows{t.data, 1, t.numel(), t.numel()};
  RowView r = as_rows(t, 1, op);
  return Rows{r.data, r.rows, r.cols, r.ld};
}

// Two tensors of equal element count matched row for row (flat when both are contiguous).
void match_rows(const Tensor& a, const Tensor& b, const char* op, Rows* ra, Rows* rb) {
  HLM_REQUIRE(a.numel() == b.numel(), ErrorKind::Internal, "{}: {} and {} differ in size", op,
              a.describe(), b.describe());
  if (a.is_contiguous() && b.is_contiguous()) {
    *ra = rows_of(a, op);
    *rb = rows_of(b, op);
    return;
  }
  RowView x = as_rows(a, 1, op), y = as_rows(b, 1, op);
  HLM_REQUIRE(x.rows == y.rows && x.cols == y.cols, ErrorKind::Internal,
              "{}: row views of {} and {} do not match", op, a.describe(), b.describe());
  *ra = Rows{x.data, x.rows, x.cols, x.ld};
  *rb = Rows{y.data, y.rows, y.cols, y.ld};
}

__device__ __forceinline__ int64_t elem_offset(int64_t i, int64_t cols, int64_t ld) {
  return cols == ld ? i : (i / cols) * ld + (i % cols);
}

unsigned grid_for_elements(int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  int64_t cap = static_cast<int64_t>(num_sms()) * 32;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, cap)));
}

// Every float storage type, double included, for convert and sum_squares.
template <typename F>
void dispatch_any_float(DType dtype, const char* what, F&& f) {
  if (dtype == DType::F64) {
    f.template operator()<double>();
    return;
  }
  dispatch_float(dtype, what, std::forward<F>(f));
}

template <typename T>
__device__ __forceinline__ double load_f64(const T* p) {
  if constexpr (std::is_same_v<T, double>) {
    return *p;
  } else {
    return static_cast<double>(to_f32(*p));
  }
}

// dst = src; to a narrower type through float, as the CPU twin does (bit-identical results).
template <typename S, typename D>
__global__ void convert_kernel(const S* src, int64_t scols, int64_t sld, D* dst, int64_t dcols,
                               int64_t dld, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const S s = src[elem_offset(i, scols, sld)];
    D* d = dst + elem_offset(i, dcols, dld);
    if constexpr (std::is_same_v<D, double>) {
      *d = load_f64(&s);
    } else if constexpr (std::is_same_v<S, double>) {
      *d = from_f32<D>(static_cast<float>(s));
    } else {
      *d = from_f32<D>(to_f32(s));
    }
  }
}

template <typename X, typename Y>
__global__ void add_scaled_kernel(const X* x, int64_t xcols, int64_t xld, float alpha, Y* y,
                                  int64_t ycols, int64_t yld, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Y* p = y + elem_offset(i, ycols, yld);
    *p = from_f32<Y>(to_f32(*p) + alpha * to_f32(x[elem_offset(i, xcols, xld)]));
  }
}

template <typename T>
__global__ void fill_kernel(T* t, int64_t cols, int64_t ld, T value, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    t[elem_offset(i, cols, ld)] = value;
}

template <typename T>
__global__ void scale_kernel(T* t, int64_t cols, int64_t ld, float s, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    T* p = t + elem_offset(i, cols, ld);
    if constexpr (std::is_same_v<T, double>) {
      *p = *p * static_cast<double>(s);
    } else {
      *p = from_f32<T>(to_f32(*p) * s);
    }
  }
}

__device__ __forceinline__ double warp_sum_f64(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Block b sums the squares of elements b, b + G, b + 2G, ... in a fixed per-thread order, then
// reduces its threads in a fixed tree: the partial depends only on the data and the grid size.
constexpr int kSsThreads = 256;
template <typename T>
__global__ void sum_squares_partial_kernel(const T* t, int64_t cols, int64_t ld, int64_t n,
                                           double* partial) {
  __shared__ double warp_part[kSsThreads / 32];
  double acc = 0.0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double v = load_f64(t + elem_offset(i, cols, ld));
    acc += v * v;
  }
  acc = warp_sum_f64(acc);
  if ((threadIdx.x & 31) == 0) warp_part[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0.0;
    for (int w = 0; w < kSsThreads / 32; ++w) s += warp_part[w];
    partial[blockIdx.x] = s;
  }
}

__global__ void sum_partials_kernel(const double* partial, int64_t count, double* out) {
  __shared__ double warp_part[kSsThreads / 32];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  acc = warp_sum_f64(acc);
  if ((threadIdx.x & 31) == 0) warp_part[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0.0;
    for (int w = 0; w < kSsThreads / 32; ++w) s += warp_part[w];
    *out = s;
  }
}

}  // namespace

void convert(const Tensor& src, const Tensor& dst) {
  const char* op = "convert";
  require_cuda(src, op, "src");
  require_cuda(dst, op, "dst");
  if (src.numel() == 0 && dst.numel() == 0) return;
  Rows s, d;
  match_rows(src, dst, op, &s, &d);
  const int64_t n = s.count();
  dispatch_any_float(src.dtype, op, [&]<typename S>() {
    dispatch_any_float(dst.dtype, op, [&]<typename D>() {
      convert_kernel<S, D><<<grid_for_elements(n, 256), 256, 0, stream()>>>(
          static_cast<const S*>(s.data), s.cols, s.ld, static_cast<D*>(d.data), d.cols, d.ld, n);
      HLM_CUDA_CHECK_LAUNCH();
    });
  });
}

void add_scaled(const Tensor& x, float alpha, const Tensor& y) {
  const char* op = "add_scaled";
  require_cuda(x, op, "x");
  require_cuda(y, op, "y");
  HLM_REQUIRE(same_shape(x, y), ErrorKind::Internal, "{}: x {} and y {} differ in shape", op,
              x.describe(), y.describe());
  if (y.numel() == 0) return;
  Rows rx, ry;
  match_rows(x, y, op, &rx, &ry);
  const int64_t n = ry.count();
  dispatch_float(x.dtype, op, [&]<typename X>() {
    dispatch_float(y.dtype, op, [&]<typename Y>() {
      add_scaled_kernel<X, Y><<<grid_for_elements(n, 256), 256, 0, stream()>>>(
          static_cast<const X*>(rx.data), rx.cols, rx.ld, alpha, static_cast<Y*>(ry.data), ry.cols,
          ry.ld, n);
      HLM_CUDA_CHECK_LAUNCH();
    });
  });
}

void fill(const Tensor& t, double value) {
  const char* op = "fill";
  require_cuda(t, op, "t");
  if (t.numel() == 0) return;
  Rows r = rows_of(t, op);
  const int64_t n = r.count();
  auto run = [&](auto v) {
    using T = decltype(v);
    fill_kernel<T><<<grid_for_elements(n, 256), 256, 0, stream()>>>(static_cast<T*>(r.data), r.cols,
                                                                     r.ld, v, n);
    HLM_CUDA_CHECK_LAUNCH();
  };
  switch (t.dtype) {
    case DType::F32: run(static_cast<float>(value)); break;
    case DType::F64: run(value); break;
    case DType::BF16: run(f32_to_bf16_bits(static_cast<float>(value))); break;
    case DType::F16: run(f32_to_f16_bits(static_cast<float>(value))); break;
    case DType::I32: run(static_cast<int32_t>(value)); break;
    case DType::I64: run(static_cast<int64_t>(value)); break;
    default: fail(ErrorKind::Unsupported, "{}: dtype {} not supported on CUDA", op, dtype_name(t.dtype));
  }
}

void scale_inplace(const Tensor& t, float s) {
  const char* op = "scale_inplace";
  require_cuda(t, op, "t");
  if (t.numel() == 0) return;
  Rows r = rows_of(t, op);
  const int64_t n = r.count();
  dispatch_any_float(t.dtype, op, [&]<typename T>() {
    scale_kernel<T><<<grid_for_elements(n, 256), 256, 0, stream()>>>(static_cast<T*>(r.data), r.cols,
                                                                      r.ld, s, n);
    HLM_CUDA_CHECK_LAUNCH();
  });
}

double sum_squares(const Tensor& t) {
  const char* op = "sum_squares";
  require_cuda(t, op, "t");
  if (t.numel() == 0) return 0.0;
  Rows r = rows_of(t, op);
  const int64_t n = r.count();
  const unsigned blocks = static_cast<unsigned>(std::max<int64_t>(
      1, std::min<int64_t>((n + kSsThreads * 8 - 1) / (kSsThreads * 8), num_sms() * 8)));
  double* partial = scratch_as<double>(Scratch::Reduce, blocks + 1);
  dispatch_any_float(t.dtype, op, [&]<typename T>() {
    sum_squares_partial_kernel<T><<<blocks, kSsThreads, 0, stream()>>>(
        static_cast<const T*>(r.data), r.cols, r.ld, n, partial);
    HLM_CUDA_CHECK_LAUNCH();
  });
  sum_partials_kernel<<<1, kSsThreads, 0, stream()>>>(partial, blocks, partial + blocks);
  HLM_CUDA_CHECK_LAUNCH();
  auto* host = static_cast<double*>(pinned_host(6, sizeof(double)));
  HLM_CUDA_CHECK(cudaMemcpyAsync(host, partial + blocks, sizeof(double), cudaMemcpyDeviceToHost, stream()));
  HLM_CUDA_CHECK(cudaStreamSynchronize(stream()));
  return *host;
}

}  // namespace hlm::cuda
