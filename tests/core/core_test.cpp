// core/: tensor views collapse to rows correctly, bf16/fp16 round-trips are exact, errors carry
// context, and the counter-based RNG is a pure function of (seed, stream, index).
#include <gtest/gtest.h>

#include <cmath>

#include "core/dtype.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace hlm {
namespace {

TEST(Tensor, SliceOfLastDimIsARowView) {
  std::vector<float> buf(2 * 3 * 10);
  Tensor t(buf.data(), DType::F32, Device::CPU, {2, 3, 10});
  Tensor s = t.slice(2, 4, 5);
  RowView r = as_rows(s, 1, "test");
  EXPECT_EQ(r.rows, 6);
  EXPECT_EQ(r.cols, 5);
  EXPECT_EQ(r.ld, 10);
  EXPECT_EQ(r.row<float>(1), buf.data() + 10 + 4);
  EXPECT_FALSE(s.is_contiguous());
  Tensor v = t.reshape({6, -1});
  EXPECT_EQ(v.size(1), 10);
  EXPECT_EQ(t.select(1, 2).shape_str(), "[2,10]");
}

TEST(Tensor, NonCollapsibleRowsAreRejected) {
  std::vector<float> buf(4 * 6);
  Tensor t(buf.data(), DType::F32, Device::CPU, {4, 6});
  Tensor s = t.reshape({2, 2, 6}).slice(1, 0, 1).slice(2, 0, 3);  // rows 0 and 2: uniform
  EXPECT_NO_THROW(as_rows(s, 1, "ok"));
  Tensor u = t.reshape({2, 2, 6}).slice(2, 0, 3);  // rows 0,1,2,3 with ld 6: uniform too
  EXPECT_EQ(as_rows(u, 1, "ok").rows, 4);
  EXPECT_THROW(as_rows(t.reshape({2, 2, 6}).slice(2, 0, 3), 2, "bad"), Error);
}

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16_bits(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16_bits(f32_from_bits(0x3f808000u)), 0x3f80);  // tie -> even
  EXPECT_EQ(f32_to_bf16_bits(f32_from_bits(0x3f818000u)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(f32_to_bf16_bits(f32_from_bits(0x3f808001u)), 0x3f81);
  EXPECT_TRUE(std::isnan(bf16_bits_to_f32(f32_to_bf16_bits(NAN))));
  for (uint32_t h = 0; h < 0x10000u; h += 7) {
    float f = bf16_bits_to_f32(static_cast<uint16_t>(h));
    if (!std::isnan(f)) {
      EXPECT_EQ(f32_to_bf16_bits(f), h);
    }
  }
}

TEST(DType, F16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    float f = f16_bits_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16_bits(f), h) << h;
  }
  EXPECT_EQ(f32_to_f16_bits(65520.0f), 0x7c00);  // rounds to inf
  EXPECT_EQ(f32_to_f16_bits(1.0f + 1.0f / 2048.0f), 0x3c00);  // tie -> even
}

TEST(Error, ContextIsPrefixed) {
  try {
    with_context("model.safetensors", [] { fail(ErrorKind::Format, "tensor '{}' truncated", "x"); });
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "model.safetensors: tensor 'x' truncated");
    EXPECT_EQ(e.kind(), ErrorKind::Format);
  }
}

TEST(Rng, IsAPureFunctionOfPosition) {
  Rng a(42, 3);
  std::vector<float> seq;
  for (int i = 0; i < 100; ++i) seq.push_back(a.normal());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(seq[static_cast<size_t>(i)], rng_normal(42, 3, static_cast<uint64_t>(i)));
  EXPECT_NE(rng_uniform(42, 3, 0), rng_uniform(42, 4, 0));
  EXPECT_NE(rng_uniform(42, 3, 0), rng_uniform(43, 3, 0));
  // Known-answer test for Philox4x32-10 (Random123 kat_vectors: zero key and counter).
  Philox4 z = philox4x32_10(0, 0, 0);
  EXPECT_EQ(z.v[0], 0x6627e8d5u);
  EXPECT_EQ(z.v[1], 0xe169c58du);
  EXPECT_EQ(z.v[2], 0xbc57ac4cu);
  EXPECT_EQ(z.v[3], 0x9b00dbd8u);
}

TEST(Rng, MomentsAreRight) {
  Rng r(7);
  double s = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    double x = r.normal();
    s += x;
    s2 += x * x;
  }
  EXPECT_NEAR(s / n, 0.0, 0.01);
  EXPECT_NEAR(s2 / n, 1.0, 0.01);
  uint64_t counts[10] = {};
  for (int i = 0; i < n; ++i) counts[r.below(10)]++;
  for (uint64_t c : counts) EXPECT_NEAR(static_cast<double>(c) / n, 0.1, 0.005);
}

TEST(Arena, CarvesAlignedTensorsAndRejectsOverflow) {
  Arena a(Device::CPU, 4096);
  Tensor x = a.alloc(DType::F32, {3});
  Tensor y = a.alloc(DType::F32, {5});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(y.data) % kAlignment, 0u);
  EXPECT_NE(x.data, y.data);
  EXPECT_THROW(a.alloc(DType::F32, {10000}), Error);
}

}  // namespace
}  // namespace hlm

namespace hlm {
namespace {
TEST(Memory, CopyTensorHandlesStridedViews) {
  // A [2,3,2,4] slab copied into positions 1..3 of a [2,5,2,4] cache (the KV-cache write).
  std::vector<float> src(2 * 3 * 2 * 4), cache(2 * 5 * 2 * 4, -1.0f);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i);
  Tensor s(src.data(), DType::F32, Device::CPU, {2, 3, 2, 4});
  Tensor c(cache.data(), DType::F32, Device::CPU, {2, 5, 2, 4});
  copy_tensor(c.slice(1, 1, 3), s);
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 5; ++t)
      for (int j = 0; j < 8; ++j) {
        float want = (t >= 1 && t < 4) ? src[static_cast<size_t>((b * 3 + t - 1) * 8 + j)] : -1.0f;
        ASSERT_EQ(cache[static_cast<size_t>((b * 5 + t) * 8 + j)], want);
      }
  std::vector<float> back = to_host<float>(c.slice(1, 1, 3));
  EXPECT_EQ(back, src);
}
}  // namespace
}  // namespace hlm
