// CPU RMSNorm and the Mamba-2 group-wise gated RMSNorm, forward and backward.
//
// RMSNorm backward, with g = w·dy and r = rstd over a row of D:  dx = r·(g − x·r²·mean(g·x)).
// The weight gradients are reduced over fixed blocks of rows, then the blocks in order.
#include "ops/norm.h"

#include <vector>

#include "ops/cpu/common.h"

namespace hlm::cpu {

using namespace detail;

namespace {

struct NormRows {
  RowView x, y;
  int64_t M, D;
};

// Checks x, second ([M,D] row views, same dtype) and w [D]; returns the row views.
NormRows norm_rows(const Tensor& x, const Tensor& second, const char* second_name,
                   const Tensor& w, const char* op) {
  require_cpu(x, op, "x");
  require_cpu(second, op, second_name);
  require_dtype(second, x.dtype, op, second_name);
  RowView X = as_rows(x, 1, op), S = as_rows(second, 1, op);
  HLM_REQUIRE(S.rows == X.rows && S.cols == X.cols, ErrorKind::Internal,
              "{}: x {} and {} {} differ in shape", op, x.describe(), second_name,
              second.describe());
  require(w, x.dtype, {X.cols}, op, "w");
  return {X, S, X.rows, X.cols};
}

// Sums per-block partial weight gradients [nblocks, D] in block order into dw.
template <typename T>
void reduce_blocks_into(const std::vector<T>& partial, int64_t nblocks, int64_t D, T* dw) {
  for (int64_t b = 0; b < nblocks; ++b) {
    const T* p = partial.data() + b * D;
#pragma omp simd
    for (int64_t i = 0; i < D; ++i) dw[i] += p[i];
  }
}

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y,
                     const Tensor& rstd) {
  const char* op = "rmsnorm_forward";
  NormRows n = norm_rows(x, y, "y", w, op);
  require(rstd, x.dtype, {n.M}, op, "rstd");
  with_float_type(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const T* wp = w.ptr<T>();
    T* rs = rstd.ptr<T>();
#pragma omp parallel for schedule(static) if (n.M * n.D > 16384)
    for (int64_t m = 0; m < n.M; ++m) {
      const T* xr = n.x.row<T>(m);
      T* yr = n.y.row<T>(m);
      T ss = 0;
#pragma omp simd reduction(+ : ss)
      for (int64_t i = 0; i < n.D; ++i) ss += xr[i] * xr[i];
      const T r = T(1) / std::sqrt(ss / static_cast<T>(n.D) + static_cast<T>(eps));
      rs[m] = r;
#pragma omp simd
      for (int64_t i = 0; i < n.D; ++i) yr[i] = xr[i] * r * wp[i];
    }
  });
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      const Tensor& dx, const Tensor& dw) {
  const char* op = "rmsnorm_backward";
  NormRows n = norm_rows(x, dy, "dy", w, op);
  require(rstd, x.dtype, {n.M}, op, "rstd");
  RowView DX{};
  if (dx.defined()) {
    require_cpu(dx, op, "dx");
    require_dtype(dx, x.dtype, op, "dx");
    DX = as_rows(dx, 1, op);
    HLM_REQUIRE(DX.rows == n.M && DX.cols == n.D, ErrorKind::Internal, "{}: dx {} must be [{},{}]",
                op, dx.describe(), n.M, n.D);
  }
  if (dw.defined()) require(dw, x.dtype, {n.D}, op, "dw");
  with_float_type(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const T* wp = w.ptr<T>();
    const T* rs = rstd.ptr<T>();
    const int64_t nblocks = num_blocks(n.M);
    std::vector<T> partial(dw.defined() ? static_cast<size_t>(nblocks * n.D) : 0, T(0));
#pragma omp parallel for schedule(static) if (n.M * n.D > 16384)
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      T* pdw = dw.defined() ? partial.data() + blk * n.D : nullptr;
      for (int64_t m = blk * kReduceBlock; m < std::min(n.M, (blk + 1) * kReduceBlock); ++m) {
        const T* xr = n.x.row<T>(m);
        const T* g = n.y.row<T>(m);
        const T r = rs[m];
        if (dx.defined()) {
          T dot = 0;
#pragma omp simd reduction(+ : dot)
          for (int64_t i = 0; i < n.D; ++i) dot += wp[i] * g[i] * xr[i];
          const T c = r * r * dot / static_cast<T>(n.D);
          T* dxr = DX.row<T>(m);
#pragma omp simd
          for (int64_t i = 0; i < n.D; ++i) dxr[i] = r * (wp[i] * g[i] - xr[i] * c);
        }
        if (pdw) {
#pragma omp simd
          for (int64_t i = 0; i < n.D; ++i) pdw[i] += g[i] * xr[i] * r;
        }
      }
    }
    if (dw.defined()) reduce_blocks_into(partial, nblocks, n.D, dw.ptr<T>());
  });
}

