// CUDA MLP activations (relu², GeLU exact and tanh, SiLU, SwiGLU), forward and backward: one
// elementwise kernel per activation, fp32 math on F32 / BF16 / F16 storage.
#include "ops/activation.h"

#include <algorithm>

#include "ops/cuda/activation.cuh"
#include "ops/cuda/common.cuh"

namespace hlm::cuda {

namespace {

template <Activation A>
__device__ __forceinline__ float act_derivative(float x) {
  if constexpr (A == Activation::ReluSquared) {
    return x > 0.0f ? 2.0f * x : 0.0f;
  } else if constexpr (A == Activation::Gelu) {
    return 0.5f * (1.0f + erff(x * kInvSqrt2)) + x * kInvSqrt2Pi * expf(-0.5f * x * x);
  } else if constexpr (A == Activation::GeluTanh) {
    const float u = kSqrt2OverPi * (x + kGeluCoeff * x * x * x);
    const float th = tanhf(u);
    return 0.5f * (1.0f + th) +
           0.5f * x * (1.0f - th * th) * kSqrt2OverPi * (1.0f + 3.0f * kGeluCoeff * x * x);
  } else {
    const float s = sigmoidf(x);
    return s * (1.0f + x * (1.0f - s));
  }
}

// Element i of a rows × F output: row r = i / F, column c = i % F.
template <typename T, Activation A>
__global__ void act_forward_kernel(const T* in, int64_t ld_in, T* out, int64_t ld_out,
                                   int64_t rows, int64_t F) {
  const int64_t n = rows * F;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / F, c = i % F;
    const T* x = in + r * ld_in;
    float y;
    if constexpr (A == Activation::SwiGlu) {
      y = act_value<Activation::Silu>(to_f32(x[c])) * to_f32(x[F + c]);
    } else {
      y = act_value<A>(to_f32(x[c]));
    }
    out[r * ld_out + c] = from_f32<T>(y);
  }
}

template <typename T, Activation A>
__global__ void act_backward_kernel(const T* in, int64_t ld_in, const T* dout, int64_t ld_dout,
                                    T* din, int64_t ld_din, int64_t rows, int64_t F) {
  const int64_t n = rows * F;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / F, c = i % F;
    const T* x = in + r * ld_in;
    const float g = to_f32(dout[r * ld_dout + c]);
    T* d = din + r * ld_din;
    if constexpr (A == Activation::SwiGlu) {
      const float gate = to_f32(x[c]), up = to_f32(x[F + c]);
      d[c] = from_f32<T>(g * up * act_derivative<Activation::Silu>(gate));
      d[F + c] = from_f32<T>(g * act_value<Activation::Silu>(gate));
    } else {
      d[c] = from_f32<T>(g * act_derivative<A>(to_f32(x[c])));
    }
  }
}

// 16-byte vector paths (every row start and width a whole number of aligned vectors, F64 aside):
// blocks stride over rows (y) and vectors of a row (x), so no per-element division; at the 1.43B
// MLP shape the scalar kernels above ran at ~1/3 of the bandwidth.
template <typename T, Activation A>
__global__ void act_forward_vec_kernel(const T* in, int64_t ld_in, T* out, int64_t ld_out, int64_t rows,
                                       int64_t F) {
  constexpr int N = Vec16<T>::N;
  const int64_t nv = F / N;
  pdl_begin();  // PDL-launched (decode): in comes from the previous kernel
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const T* x = in + r * ld_in;
    T* y = out + r * ld_out;
    for (int64_t v = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; v < nv;
         v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      float a[N], o[N];
      load16<T>(x + v * N, a);
      if constexpr (A == Activation::SwiGlu) {
        float u[N];
        load16<T>(x + F + v * N, u);
#pragma unroll
        for (int j = 0; j < N; ++j) o[j] = act_value<Activation::Silu>(a[j]) * u[j];
      } else {
#pragma unroll
        for (int j = 0; j < N; ++j) o[j] = act_value<A>(a[j]);
      }
      store16<T>(y + v * N, o);
    }
  }
}

template <typename T, Activation A>
__global__ void act_backward_vec_kernel(const T* in, int64_t ld_in, const T* dout, int64_t ld_dout, T* din,
                                        int64_t ld_din, int64_t rows, int64_t F) {
  constexpr int N = Vec16<T>::N;
  const int64_t nv = F / N;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const T* x = in + r * ld_in;
    const T* gr = dout + r * ld_dout;
    T* d = din + r * ld_din;
    for (int64_t v = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; v < nv;
         v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      float a[N], g[N], o[N];
      load16<T>(x + v * N, a);
      load16<T>(gr + v * N, g);
      if constexpr (A == Activation::SwiGlu) {
        float u[N], o2[N];
        load16<T>(x + F + v * N, u);
#pragma unroll
        for (int j = 0; j < N; ++j) {
          o[j] = g[j] * u[j] * act_derivative<Activation::Silu>(a[j]);
          o2[j] = g[j] * act_value<Activation::Silu>(a[j]);
        }
        store16<T>(d + F + v * N, o2);
      } else {
#pragma unroll
        for (int j = 0; j < N; ++j) o[j] = g[j] * act_derivative<A>(a[j]);
      }
      store16<T>(d + v * N, o);
    }
  }
}

