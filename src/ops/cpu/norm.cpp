// CPU RMSNorm and the Mamba-2 group-wise gated RMSNorm, forward and backward.
//
// RMSNorm backward, with g = w·dy and r = rstd over a row of D:  dx = r·(g − x·r²·mean(g·x)).
// The weight gradients are reduced over fixed blocks of rows, then the blocks in order.
#include "ops/norm.h"

#include <vector>

#include "core/memory.h"
#include "ops/cpu/common.h"
#include "ops/elementwise.h"

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

// A contiguous tensor of `count` elements, any shape ([M] or [B,T]).
void require_vector(const Tensor& t, DType dtype, int64_t count, const char* op, const char* name) {
  require_cpu(t, op, name);
  require_dtype(t, dtype, op, name);
  HLM_REQUIRE(t.is_contiguous() && t.numel() == count, ErrorKind::Internal,
              "{}: {} {} must be contiguous with {} elements", op, name, t.describe(), count);
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
  require_vector(rstd, x.dtype, n.M, op, "rstd");
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

// The definition: the two ops it fuses, in order.
void residual_rmsnorm_forward(const Tensor& x, const Tensor& d, const Tensor& w, float eps,
                              const Tensor& y, const Tensor& rstd) {
  cpu::add_scaled(d, 1.0f, x);
  cpu::rmsnorm_forward(x, w, eps, y, rstd);
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                      const Tensor& dx, const Tensor& dw) {
  const char* op = "rmsnorm_backward";
  NormRows n = norm_rows(x, dy, "dy", w, op);
  require_vector(rstd, x.dtype, n.M, op, "rstd");
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

// The definition: rmsnorm_backward into a temporary, added to dres.
void residual_rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                               const Tensor& dres, const Tensor& dw) {
  const char* op = "residual_rmsnorm_backward";
  require_cpu(dres, op, "dres");
  require_dtype(dres, x.dtype, op, "dres");
  HLM_REQUIRE(same_shape(dres, x), ErrorKind::Internal, "{}: dres {} must match x {}", op, dres.describe(),
              x.describe());
  const Shape shape(x.shape.data(), static_cast<size_t>(x.ndim));
  const Buffer buf(Device::CPU, Arena::bytes_for(x.dtype, shape));
  const Tensor dx = buf.as(x.dtype, shape);
  cpu::rmsnorm_backward(dy, x, w, rstd, dx, dw);
  cpu::add_scaled(dx, 1.0f, dres);
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
          yr[i] = gate;  // y holds the gate until the group's rstd is known
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

// With g = x·silu(z), r the group's rstd and u = w·dy:  dg = r·(u − g·r²·mean(u·g)),
// dx = dg·silu(z), dz = dg·x·silu'(z), dw += dy·g·r.
void gated_rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& z, const Tensor& w,
                            const Tensor& rstd, int64_t group_size, const Tensor& dx,
                            const Tensor& dz, const Tensor& dw) {
  const char* op = "gated_rmsnorm_backward";
  NormRows n = norm_rows(x, dy, "dy", w, op);
  NormRows nz = norm_rows(x, z, "z", w, op);
  HLM_REQUIRE(group_size > 0 && n.D % group_size == 0, ErrorKind::InvalidArgument,
              "{}: group size {} does not divide the width {}", op, group_size, n.D);
  const int64_t ng = n.D / group_size, D = n.D;
  require_cpu(rstd, op, "rstd");
  require_dtype(rstd, x.dtype, op, "rstd");
  RowView RS = as_rows(rstd, 1, op);
  HLM_REQUIRE(RS.rows == n.M && RS.cols == ng, ErrorKind::Internal, "{}: rstd {} must be [{},{}]",
              op, rstd.describe(), n.M, ng);
  RowView DX{}, DZ{};
  if (dx.defined()) DX = norm_rows(x, dx, "dx", w, op).y;
  if (dz.defined()) DZ = norm_rows(x, dz, "dz", w, op).y;
  if (dw.defined()) require(dw, x.dtype, {D}, op, "dw");
  with_float_type(x.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const T* wp = w.ptr<T>();
    const int64_t nblocks = num_blocks(n.M);
    std::vector<T> partial(dw.defined() ? static_cast<size_t>(nblocks * D) : 0, T(0));
#pragma omp parallel if (n.M * D > 16384)
    {
      // per-row scratch: sigmoid(z), the gate g, and sinks for gradients not asked for
      std::vector<T> sg(static_cast<size_t>(D)), gate(sg.size()), sink(sg.size());
#pragma omp for schedule(static)
      for (int64_t blk = 0; blk < nblocks; ++blk) {
        T* pdw = dw.defined() ? partial.data() + blk * D : sink.data();
        for (int64_t m = blk * kReduceBlock; m < std::min(n.M, (blk + 1) * kReduceBlock); ++m) {
          const T* xr = n.x.row<T>(m);
          const T* zr = nz.y.row<T>(m);
          const T* g = n.y.row<T>(m);
          const T* rr = RS.row<T>(m);
          T* dxr = dx.defined() ? DX.row<T>(m) : sink.data();
          T* dzr = dz.defined() ? DZ.row<T>(m) : sink.data();
          T* sgp = sg.data();
          T* gp = gate.data();
          for (int64_t gi = 0; gi < ng; ++gi) {
            const int64_t i0 = gi * group_size, i1 = i0 + group_size;
            const T r = rr[gi];
            T dot = 0;
#pragma omp simd reduction(+ : dot)
            for (int64_t i = i0; i < i1; ++i) {
              sgp[i] = sigmoid(zr[i]);
              gp[i] = xr[i] * zr[i] * sgp[i];
              dot += wp[i] * g[i] * gp[i];
            }
            const T c = r * r * dot / static_cast<T>(group_size);
#pragma omp simd
            for (int64_t i = i0; i < i1; ++i) {
              const T s = sgp[i];
              const T dgate = r * (wp[i] * g[i] - gp[i] * c);
              dxr[i] = dgate * zr[i] * s;
              dzr[i] = dgate * xr[i] * s * (T(1) + zr[i] * (T(1) - s));
              pdw[i] += g[i] * gp[i] * r;
            }
          }
        }
      }
    }
    if (dw.defined()) reduce_blocks_into(partial, nblocks, D, dw.ptr<T>());
  });
}

}  // namespace hlm::cpu
