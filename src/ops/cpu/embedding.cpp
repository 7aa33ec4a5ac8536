// CPU token embedding: row gather forward, deterministic scatter-add backward.
#include "ops/embedding.h"

#include "ops/cpu/common.h"

namespace hlm::cpu {

using namespace detail;

namespace {
// ids as a flat contiguous I32 array of M entries, every one checked to lie in [0, V).
const int32_t* checked_ids(const Tensor& ids, int64_t M, int64_t V, const char* op) {
  require_cpu(ids, op, "ids");
  require_dtype(ids, DType::I32, op, "ids");
  HLM_REQUIRE(ids.is_contiguous() && ids.numel() == M, ErrorKind::Internal,
              "{}: ids {} must be contiguous with {} entries", op, ids.describe(), M);
  const int32_t* p = ids.ptr<int32_t>();
  for (int64_t m = 0; m < M; ++m)
    HLM_CHECK_ARG(p[m] >= 0 && p[m] < V, "{}: token id {} at position {} is outside [0, {})", op,
                  p[m], m, V);
  return p;
}
}  // namespace

void embedding_forward(const Tensor& ids, const Tensor& table, const Tensor& out) {
  const char* op = "embedding_forward";
  require_cpu(table, op, "table");
  require_cpu(out, op, "out");
  HLM_REQUIRE(table.ndim == 2, ErrorKind::Internal, "{}: table {} must be [V,D]", op,
              table.describe());
  require_dtype(out, table.dtype, op, "out");
  RowView TB = as_rows(table, 1, "embedding table"), O = as_rows(out, 1, "embedding out");
  const int64_t V = TB.rows, D = TB.cols, M = O.rows;
  HLM_REQUIRE(O.cols == D, ErrorKind::Internal, "{}: out {} must have width {}", op,
              out.describe(), D);
  const int32_t* id = checked_ids(ids, M, V, op);
  with_float_type(table.dtype, op, [&](auto tag) {
    using T = decltype(tag);
#pragma omp parallel for schedule(static) if (M * D > 32768)
    for (int64_t m = 0; m < M; ++m) {
      const T* src = TB.row<T>(id[m]);
      std::copy(src, src + D, O.row<T>(m));
    }
  });
}

void embedding_backward(const Tensor& ids, const Tensor& dout, const Tensor& dtable) {
  const char* op = "embedding_backward";
  require_cpu(dout, op, "dout");
  require_cpu(dtable, op, "dtable");
  HLM_REQUIRE(dtable.ndim == 2, ErrorKind::Internal, "{}: dtable {} must be [V,D]", op,
              dtable.describe());
  require_dtype(dout, dtable.dtype, op, "dout");
  RowView TB = as_rows(dtable, 1, "embedding dtable"), G = as_rows(dout, 1, "embedding dout");
  const int64_t V = TB.rows, D = TB.cols, M = G.rows;
  HLM_REQUIRE(G.cols == D, ErrorKind::Internal, "{}: dout {} must have width {}", op,
              dout.describe(), D);
  const int32_t* id = checked_ids(ids, M, V, op);
  with_float_type(dtable.dtype, op, [&](auto tag) {
    using T = decltype(tag);
    // Each task owns a slice of columns and adds the rows in token order: no races, and the
    // same sums in the same order for any thread count.
    constexpr int64_t kCols = 64;
#pragma omp parallel for schedule(static) if (M * D > 32768)
    for (int64_t c0 = 0; c0 < D; c0 += kCols) {
      const int64_t c1 = std::min(D, c0 + kCols);
      for (int64_t m = 0; m < M; ++m) {
        const T* g = G.row<T>(m);
        T* dst = TB.row<T>(id[m]);
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) dst[c] += g[c];
      }
    }
  });
}

}  // namespace hlm::cpu
