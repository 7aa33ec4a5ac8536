// CPU whole-tensor glue ops: dtype conversion, fills, scaled adds, scaling and the sum of squares.
#include "ops/elementwise.h"

#include <vector>

#include "ops/cpu/common.h"

namespace hlm::cpu {

using namespace detail;

namespace {

struct f16 {
  uint16_t bits;
};
inline double to_double(float v) { return v; }
inline double to_double(double v) { return v; }
inline double to_double(bf16 v) { return static_cast<float>(v); }
inline double to_double(f16 v) { return f16_bits_to_f32(v.bits); }
template <typename T>
T from_double(double v);
template <>
float from_double<float>(double v) { return static_cast<float>(v); }
template <>
double from_double<double>(double v) { return v; }
template <>
bf16 from_double<bf16>(double v) { return bf16(static_cast<float>(v)); }
template <>
f16 from_double<f16>(double v) { return f16{f32_to_f16_bits(static_cast<float>(v))}; }

// fn(T{}) for any storage float type (F32, F64, BF16, F16).
template <typename Fn>
void with_storage_type(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::F32: fn(float{}); return;
    case DType::F64: fn(double{}); return;
    case DType::BF16: fn(bf16{}); return;
    case DType::F16: fn(f16{}); return;
    default:
      fail(ErrorKind::Internal, "{}: dtype {} is not a float dtype", op, dtype_name(t));
  }
}

// Row views of two tensors with the same element count, matched row for row; contiguous tensors
// of different shapes are matched as one flat row.
struct RowPair {
  RowView a, b;
};
RowPair match_rows(const Tensor& a, const Tensor& b, const char* op) {
  HLM_REQUIRE(a.numel() == b.numel(), ErrorKind::Internal, "{}: {} and {} differ in size", op,
              a.describe(), b.describe());
  if (a.is_contiguous() && b.is_contiguous()) {
    int64_t n = a.numel();
    return {RowView{a.data, 1, n, n, a.dtype, a.device}, RowView{b.data, 1, n, n, b.dtype, b.device}};
  }
  RowView ra = as_rows(a, 1, op), rb = as_rows(b, 1, op);
  HLM_REQUIRE(ra.rows == rb.rows && ra.cols == rb.cols, ErrorKind::Internal,
              "{}: row views of {} and {} do not match", op, a.describe(), b.describe());
  return {ra, rb};
}
RowView rows_of(const Tensor& t, const char* op) {
  if (t.is_contiguous()) {
    int64_t n = t.numel();
    return RowView{t.data, 1, n, n, t.dtype, t.device};
  }
  return as_rows(t, 1, op);
}

}  // namespace

void convert(const Tensor& src, const Tensor& dst) {
  const char* op = "convert";
  require_cpu(src, op, "src");
  require_cpu(dst, op, "dst");
  if (src.numel() == 0 && dst.numel() == 0) return;
  RowPair rp = match_rows(src, dst, op);
  with_storage_type(src.dtype, op, [&](auto stag) {
    using S = decltype(stag);
    with_storage_type(dst.dtype, op, [&](auto dtag) {
      using D = decltype(dtag);
#pragma omp parallel for schedule(static) if (rp.a.rows > 1)
      for (int64_t r = 0; r < rp.a.rows; ++r) {
        const S* s = rp.a.template row<S>(r);
        D* d = rp.b.template row<D>(r);
        for (int64_t i = 0; i < rp.a.cols; ++i) {
          if constexpr (std::is_same_v<S, D>) {
            d[i] = s[i];
          } else if constexpr (std::is_same_v<S, float> && std::is_same_v<D, double>) {
            d[i] = s[i];
          } else if constexpr (std::is_same_v<S, float> && std::is_same_v<D, bf16>) {
            d[i] = bf16(s[i]);
          } else {
            d[i] = from_double<D>(to_double(s[i]));
          }
        }
      }
    });
  });
}

