// CUDA embedding gather / deterministic scatter-add match the CPU ops; bad ids are errors.
#include <gtest/gtest.h>

#include "cuda/cuda_test_util.h"
#include "ops/embedding.h"

namespace hlm::test {
namespace {

HostTensor random_ids(int64_t M, int64_t V, uint64_t seed) {
  HostTensor ids(DType::I32, {M});
  Rng rng(seed, 3);
  // Few distinct ids, so rows repeat (the scatter-add collides).
  for (int64_t m = 0; m < M; ++m) ids.set(m, static_cast<double>(rng.below(static_cast<uint64_t>(V))));
  ids.set(0, 0.0);
  ids.set(M - 1, static_cast<double>(V - 1));
  return ids;
}

TEST(EmbeddingCuda, ForwardMatchesCpu) {
  HLM_REQUIRE_GPU();
  const int64_t V = 97, D = 131, B = 3, T = 29;
  HostTensor table = random_normal({V, D}, 1);
  HostTensor ids = random_ids(B * T, V, 2);
  HostTensor ids_bt(DType::I32, {B, T});
  for (int64_t i = 0; i < B * T; ++i) ids_bt.set(i, ids.get(i));
  HostTensor ref(DType::F32, {B, T, D});
  embedding_forward(ids_bt.t, table.t, ref.t);
  DeviceTensor did = upload(ids_bt, DType::I32);
  for (DType dt : {DType::F32, DType::BF16}) {
    HostTensor tb = convert_host(table, DType::F32);
    if (dt == DType::BF16) round_to_bf16(tb);
    HostTensor refd(DType::F32, {B, T, D});
    embedding_forward(ids_bt.t, tb.t, refd.t);
    DeviceTensor dtab = upload(tb, dt), dout(dt, {B, T, D});
    poison(dout.t);
    embedding_forward(did.t, dtab.t, dout.t);
    EXPECT_EQ(rel_error(download(dout.t), refd), 0.0) << dtype_name(dt);
  }
  // D a multiple of 8 (the 16-byte vector path), out as a row view.
  const int64_t D2 = 64;
  HostTensor t2 = random_normal({V, D2}, 3);
  round_to_bf16(t2);
  HostTensor r2(DType::F32, {B * T, D2});
  embedding_forward(ids.t, t2.t, r2.t);
  DeviceTensor dt2 = upload(t2, DType::BF16), dids = upload(ids, DType::I32);
  DeviceTensor o2 = make_row_view(DType::BF16, B * T, D2, D2 + 16);
  poison(o2.t);
  embedding_forward(dids.t, dt2.t, o2.t);
  EXPECT_EQ(rel_error(download(o2.t), r2), 0.0);
}

TEST(EmbeddingCuda, BadIdIsAnError) {
  HLM_REQUIRE_GPU();
  HostTensor table = random_normal({10, 8}, 4);
  HostTensor ids(DType::I32, {5});
  for (int i = 0; i < 5; ++i) ids.set(i, i);
  ids.set(3, 10);
  DeviceTensor dtab = upload(table, DType::F32), did = upload(ids, DType::I32), dout(DType::F32, {5, 8});
  try {
    embedding_forward(did.t, dtab.t, dout.t);
    FAIL() << "no error for id 10 of a 10-row table";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("10"), std::string::npos) << e.what();
  }
  // The flag is reset: a good call afterwards succeeds.
  ids.set(3, 9);
  DeviceTensor did2 = upload(ids, DType::I32);
  EXPECT_NO_THROW(embedding_forward(did2.t, dtab.t, dout.t));
}

TEST(EmbeddingCuda, BackwardMatchesCpuAndIsDeterministic) {
  HLM_REQUIRE_GPU();
  const int64_t V = 50, D = 77, M = 300;
  HostTensor ids = random_ids(M, V, 5);
  HostTensor dout = random_normal({M, D}, 6);
  round_to_bf16(dout);
  HostTensor dtab0 = random_normal({V, D}, 7);
  HostTensor ref = convert_host(dtab0, DType::F32);
  embedding_backward(ids.t, dout.t, ref.t);
  DeviceTensor did = upload(ids, DType::I32);
  for (DType gd : {DType::F32, DType::BF16}) {
    DeviceTensor ddo = upload(dout, gd);
    DeviceTensor a = upload(dtab0, DType::F32), b = upload(dtab0, DType::F32);
    embedding_backward(did.t, ddo.t, a.t);
    embedding_backward(did.t, ddo.t, b.t);
    EXPECT_LT(rel_error(download(a.t), ref), 1e-6) << dtype_name(gd);
    EXPECT_EQ(raw_bytes(a.t), raw_bytes(b.t)) << "two runs differ";
  }
}

}  // namespace
}  // namespace hlm::test
