// CUDA chunked cross-entropy (forward losses / lse, backward softmax − onehot, in place too)
// matches the CPU op; ignored rows are zero; bad targets are errors.
#include <gtest/gtest.h>

#include "cuda/cuda_test_util.h"
#include "ops/loss.h"

namespace hlm::test {
namespace {

HostTensor targets_for(int64_t M, int64_t V, uint64_t seed) {
  HostTensor t(DType::I32, {M});
  Rng rng(seed, 5);
  for (int64_t m = 0; m < M; ++m) t.set(m, static_cast<double>(rng.below(static_cast<uint64_t>(V))));
  t.set(1, kIgnoreIndex);
  t.set(M - 1, static_cast<double>(V - 1));
  return t;
}

TEST(CrossEntropyCuda, MatchesCpu) {
  HLM_REQUIRE_GPU();
  // V odd (scalar tail path) and V = 50304 (16-byte vector path); logits with a wide range.
  for (auto [M, V] : {std::pair<int64_t, int64_t>{37, 1001}, {6, 50304}, {5, 8}}) {
    for (DType dt : {DType::F32, DType::BF16}) {
      HostTensor logits = random_normal({M, V}, 1 + static_cast<uint64_t>(V), 4.0);
      if (dt == DType::BF16) round_to_bf16(logits);
      HostTensor tg = targets_for(M, V, 2);
      HostTensor losses(DType::F32, {M}), lse(DType::F32, {M}), dl(DType::F32, {M, V});
      cross_entropy_forward(logits.t, tg.t, kIgnoreIndex, losses.t, lse.t);
      cross_entropy_backward(logits.t, tg.t, lse.t, kIgnoreIndex, 0.125f, dl.t);

      DeviceTensor glog = upload(logits, dt), gtg = upload(tg, DType::I32);
      DeviceTensor gl(DType::F32, {M}), gs(DType::F32, {M}), gd(dt, {M, V});
      poison(gl.t);
      poison(gs.t);
      poison(gd.t);
      cross_entropy_forward(glog.t, gtg.t, kIgnoreIndex, gl.t, gs.t);
      EXPECT_LT(rel_error(download(gl.t), losses), 1e-5) << "V=" << V << " " << dtype_name(dt);
      EXPECT_LT(rel_error(download(gs.t), lse), 1e-5) << "V=" << V << " " << dtype_name(dt);
      cross_entropy_backward(glog.t, gtg.t, gs.t, kIgnoreIndex, 0.125f, gd.t);
      const double tol = dt == DType::F32 ? 1e-5 : 1e-2;
      HostTensor got = download(gd.t);
      EXPECT_LT(rel_error(got, dl), tol) << "V=" << V << " " << dtype_name(dt);
      for (int64_t v = 0; v < V; ++v) ASSERT_EQ(got.get(1 * V + v), 0.0) << "ignored row not zero";
      // In place, as the trainer calls it: dlogits is the logits buffer.
      cross_entropy_backward(glog.t, gtg.t, gs.t, kIgnoreIndex, 0.125f, glog.t);
      EXPECT_EQ(raw_bytes(glog.t), raw_bytes(gd.t)) << "in-place result differs";
    }
  }
}

TEST(CrossEntropyCuda, RowViewLogits) {
  HLM_REQUIRE_GPU();
  const int64_t M = 9, V = 333;
  HostTensor logits = random_normal({M, V}, 7, 3.0);
  round_to_bf16(logits);
  HostTensor tg = targets_for(M, V, 8);
  HostTensor losses(DType::F32, {M}), lse(DType::F32, {M});
  cross_entropy_forward(logits.t, tg.t, kIgnoreIndex, losses.t, lse.t);
  DeviceTensor glog = make_row_view(DType::BF16, M, V, V + 3);
  upload_into(glog.t, logits);
  DeviceTensor gtg = upload(tg, DType::I32), gl(DType::F32, {M}), gs(DType::F32, {M});
  cross_entropy_forward(glog.t, gtg.t, kIgnoreIndex, gl.t, gs.t);
  EXPECT_LT(rel_error(download(gl.t), losses), 1e-5);
}

TEST(CrossEntropyCuda, BadTargetIsAnError) {
  HLM_REQUIRE_GPU();
  HostTensor logits = random_normal({3, 10}, 9);
  HostTensor tg(DType::I32, {3});
  tg.set(0, 1);
  tg.set(1, 10);
  tg.set(2, kIgnoreIndex);
  DeviceTensor glog = upload(logits, DType::F32), gtg = upload(tg, DType::I32);
  DeviceTensor gl(DType::F32, {3}), gs(DType::F32, {3});
  try {
    cross_entropy_forward(glog.t, gtg.t, kIgnoreIndex, gl.t, gs.t);
    FAIL() << "no error for target 10 of a vocabulary of 10";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::InvalidArgument) << e.what();
  }
}

}  // namespace
}  // namespace hlm::test