void add_scaled(const Tensor& x, float alpha, const Tensor& y) {
  const char* op = "add_scaled";
  require_cpu(x, op, "x");
  require_cpu(y, op, "y");
  require_dtype(x, y.dtype, op, "x");
  HLM_REQUIRE(same_shape(x, y), ErrorKind::Internal, "{}: x {} and y {} differ in shape", op,
              x.describe(), y.describe());
  if (y.numel() == 0) return;
  RowPair rp = match_rows(x, y, op);
  with_float_type(y.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const T a = static_cast<T>(alpha);
    const int64_t cols = rp.a.cols;
#pragma omp parallel for schedule(static) if (rp.a.rows * cols > 32768)
    for (int64_t r = 0; r < rp.a.rows; ++r) {
      const T* xs = rp.a.template row<T>(r);
      T* ys = rp.b.template row<T>(r);
#pragma omp simd
      for (int64_t i = 0; i < cols; ++i) ys[i] += a * xs[i];
    }
  });
}

void fill(const Tensor& t, double value) {
  const char* op = "fill";
  require_cpu(t, op, "t");
  if (t.numel() == 0) return;
  RowView rv = rows_of(t, op);
  auto run = [&](auto v) {
    using T = decltype(v);
    for (int64_t r = 0; r < rv.rows; ++r) std::fill(rv.row<T>(r), rv.row<T>(r) + rv.cols, v);
  };
  switch (t.dtype) {
    case DType::F32: run(static_cast<float>(value)); break;
    case DType::F64: run(value); break;
    case DType::BF16: run(bf16(static_cast<float>(value)).bits); break;
    case DType::F16: run(f32_to_f16_bits(static_cast<float>(value))); break;
    case DType::I32: run(static_cast<int32_t>(value)); break;
    case DType::I64: run(static_cast<int64_t>(value)); break;
    default: fail(ErrorKind::Internal, "fill: dtype {} not supported", dtype_name(t.dtype));
  }
}

void scale_inplace(const Tensor& t, float s) {
  const char* op = "scale_inplace";
  require_cpu(t, op, "t");
  if (t.numel() == 0) return;
  RowView rv = rows_of(t, op);
  with_float_type(t.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    const T sc = static_cast<T>(s);
    for (int64_t r = 0; r < rv.rows; ++r) {
      T* p = rv.row<T>(r);
#pragma omp parallel for simd schedule(static) if (rv.cols > 32768)
      for (int64_t i = 0; i < rv.cols; ++i) p[i] *= sc;
    }
  });
}

double sum_squares(const Tensor& t) {
  const char* op = "sum_squares";
  require_cpu(t, op, "t");
  if (t.numel() == 0) return 0.0;
  RowView rv = rows_of(t, op);
  // Fixed blocks of 4096 elements summed in double, then the blocks in order: the same bits for
  // any thread count.
  constexpr int64_t kBlock = 4096;
  const int64_t per_row = num_blocks(rv.cols, kBlock);
  const int64_t nblocks = rv.rows * per_row;
  std::vector<double> partial(static_cast<size_t>(nblocks));
  with_storage_type(t.dtype, op, [&](auto tag) {
    using T = decltype(tag);
#pragma omp parallel for schedule(static) if (nblocks > 1)
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      const int64_t r = blk / per_row, c0 = (blk % per_row) * kBlock;
      const int64_t c1 = std::min(rv.cols, c0 + kBlock);
      const T* p = rv.row<T>(r);
      double acc = 0;
      if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
#pragma omp simd reduction(+ : acc)
        for (int64_t i = c0; i < c1; ++i) acc += static_cast<double>(p[i]) * static_cast<double>(p[i]);
      } else {
        for (int64_t i = c0; i < c1; ++i) {
          double v = to_double(p[i]);
          acc += v * v;
        }
      }
      partial[static_cast<size_t>(blk)] = acc;
    }
  });
  double total = 0;
  for (double v : partial) total += v;
  return total;
}

}  // namespace hlm::cpu
