// Token embedding: the forward gathers rows, the backward passes float64 finite differences with
// repeated ids and is bitwise identical for any thread count; an id outside the vocabulary is an
// InvalidArgument error.
#include <gtest/gtest.h>
#include <omp.h>

#include "ops/embedding.h"
#include "test_util.h"

namespace hlm {
namespace {

using test::HostTensor;

HostTensor make_ids(std::vector<int32_t> v, std::vector<int64_t> shape) {
  HostTensor ids(DType::I32, std::move(shape));
  for (size_t i = 0; i < v.size(); ++i) ids.set(static_cast<int64_t>(i), v[i]);
  return ids;
}

TEST(EmbeddingGrad, FiniteDifferences) {
  const int64_t V = 7, D = 5;
  HostTensor ids = make_ids({3, 1, 3, 6, 0, 3}, {2, 3});
  HostTensor table = test::randn(DType::F64, {V, D}, 1), gy = test::randn(DType::F64, {2, 3, D}, 2);
  HostTensor out(DType::F64, {2, 3, D}), dtable(DType::F64, {V, D});
  embedding_forward(ids.t, table.t, out.t);
  for (int64_t m = 0; m < 6; ++m)
    for (int64_t d = 0; d < D; ++d)
      EXPECT_EQ(out.get(m * D + d), table.get(static_cast<int64_t>(ids.get(m)) * D + d));
  embedding_backward(ids.t, gy.t, dtable.t);
  auto loss = [&] {
    embedding_forward(ids.t, table.t, out.t);
    return test::dot(out, gy);
  };
  EXPECT_LT(test::fd_direction_error(table, dtable, loss, 3), 1e-6);
}

TEST(Embedding, OutOfRangeIdIsInvalidArgument) {
  HostTensor ids = make_ids({0, 7}, {2});
  HostTensor table(DType::F32, {7, 3}), out(DType::F32, {2, 3});
  try {
    embedding_forward(ids.t, table.t, out.t);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::InvalidArgument);
  }
}

TEST(Embedding, BackwardIsDeterministicAcrossThreadCounts) {
  const int64_t V = 50, D = 200, M = 3000;
  HostTensor ids(DType::I32, {M});
  Rng rng(5);
  for (int64_t m = 0; m < M; ++m) ids.set(m, static_cast<double>(rng.below(V)));
  HostTensor gy = test::randn(DType::F32, {M, D}, 6);
  HostTensor a(DType::F32, {V, D}), b(DType::F32, {V, D});
  embedding_backward(ids.t, gy.t, a.t);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  embedding_backward(ids.t, gy.t, b.t);
  omp_set_num_threads(threads);
  EXPECT_EQ(a.storage, b.storage);
}

}  // namespace
}  // namespace hlm
