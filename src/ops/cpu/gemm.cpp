// CPU matrix products on OpenBLAS: matmul and the linear layer (forward and backward).
#include "ops/gemm.h"

#include <vector>

#include "core/memory.h"
#include "ops/cpu/common.h"
#include "ops/elementwise.h"

namespace hlm::cpu {

using namespace detail;

void matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c,
            float alpha, float beta) {
  const char* op = "matmul";
  for (const Tensor* t : {&a, &b, &c}) {
    require_cpu(*t, op, "operand");
    HLM_REQUIRE(t->ndim == 2, ErrorKind::Internal, "{}: operand {} must be 2-D", op, t->describe());
    require_dtype(*t, c.dtype, op, "operand");
  }
  RowView A = as_rows(a, 1, "matmul a"), Bv = as_rows(b, 1, "matmul b"),
          Cv = as_rows(c, 1, "matmul c");
  int64_t M = trans_a ? A.cols : A.rows, K = trans_a ? A.rows : A.cols;
  int64_t Kb = trans_b ? Bv.cols : Bv.rows, N = trans_b ? Bv.rows : Bv.cols;
  HLM_REQUIRE(K == Kb && Cv.rows == M && Cv.cols == N, ErrorKind::Internal,
              "matmul: op(a) [{},{}] x op(b) [{},{}] does not give c {}", M, K, Kb, N,
              c.describe());
  with_float_type(c.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    if (K == 0) {  // BLAS leaves C untouched for K = 0 only with beta = 1: do it here
      for (int64_t r = 0; r < M; ++r)
        for (int64_t j = 0; j < N; ++j)
          Cv.row<T>(r)[j] = beta == 0.0f ? T(0) : static_cast<T>(beta) * Cv.row<T>(r)[j];
      return;
    }
    gemm(trans_a, trans_b, M, N, K, static_cast<T>(alpha), A.row<T>(0), A.ld, Bv.row<T>(0), Bv.ld,
         static_cast<T>(beta), Cv.row<T>(0), Cv.ld);
  });
}

void linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y) {
  const char* op = "linear_forward";
  require_cpu(x, op, "x");
  require_cpu(y, op, "y");
  require_cpu(w, op, "w");
  RowView X = as_rows(x, 1, "linear_forward x"), Y = as_rows(y, 1, "linear_forward y");
  HLM_REQUIRE(w.ndim == 2, ErrorKind::Internal, "{}: w {} must be [N,K]", op, w.describe());
  RowView W = as_rows(w, 1, "linear_forward w");
  const int64_t M = X.rows, K = X.cols, N = W.rows;
  HLM_REQUIRE(W.cols == K && Y.rows == M && Y.cols == N, ErrorKind::Internal,
              "{}: x {} · wᵀ {} does not give y {}", op, x.describe(), w.describe(), y.describe());
  require_dtype(w, x.dtype, op, "w");
  require_dtype(y, x.dtype, op, "y");
  if (bias.defined()) require(bias, x.dtype, {N}, op, "bias");
  with_float_type(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    T beta = 0;
    if (bias.defined()) {
      const T* bp = bias.ptr<T>();
#pragma omp parallel for schedule(static) if (M * N > 65536)
      for (int64_t r = 0; r < M; ++r) std::copy(bp, bp + N, Y.row<T>(r));
      beta = 1;
    }
    if (K == 0) {
      if (!bias.defined())
        for (int64_t r = 0; r < M; ++r) std::fill(Y.row<T>(r), Y.row<T>(r) + N, T(0));
      return;
    }
    gemm(false, true, M, N, K, T(1), X.row<T>(0), X.ld, W.row<T>(0), W.ld, beta, Y.row<T>(0), Y.ld);
  });
}

// The definition: the projection into y, then the activation in place.
void linear_act_forward(const Tensor& x, const Tensor& w, const Tensor& bias, Activation act, const Tensor& y) {
  HLM_REQUIRE(act != Activation::SwiGlu, ErrorKind::Internal, "linear_act_forward: SwiGlu is not elementwise");
  cpu::linear_forward(x, w, bias, y);
  cpu::activation_forward(act, y, y);
}

