// Helpers shared by the CPU ops: dtype dispatch, shape and dtype checks, BLAS wrappers, a
// vectorisable exp, and fixed-size blocks for reductions that must not depend on the thread count.
#pragma once

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>

#include "core/error.h"
#include "core/tensor.h"

namespace hlm::cpu::detail {

// Calls fn(float{}) or fn(double{}) by dtype; any other dtype is an Internal error naming op.
template <typename Fn>
decltype(auto) with_float_type(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::F32: return fn(float{});
    case DType::F64: return fn(double{});
    default:
      fail(ErrorKind::Internal, "{}: dtype {} is not supported by the CPU backend (F32 or F64)", op,
           dtype_name(t));
  }
}

// "op: name: expected F32[2,3] but got F64[2,4] on CPU" style checks.
void require_cpu(const Tensor& t, const char* op, const char* name);
void require_dtype(const Tensor& t, DType dtype, const char* op, const char* name);
void require_shape(const Tensor& t, std::initializer_list<int64_t> dims, const char* op,
                   const char* name);
// dtype, shape and device in one call (the common case).
inline void require(const Tensor& t, DType dtype, std::initializer_list<int64_t> dims,
                    const char* op, const char* name) {
  require_cpu(t, op, name);
  require_dtype(t, dtype, op, name);
  require_shape(t, dims, op, name);
}
// A [B,T] I32 tensor of document ids, contiguous in T (a row stride is allowed).
const int32_t* doc_row(const Tensor& doc, int64_t b);
// True when position t (> 0) of a doc row starts a new document.
inline bool doc_boundary(const int32_t* doc_b, int64_t t) {
  return doc_b != nullptr && t > 0 && doc_b[t] != doc_b[t - 1];
}

inline int blas_int(int64_t v, const char* op) {
  HLM_REQUIRE(v >= 0 && v <= INT_MAX, ErrorKind::Internal, "{}: size {} exceeds the BLAS int range",
              op, v);
  return static_cast<int>(v);
}

// Row-major C[M,N] = alpha op(A) op(B) + beta C through OpenBLAS. Inside an OpenMP parallel region
// the OpenMP build of OpenBLAS runs single-threaded (it checks omp_in_parallel), which is what the
// per-(batch, chunk, head) loops want: their GEMMs are small and the parallelism is outside.
inline void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              blas_int(M, "gemm"), blas_int(N, "gemm"), blas_int(K, "gemm"), alpha, A,
              blas_int(std::max<int64_t>(lda, 1), "gemm"), B,
              blas_int(std::max<int64_t>(ldb, 1), "gemm"), beta, C,
              blas_int(std::max<int64_t>(ldc, 1), "gemm"));
}
inline void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                 int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              blas_int(M, "gemm"), blas_int(N, "gemm"), blas_int(K, "gemm"), alpha, A,
              blas_int(std::max<int64_t>(lda, 1), "gemm"), B,
              blas_int(std::max<int64_t>(ldb, 1), "gemm"), beta, C,
              blas_int(std::max<int64_t>(ldc, 1), "gemm"));
}

// exp that GCC vectorises inside `omp simd` loops (std::exp is a library call it will not
// vectorise without -ffast-math). Float: Cephes expf (range reduction by ln 2, degree-6
// polynomial), within 2 ulp of std::exp; 0 below -87. Double: std::exp (the gradient checks).
inline float vexp(float x) {
  const float xc = x > 88.37626f ? 88.37626f : (x < -87.0f ? -87.0f : x);
  const float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  const uint32_t bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.0f ? 0.0f : p * scale;
}
inline double vexp(double x) { return std::exp(x); }

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + vexp(-x));
}
// torch.nn.functional.softplus (threshold 20: linear above).
template <typename T>
inline T softplus(T x) {
  return x > T(20) ? x : std::log1p(std::exp(x));
}

// Reductions over rows are done per fixed block of rows and the block partials are summed in
// order, so results are bitwise the same for any number of threads.
constexpr int64_t kReduceBlock = 64;
inline int64_t num_blocks(int64_t rows, int64_t block = kReduceBlock) {
  return (rows + block - 1) / block;
}

}  // namespace hlm::cpu::detail