void gated_rmsnorm_forward(const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size,
                           float eps, const Tensor& y, const Tensor& rstd) {
  const char* op = "gated_rmsnorm_forward";
  NormRows n = norm_rows(x, y, "y", w, op);
  NormRows nz = norm_rows(x, z, "z", w, op);
  HLM_REQUIRE(group_size > 0 && n.D % group_size == 0, ErrorKind::InvalidArgument,
              "{}: group size {} does not divide the width {}", op, group_size, n.D);
  const int64_t ng = n.D / group_size;
  require_cpu(rstd, op, "rstd");
  require_dtype(rstd, x.dtype, op, "rstd");
  RowView RS = as_rows(rstd, 1, op);
  HLM_REQUIRE(RS.rows == n.M && RS.cols == ng, ErrorKind::Internal, "{}: rstd {} must be [{},{}]",
              op, rstd.describe(), n.M, ng);
  with_float_type(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const T* wp = w.ptr<T>();
#pragma omp parallel for schedule(static) if (n.M * n.D > 16384)
    for (int64_t m = 0; m < n.M; ++m) {
      const T* xr = n.x.row<T>(m);
      const T* zr = nz.y.row<T>(m);
      T* yr = n.y.row<T>(m);
      T* rr = RS.row<T>(m);
      for (int64_t gi = 0; gi < ng; ++gi) {
        const int64_t i0 = gi * group_size, i1 = i0 + group_size;
        T ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int64_t i = i0; i < i1; ++i) {
          const T gate = xr[i] * zr[i] * sigmoid(zr[i]);
          yr[i] = gate;  // y holds g until the group's rstd is known
          ss += gate * gate;
        }
        const T r = T(1) / std::sqrt(ss / static_cast<T>(group_size) + static_cast<T>(eps));
        rr[gi] = r;
#pragma omp simd
        for (int64_t i = i0; i < i1; ++i) yr[i] = yr[i] * r * wp[i];
      }
    }
  });
}

void gated_rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& z, const Tensor& w,
                            const Tensor& rstd, int64_t group_size, const Tensor& dx,
                            const Tensor& dz, const Tensor& dw) {
  const char* op = "gated_rmsnorm_backward";
  NormRows n = norm_rows(x, dy, "dy", w, op);
  NormRows nz = norm_rows(x, z, "z", w, op);
  HLM_REQUIRE(group_size > 0 && n.D % group_size == 0, ErrorKind::InvalidArgument,
              "{}: group size {} does not divide the width {}", op, group_size, n.D);
  const int64_t ng = n.D / group_size;
  require_cpu(rstd, op, "rstd");
  require_dtype(rstd, x.dtype, op, "rstd");
  RowView RS = as_rows(rstd, 1, op);
  HLM_REQUIRE(RS.rows == n.M && RS.cols == ng, ErrorKind::Internal, "{}: rstd {} must be [{},{}]",
              op, rstd.describe(), n.M, ng);
  RowView DX{}, DZ{};
  if (dx.defined()) DX = norm_rows(x, dx, "dx", w, op).y;
  if (dz.defined()) DZ = norm_rows(x, dz, "dz", w, op).y;
  if (dw.defined()) require(dw, x.dtype, {n.D}, op, "dw");
  with_float_type(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const T* wp = w.ptr<T>();
    const int64_t nblocks = num_blocks(n.M);
    std::vector<T> partial(dw.defined() ? static_cast<size_t>(nblocks * n.D) : 0, T(0));
#pragma omp parallel
    {
      std::vector<T> gate(static_cast<size_t>(group_size)), sg(static_cast<size_t>(group_size));
#pragma omp for schedule(static)
      for (int64_t blk = 0; blk < nblocks; ++blk) {
        T* pdw = dw.defined() ? partial.data() + blk * n.D : nullptr;
        for (int64_t m = blk * kReduceBlock; m < std::min(n.M, (blk + 1) * kReduceBlock); ++m) {
          const T* xr = n.x.row<T>(m);
          const T* zr = nz.y.row<T>(m);
          const T* g = n.y.row<T>(m);
          const T* rr = RS.row<T>(m);
          for (int64_t gi = 0; gi < ng; ++gi) {
            const int64_t i0 = gi * group_size;
            const T r = rr[gi];
            T dot = 0;
            for (int64_t k = 0; k < group_size; ++k) {
              const int64_t i = i0 + k;
              sg[static_cast<size_t>(k)] = sigmoid(zr[i]);
              gate[static_cast<size_t>(k)] = xr[i] * zr[i] * sg[static_cast<size_t>(k)];
              dot += wp[i] * g[i] * gate[static_cast<size_t>(k)];
            }
            const T c = r * r * dot / static_cast<T>(group_size);
            for (int64_t k = 0; k < group_size; ++k) {
              const int64_t i = i0 + k;
              const T s = sg[static_cast<size_t>(k)], gt = gate[static_cast<size_t>(k)];
              const T dgate = r * (wp[i] * g[i] - gt * c);
              if (dx.defined()) DX.row<T>(m)[i] = dgate * zr[i] * s;
              if (dz.defined()) DZ.row<T>(m)[i] = dgate * xr[i] * s * (T(1) + zr[i] * (T(1) - s));
              if (pdw) pdw[i] += g[i] * gt * r;
            }
          }
        }
      }
    }
    if (dw.defined()) reduce_blocks_into(partial, nblocks, n.D, dw.ptr<T>());
  });
}

}  // namespace hlm::cpu
