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
// Checks doc ids (when defined): a CPU [B,T] I32 tensor, contiguous in T (any row stride).
// Ops call this before any parallel region, so doc_row cannot throw inside one.
void require_doc(const Tensor& doc, int64_t B, int64_t T, const char* op);
// Row b of a doc tensor, nullptr when undefined.
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

// B[M,N] := alpha · op(A) · B with A [M,M] lower triangular (non-unit diagonal), in place.
inline void trmm_lower_left(bool trans_a, int64_t M, int64_t N, float alpha, const float* A,
                            int64_t lda, float* B, int64_t ldb) {
  if (M == 0 || N == 0) return;
  cblas_strmm(CblasRowMajor, CblasLeft, CblasLower, trans_a ? CblasTrans : CblasNoTrans,
              CblasNonUnit, blas_int(M, "trmm"), blas_int(N, "trmm"), alpha, A,
              blas_int(std::max<int64_t>(lda, 1), "trmm"), B,
              blas_int(std::max<int64_t>(ldb, 1), "trmm"));
}
inline void trmm_lower_left(bool trans_a, int64_t M, int64_t N, double alpha, const double* A,
                            int64_t lda, double* B, int64_t ldb) {
  if (M == 0 || N == 0) return;
  cblas_dtrmm(CblasRowMajor, CblasLeft, CblasLower, trans_a ? CblasTrans : CblasNoTrans,
              CblasNonUnit, blas_int(M, "trmm"), blas_int(N, "trmm"), alpha, A,
              blas_int(std::max<int64_t>(lda, 1), "trmm"), B,
              blas_int(std::max<int64_t>(ldb, 1), "trmm"));
}

// exp that GCC vectorises inside `omp simd` loops (std::exp is a library call it will not
// vectorise without -ffast-math). Float: Cephes expf (x = n·ln2 + r by the 1.5·2²³ rounding trick,
// degree-6 polynomial in r), within 1.4·2⁻²⁴ relative of exp over [-87, 88.37]; 0 below, +inf
// above, NaN for NaN. Written without branches: under GCC's default -ftrapping-math a conditional
// FP operation blocks if-conversion and so vectorisation. Double: std::exp (the gradient checks).
inline float vexp(float x) {
  const float z = x * 1.44269504088896341f + 12582912.0f;
  const float n = z - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  uint32_t zb;
  std::memcpy(&zb, &z, sizeof(zb));  // the low mantissa bits of z hold n
  const uint32_t sb = (zb - 0x4B400000u + 127u) << 23;
  float scale;
  std::memcpy(&scale, &sb, sizeof(scale));
  const float v = p * scale;
  uint32_t vb;
  std::memcpy(&vb, &v, sizeof(vb));
  // Outside [-87, 88.37] the bits above are garbage: mask them (0 below, +inf above) with
  // integer masks rather than selects, so the computation stays unconditional.
  const bool below = x < -87.0f, above = x > 88.37626f;
  const uint32_t keep = (below || above) ? 0u : 0xFFFFFFFFu;
  vb = (vb & keep) | (above ? 0x7F800000u : 0u);
  float out;
  std::memcpy(&out, &vb, sizeof(out));
  return out;
}
inline double vexp(double x) { return std::exp(x); }

// exp(min(x, 0)): every SSD decay. The min is done on the result bits (a select on x would have
// GCC fold vexp(0) into one arm and move the exp into a branch, which stops vectorisation).
inline float vexp_decay(float x) {
  const float v = vexp(x);
  uint32_t vb;
  std::memcpy(&vb, &v, sizeof(vb));
  const bool pos = x > 0.0f;
  vb = (vb & (pos ? 0u : 0xFFFFFFFFu)) | (pos ? 0x3F800000u : 0u);
  float out;
  std::memcpy(&out, &vb, sizeof(out));
  return out;
}
inline double vexp_decay(double x) { return std::exp(std::min(x, 0.0)); }

// max(x, 0) by clearing the bits of negative values: a select would become a branch around the
// arithmetic that uses it (see vexp), which GCC then neither if-converts nor vectorises.
inline float relu(float x) {
  int32_t b;
  std::memcpy(&b, &x, sizeof(b));
  b &= ~(b >> 31);
  float out;
  std::memcpy(&out, &b, sizeof(out));
  return out;
}
inline double relu(double x) {
  int64_t b;
  std::memcpy(&b, &x, sizeof(b));
  b &= ~(b >> 63);
  double out;
  std::memcpy(&out, &b, sizeof(out));
  return out;
}
// tanh through vexp for float (vectorisable; absolute error ~1e-7); std::tanh for double.
inline float vtanh(float x) { return 1.0f - 2.0f / (1.0f + vexp(2.0f * x)); }
inline double vtanh(double x) { return std::tanh(x); }

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + vexp(-x));
}
// torch.nn.functional.softplus (threshold 20: linear above).
template <typename T>
inline T softplus(T x) {
  return x > T(20) ? x : std::log1p(std::exp(x));
}

// Reusable, uninitialised scratch owned by the calling thread: slot k (0..7) grows to the
// largest size asked for and is kept for the next call, so big per-call buffers (SSD chunk states)
// do not fault in fresh pages every call. A slot must not be used twice at once.
void* thread_workspace(int slot, size_t bytes);
template <typename T>
T* workspace(int slot, size_t count) {
  return static_cast<T*>(thread_workspace(slot, count * sizeof(T)));
}
// Slots 0..7 are for buffers of the calling thread outside parallel regions; slot
// kRegionScratchSlot is for per-thread scratch inside them (OpenMP reuses its threads, so the
// memory stays warm from call to call).
constexpr int kRegionScratchSlot = 8;

// Carves 64-byte aligned arrays, in order, out of one workspace slot of the current thread:
//   ScratchCarver sc(kRegionScratchSlot, {n1 * sizeof(float), n2 * sizeof(float)});
//   float* a = sc.take<float>(n1); float* b = sc.take<float>(n2);
class ScratchCarver {
 public:
  ScratchCarver(int slot, std::initializer_list<size_t> sizes) {
    size_t total = 0;
    for (size_t s : sizes) total += round_up(s);
    base_ = static_cast<char*>(thread_workspace(slot, total));
    end_ = total;
  }
  template <typename T>
  T* take(size_t count) {
    T* p = reinterpret_cast<T*>(base_ + used_);
    used_ += round_up(count * sizeof(T));
    HLM_ASSERT(used_ <= end_);
    return p;
  }

 private:
  static size_t round_up(size_t b) { return (b + 63) / 64 * 64; }
  char* base_ = nullptr;
  size_t used_ = 0, end_ = 0;
};

// Below this many multiply-adds an op runs on one thread: a parallel region costs microseconds,
// and far more when the cores are shared with other processes.
constexpr int64_t kParallelWork = int64_t{1} << 16;

// Reductions over rows are done per fixed block of rows and the block partials are summed in
// order, so results are bitwise the same for any number of threads.
constexpr int64_t kReduceBlock = 64;
inline int64_t num_blocks(int64_t rows, int64_t block = kReduceBlock) {
  return (rows + block - 1) / block;
}

}  // namespace hlm::cpu::detail