// The definition: the projection, then the residual added (y may be the residual itself).
void linear_residual_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual,
                             const Tensor& y) {
  const char* op = "linear_residual_forward";
  require_cpu(residual, op, "residual");
  require_dtype(residual, x.dtype, op, "residual");
  HLM_REQUIRE(same_shape(residual, y), ErrorKind::Internal, "{}: residual {} must match y {}", op,
              residual.describe(), y.describe());
  if (residual.data == y.data) {
    HLM_REQUIRE(residual.stride == y.stride, ErrorKind::Internal, "{}: residual and y overlap differently", op);
    const Shape shape(y.shape.data(), static_cast<size_t>(y.ndim));
    const Buffer buf(Device::CPU, Arena::bytes_for(y.dtype, shape));
    const Tensor tmp = buf.as(y.dtype, shape);
    cpu::linear_forward(x, w, bias, tmp);
    cpu::add_scaled(tmp, 1.0f, y);
    return;
  }
  cpu::linear_forward(x, w, bias, y);
  cpu::add_scaled(residual, 1.0f, y);
}

void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx,
                     const Tensor& dw, const Tensor& dbias, bool accumulate_dx) {
  const char* op = "linear_backward";
  require_cpu(dy, op, "dy");
  require_cpu(x, op, "x");
  require_cpu(w, op, "w");
  RowView DY = as_rows(dy, 1, "linear_backward dy"), X = as_rows(x, 1, "linear_backward x");
  HLM_REQUIRE(w.ndim == 2, ErrorKind::Internal, "{}: w {} must be [N,K]", op, w.describe());
  RowView W = as_rows(w, 1, "linear_backward w");
  const int64_t M = X.rows, K = X.cols, N = W.rows;
  HLM_REQUIRE(W.cols == K && DY.rows == M && DY.cols == N, ErrorKind::Internal,
              "{}: dy {}, x {} and w {} do not agree", op, dy.describe(), x.describe(),
              w.describe());
  require_dtype(x, dy.dtype, op, "x");
  require_dtype(w, dy.dtype, op, "w");
  with_float_type(dy.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    if (dx.defined()) {
      require_cpu(dx, op, "dx");
      require_dtype(dx, dy.dtype, op, "dx");
      RowView DX = as_rows(dx, 1, "linear_backward dx");
      HLM_REQUIRE(DX.rows == M && DX.cols == K, ErrorKind::Internal, "{}: dx {} must be [{},{}]",
                  op, dx.describe(), M, K);
      if (N == 0) {
        if (!accumulate_dx)
          for (int64_t r = 0; r < M; ++r) std::fill(DX.row<T>(r), DX.row<T>(r) + K, T(0));
      } else {
        gemm(false, false, M, K, N, T(1), DY.row<T>(0), DY.ld, W.row<T>(0), W.ld,
             accumulate_dx ? T(1) : T(0), DX.row<T>(0), DX.ld);
      }
    }
    if (dw.defined() && M > 0) {
      require(dw, dy.dtype, {N, K}, op, "dw");
      RowView DW = as_rows(dw, 1, "linear_backward dw");
      gemm(true, false, N, K, M, T(1), DY.row<T>(0), DY.ld, X.row<T>(0), X.ld, T(1), DW.row<T>(0),
           DW.ld);
    }
    if (dbias.defined()) {
      require(dbias, dy.dtype, {N}, op, "dbias");
      // Column sums: each thread owns a slice of columns and adds rows in order (deterministic).
      T* db = dbias.ptr<T>();
      constexpr int64_t kCols = 256;
#pragma omp parallel for schedule(static) if (M * N > 65536)
      for (int64_t c0 = 0; c0 < N; c0 += kCols) {
        const int64_t c1 = std::min(N, c0 + kCols);
        T acc[kCols] = {};
        for (int64_t r = 0; r < M; ++r) {
          const T* g = DY.row<T>(r);
#pragma omp simd
          for (int64_t c = c0; c < c1; ++c) acc[c - c0] += g[c];
        }
        for (int64_t c = c0; c < c1; ++c) db[c] += acc[c - c0];
      }
    }
  });
}

}  // namespace hlm::cpu
