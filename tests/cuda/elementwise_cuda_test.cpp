// CUDA glue ops (convert, add_scaled, fill, scale_inplace, sum_squares) match the CPU ops,
// including row views; sum_squares is bitwise reproducible.
#include <gtest/gtest.h>

#include <cstring>

#include "cuda/cuda_test_util.h"
#include "ops/elementwise.h"

namespace hlm::test {
namespace {

TEST(ConvertCuda, AllFloatPairsMatchCpuBitwise) {
  HLM_REQUIRE_GPU();
  HostTensor src = random_normal({7, 131}, 1, 3.0);
  for (DType from : {DType::F32, DType::BF16, DType::F16, DType::F64}) {
    for (DType to : {DType::F32, DType::BF16, DType::F16, DType::F64}) {
      HostTensor hs = convert_host(src, from);
      HostTensor ref(to, {7, 131});
      convert(hs.t, ref.t);
      DeviceTensor ds = upload(hs, from), dd(to, {7, 131});
      poison(dd.t);
      convert(ds.t, dd.t);
      HostTensor got = download(dd.t);
      ASSERT_EQ(got.t.nbytes(), ref.t.nbytes());
      EXPECT_EQ(0, std::memcmp(got.t.data, ref.t.data, ref.t.nbytes()))
          << dtype_name(from) << " -> " << dtype_name(to);
    }
  }
}

TEST(ConvertCuda, RowViews) {
  HLM_REQUIRE_GPU();
  HostTensor src = random_normal({9, 33}, 2);
  DeviceTensor ds = make_row_view(DType::F32, 9, 33, 40);
  upload_into(ds.t, src);
  DeviceTensor dd = make_row_view(DType::BF16, 9, 33, 48);
  poison(dd.t);
  convert(ds.t, dd.t);
  HostTensor ref(DType::BF16, {9, 33});
  convert(src.t, ref.t);
  EXPECT_EQ(rel_error(download(dd.t), ref), 0.0);
}

TEST(AddScaledCuda, MatchesCpu) {
  HLM_REQUIRE_GPU();
  HostTensor x = random_normal({13, 77}, 3), y = random_normal({13, 77}, 4);
  HostTensor ref = convert_host(y, DType::F32);
  add_scaled(x.t, -0.75f, ref.t);
  DeviceTensor dx = upload(x, DType::F32);
  DeviceTensor dy = make_row_view(DType::F32, 13, 77, 80);
  upload_into(dy.t, y);
  add_scaled(dx.t, -0.75f, dy.t);
  EXPECT_LT(rel_error(download(dy.t), ref), 1e-6);
  // BF16 storage: fp32 math, one rounding.
  HostTensor xb = convert_host(x, DType::F32), yb = convert_host(y, DType::F32);
  round_to_bf16(xb);
  round_to_bf16(yb);
  HostTensor refb = convert_host(yb, DType::F32);
  add_scaled(xb.t, 2.0f, refb.t);
  DeviceTensor bx = upload(xb, DType::BF16), by = upload(yb, DType::BF16);
  add_scaled(bx.t, 2.0f, by.t);
  EXPECT_LT(rel_error(download(by.t), refb), 1e-2);
}

TEST(FillScaleCuda, MatchCpu) {
  HLM_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::I32}) {
    DeviceTensor d = make_row_view(dt, 5, 37, 41);
    poison(d.t);
    fill(d.t, 3.25);
    HostTensor got = download(d.t);
    for (int64_t i = 0; i < got.t.numel(); ++i)
      ASSERT_EQ(got.get(i), dt == DType::I32 ? 3.0 : 3.25) << dtype_name(dt) << " element " << i;
  }
  HostTensor x = random_normal({1000}, 5);
  HostTensor ref = convert_host(x, DType::F32);
  scale_inplace(ref.t, 0.3f);
  DeviceTensor dx = upload(x, DType::F32);
  scale_inplace(dx.t, 0.3f);
  EXPECT_EQ(rel_error(download(dx.t), ref), 0.0);
}

TEST(SumSquaresCuda, MatchesCpuAndIsDeterministic) {
  HLM_REQUIRE_GPU();
  for (int64_t n : {1, 1000, 1 << 20, 3 * (1 << 20) + 17}) {
    HostTensor x = random_normal({n}, 6 + static_cast<uint64_t>(n));
    const double ref = sum_squares(x.t);
    DeviceTensor dx = upload(x, DType::F32);
    const double got = sum_squares(dx.t);
    EXPECT_NEAR(got, ref, 1e-10 * ref) << "n=" << n;
    EXPECT_EQ(got, sum_squares(dx.t)) << "two runs differ, n=" << n;
    HostTensor xb = convert_host(x, DType::F32);
    round_to_bf16(xb);
    DeviceTensor db = upload(xb, DType::BF16);
    EXPECT_NEAR(sum_squares(db.t), sum_squares(xb.t), 1e-10 * ref) << "bf16 n=" << n;
  }
  DeviceTensor v = make_row_view(DType::F32, 7, 19, 23);
  HostTensor x = random_normal({7, 19}, 9);
  upload_into(v.t, x);
  EXPECT_NEAR(sum_squares(v.t), sum_squares(x.t), 1e-10 * sum_squares(x.t));
}

}  // namespace
}  // namespace hlm::test
