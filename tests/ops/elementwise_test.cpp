// Elementwise glue ops: conversions round like the dtype helpers, scaled adds / fills / scaling
// respect row views, and sum_squares is exact to double rounding and independent of the thread
// count.
#include <gtest/gtest.h>
#include <omp.h>

#include "ops/elementwise.h"
#include "test_util.h"

namespace hlm {
namespace {

using test::HostTensor;

TEST(Elementwise, ConvertRoundsLikeTheDtypeHelpers) {
  HostTensor a = test::randn(DType::F32, {4, 5}, 1, 3.0);
  HostTensor bf(DType::BF16, {4, 5}), h(DType::F16, {4, 5}), d(DType::F64, {20}), back(DType::F32, {4, 5});
  convert(a.t, bf.t);
  convert(a.t, h.t);
  convert(a.t, d.t);  // same numel, other shape
  for (int64_t i = 0; i < 20; ++i) {
    const float v = static_cast<float>(a.get(i));
    EXPECT_EQ(bf.t.ptr<uint16_t>()[i], f32_to_bf16_bits(v));
    EXPECT_EQ(h.t.ptr<uint16_t>()[i], f32_to_f16_bits(v));
    EXPECT_EQ(d.get(i), static_cast<double>(v));
  }
  convert(bf.t, back.t);
  for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(back.get(i), bf16_bits_to_f32(bf.t.ptr<uint16_t>()[i]));
  HostTensor wrong(DType::F32, {3, 5});
  EXPECT_THROW(convert(a.t, wrong.t), Error);
}

TEST(Elementwise, AddScaledFillAndScaleOnRowViews) {
  for (DType dtype : {DType::F32, DType::F64}) {
    HostTensor x = test::randn(dtype, {3, 8}, 2), y = test::randn(dtype, {3, 8}, 3);
    HostTensor y0 = test::copy_of(y);
    Tensor xs = x.t.slice(1, 2, 4), ys = y.t.slice(1, 1, 4);
    add_scaled(xs, 0.5f, ys);
    scale_inplace(ys, 2.0f);
    for (int64_t r = 0; r < 3; ++r)
      for (int64_t c = 0; c < 8; ++c) {
        double want = y0.get(r * 8 + c);
        if (c >= 1 && c < 5) want = 2.0 * (want + 0.5 * x.get(r * 8 + c + 1));
        EXPECT_NEAR(y.get(r * 8 + c), want, 1e-6);
      }
    fill(ys, -1.5);
    for (int64_t r = 0; r < 3; ++r) {
      EXPECT_EQ(y.get(r * 8 + 1), -1.5);
      EXPECT_NE(y.get(r * 8 + 0), -1.5);
    }
  }
}

TEST(Elementwise, SumSquaresIsExactAndThreadIndependent) {
  HostTensor x = test::randn(DType::F32, {300, 333}, 4);
  double want = 0;
  for (int64_t i = 0; i < x.t.numel(); ++i) want += x.get(i) * x.get(i);
  const double got = sum_squares(x.t);
  EXPECT_NEAR(got, want, 1e-10 * want);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = sum_squares(x.t);
  omp_set_num_threads(threads);
  EXPECT_EQ(one, got);
  HostTensor bf(DType::BF16, {3, 3});
  fill(bf.t, 2.0);
  EXPECT_EQ(sum_squares(bf.t), 36.0);
}

}  // namespace
}  // namespace hlm