dim3 vec_grid(int64_t rows, int64_t F, DType dt) {
  const int64_t nv = F / (16 / static_cast<int64_t>(dtype_size(dt)));
  const int64_t gx = std::min<int64_t>((nv + 255) / 256, 64);
  const int64_t gy = std::max<int64_t>(1, std::min<int64_t>({rows, 65535, num_sms() * 16 / gx + 1}));
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
}

template <typename F>
void dispatch_activation(Activation act, F&& f) {
  switch (act) {
    case Activation::ReluSquared: f.template operator()<Activation::ReluSquared>(); break;
    case Activation::Gelu: f.template operator()<Activation::Gelu>(); break;
    case Activation::GeluTanh: f.template operator()<Activation::GeluTanh>(); break;
    case Activation::Silu: f.template operator()<Activation::Silu>(); break;
    case Activation::SwiGlu: f.template operator()<Activation::SwiGlu>(); break;
    default: fail(ErrorKind::InvalidArgument, "activation: unknown activation {}", static_cast<int>(act));
  }
}

unsigned act_grid(int64_t n) {
  int64_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, num_sms() * 32)));
}

}  // namespace

void activation_forward(Activation act, const Tensor& in, const Tensor& out) {
  const char* op = "activation_forward";
  require_cuda(in, op, "in");
  require_cuda(out, op, "out");
  require_float(in, op, "in");
  require_dtype(out, in.dtype, op, "out");
  RowView I = as_rows(in, 1, op), O = as_rows(out, 1, op);
  const int64_t F = O.cols;
  HLM_REQUIRE(I.rows == O.rows && I.cols == activation_input_width(act, F), ErrorKind::Internal,
              "{}: in {} does not fit out {}", op, in.describe(), out.describe());
  if (O.rows * F == 0) return;
  if (in.dtype != DType::F64 && vec16_rows(in.dtype, F, {{I.data, I.ld}, {O.data, O.ld}})) {
    dispatch_float(in.dtype, op, [&]<typename T>() {
      dispatch_activation(act, [&]<Activation A>() {
        launch_pdl(act_forward_vec_kernel<T, A>, vec_grid(O.rows, F, in.dtype), dim3(256), 0,
                   static_cast<const T*>(I.data), I.ld, static_cast<T*>(O.data), O.ld, O.rows, F);
        HLM_CUDA_CHECK_LAUNCH();
      });
    });
    return;
  }
  dispatch_float(in.dtype, op, [&]<typename T>() {
    dispatch_activation(act, [&]<Activation A>() {
      act_forward_kernel<T, A><<<act_grid(O.rows * F), 256, 0, stream()>>>(
          static_cast<const T*>(I.data), I.ld, static_cast<T*>(O.data), O.ld, O.rows, F);
      HLM_CUDA_CHECK_LAUNCH();
    });
  });
}

void activation_backward(Activation act, const Tensor& in, const Tensor& dout, const Tensor& din) {
  const char* op = "activation_backward";
  require_cuda(in, op, "in");
  require_cuda(dout, op, "dout");
  require_cuda(din, op, "din");
  require_float(in, op, "in");
  require_dtype(dout, in.dtype, op, "dout");
  require_dtype(din, in.dtype, op, "din");
  RowView I = as_rows(in, 1, op), G = as_rows(dout, 1, op), D = as_rows(din, 1, op);
  const int64_t F = G.cols;
  HLM_REQUIRE(I.rows == G.rows && D.rows == G.rows && I.cols == activation_input_width(act, F) &&
                  D.cols == I.cols,
              ErrorKind::Internal, "{}: in {}, dout {} and din {} do not fit", op, in.describe(),
              dout.describe(), din.describe());
  if (G.rows * F == 0) return;
  if (in.dtype != DType::F64 && vec16_rows(in.dtype, F, {{I.data, I.ld}, {G.data, G.ld}, {D.data, D.ld}})) {
    dispatch_float(in.dtype, op, [&]<typename T>() {
      dispatch_activation(act, [&]<Activation A>() {
        act_backward_vec_kernel<T, A><<<vec_grid(G.rows, F, in.dtype), 256, 0, stream()>>>(
            static_cast<const T*>(I.data), I.ld, static_cast<const T*>(G.data), G.ld, static_cast<T*>(D.data),
            D.ld, G.rows, F);
        HLM_CUDA_CHECK_LAUNCH();
      });
    });
    return;
  }
  dispatch_float(in.dtype, op, [&]<typename T>() {
    dispatch_activation(act, [&]<Activation A>() {
      act_backward_kernel<T, A><<<act_grid(G.rows * F), 256, 0, stream()>>>(
          static_cast<const T*>(I.data), I.ld, static_cast<const T*>(G.data), G.ld,
          static_cast<T*>(D.data), D.ld, G.rows, F);
      HLM_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace hlm::cuda
