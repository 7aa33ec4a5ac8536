// Attention: causal GQA attention with document masking matches a naive float64 softmax (output
// and lse, several query blocks, non-contiguous doc ids); the backward passes float64 finite
// differences through RoPE (rope_apply forward, inverse for the gradient); a packed row equals its
// documents run separately; decode attention over [start, len) reproduces the full outputs; RoPE
// is the GPT-NeoX rotate-half rotation and its inverse undoes it.
#include <gtest/gtest.h>

#include <cmath>

#include "ops/attention.h"
#include "test_util.h"

namespace hlm {
namespace {

using test::HostTensor;

HostTensor ids_from(int64_t B, int64_t T, const std::vector<std::vector<int32_t>>& rows) {
  HostTensor d(DType::I32, {B, T});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) d.set(b * T + t, rows[static_cast<size_t>(b)][static_cast<size_t>(t)]);
  return d;
}
std::vector<int32_t> from_lengths(const std::vector<int64_t>& lens) {
  std::vector<int32_t> out;
  int32_t id = 0;
  for (int64_t len : lens) {
    for (int64_t k = 0; k < len; ++k) out.push_back(id);
    ++id;
  }
  return out;
}
// Position of each token within its document (what RoPE sees in packed rows).
HostTensor positions(const HostTensor& doc, int64_t B, int64_t T) {
  HostTensor p(DType::I32, {B, T});
  for (int64_t b = 0; b < B; ++b) {
    int64_t start = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (t > 0 && doc.get(b * T + t) != doc.get(b * T + t - 1)) start = t;
      p.set(b * T + t, static_cast<double>(t - start));
    }
  }
  return p;
}

void naive_attention(const HostTensor& q, const HostTensor& k, const HostTensor& v,
                     const HostTensor* doc, double scale, HostTensor& out, HostTensor& lse) {
  const int64_t B = q.t.size(0), T = q.t.size(1), Hq = q.t.size(2), E = q.t.size(3);
  const int64_t Hkv = k.t.size(2), grp = Hq / Hkv;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < T; ++i) {
        std::vector<double> s(static_cast<size_t>(T), -INFINITY);
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          if (doc && doc->get(b * T + j) != doc->get(b * T + i)) continue;
          double d = 0;
          for (int64_t e = 0; e < E; ++e)
            d += q.get(((b * T + i) * Hq + h) * E + e) * k.get(((b * T + j) * Hkv + h / grp) * E + e);
          s[static_cast<size_t>(j)] = scale * d;
          mx = std::max(mx, scale * d);
        }
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += std::exp(s[static_cast<size_t>(j)] - mx);
        lse.set((b * Hq + h) * T + i, mx + std::log(sum));
        for (int64_t e = 0; e < E; ++e) {
          double o = 0;
          for (int64_t j = 0; j <= i; ++j)
            o += std::exp(s[static_cast<size_t>(j)] - mx) / sum * v.get(((b * T + j) * Hkv + h / grp) * E + e);
          out.set(((b * T + i) * Hq + h) * E + e, o);
        }
      }
}

TEST(Attention, MatchesNaiveSoftmax) {
  for (DType dtype : {DType::F64, DType::F32}) {
    const int64_t B = 2, T = 150, Hq = 4, Hkv = 2, E = 8;  // 3 query blocks of 64
    HostTensor q = test::randn(dtype, {B, T, Hq, E}, 1), k = test::randn(dtype, {B, T, Hkv, E}, 2);
    HostTensor v = test::randn(dtype, {B, T, Hkv, E}, 3);
    // row 0: contiguous documents, one boundary at a query-block edge (64);
    // row 1: non-contiguous ids (document 0 resumes): equality decides, as the header says
    std::vector<int32_t> r1;
    for (int64_t t = 0; t < T; ++t) r1.push_back(t < 50 ? 0 : (t < 100 ? 1 : 0));
    HostTensor doc = ids_from(B, T, {from_lengths({64, 1, 40, 45}), r1});
    AttentionParams p{q.t, k.t, v.t, doc.t, 0.3f};
    HostTensor out(dtype, {B, T, Hq, E}), lse(dtype, {B, Hq, T});
    attention_forward(p, out.t, lse.t);
    HostTensor ro(DType::F64, {B, T, Hq, E}), rl(DType::F64, {B, Hq, T});
    naive_attention(q, k, v, &doc, static_cast<double>(0.3f), ro, rl);
    const double tol = dtype == DType::F64 ? 1e-12 : 2e-6;
    EXPECT_LE(test::max_rel_error(out, ro), tol);
    EXPECT_LE(test::max_rel_error(lse, rl), tol);
  }
}

TEST(AttentionGrad, FiniteDifferencesThroughRope) {
  const DType f = DType::F64;
  const int64_t B = 2, T = 7, Hq = 4, Hkv = 2, E = 6, rot = 4;
  const float theta = 10000.0f, scale = 0.4f;
  HostTensor q0 = test::randn(f, {B, T, Hq, E}, 4), k0 = test::randn(f, {B, T, Hkv, E}, 5);
  HostTensor v = test::randn(f, {B, T, Hkv, E}, 6), gy = test::randn(f, {B, T, Hq, E}, 7);
  HostTensor doc = ids_from(B, T, {from_lengths({3, 1, 3}), from_lengths({7})});
  HostTensor pos = positions(doc, B, T);
  HostTensor q(f, {B, T, Hq, E}), k(f, {B, T, Hkv, E}), out(f, {B, T, Hq, E}), lse(f, {B, Hq, T});
  auto forward = [&] {
    q.storage = q0.storage;
    k.storage = k0.storage;
    rope_apply(q.t, pos.t, theta, rot, false);
    rope_apply(k.t, pos.t, theta, rot, false);
    attention_forward(AttentionParams{q.t, k.t, v.t, doc.t, scale}, out.t, lse.t);
  };
  forward();
  HostTensor dq(f, {B, T, Hq, E}), dk(f, {B, T, Hkv, E}), dv(f, {B, T, Hkv, E});
  attention_backward(AttentionParams{q.t, k.t, v.t, doc.t, scale}, out.t, lse.t, gy.t, dq.t, dk.t, dv.t);
  rope_apply(dq.t, pos.t, theta, rot, true);  // the rotation is orthogonal: its adjoint is the inverse
  rope_apply(dk.t, pos.t, theta, rot, true);
  auto loss = [&] {
    forward();
    return test::dot(out, gy);
  };
  EXPECT_LT(test::fd_direction_error(q0, dq, loss, 1), 1e-6);
  EXPECT_LT(test::fd_direction_error(k0, dk, loss, 2), 1e-6);
  EXPECT_LT(test::fd_direction_error(v, dv, loss, 3), 1e-6);
}

TEST(Attention, PackedRowEqualsDocumentsRunSeparately) {
  const int64_t T = 80, Hq = 2, Hkv = 1, E = 4;
  const std::vector<int64_t> lens = {30, 1, 49};
  HostTensor q = test::randn(DType::F32, {1, T, Hq, E}, 8), k = test::randn(DType::F32, {1, T, Hkv, E}, 9);
  HostTensor v = test::randn(DType::F32, {1, T, Hkv, E}, 10);
  HostTensor doc = ids_from(1, T, {from_lengths(lens)});
  HostTensor out(DType::F32, {1, T, Hq, E}), lse(DType::F32, {1, Hq, T});
  attention_forward(AttentionParams{q.t, k.t, v.t, doc.t, 0.5f}, out.t, lse.t);
  int64_t t0 = 0;
  for (int64_t len : lens) {
    HostTensor o1(DType::F32, {1, len, Hq, E}), l1(DType::F32, {1, Hq, len});
    attention_forward(AttentionParams{q.t.slice(1, t0, len), k.t.slice(1, t0, len),
                                      v.t.slice(1, t0, len), Tensor(), 0.5f},
                      o1.t, l1.t);
    for (int64_t i = 0; i < len * Hq * E; ++i)
      EXPECT_NEAR(o1.get(i), out.get(t0 * Hq * E + i), 1e-6) << t0;
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t i = 0; i < len; ++i) EXPECT_NEAR(l1.get(h * len + i), lse.get(h * T + t0 + i), 1e-5);
    t0 += len;
  }
}

TEST(Attention, DecodeOverTheCacheReproducesFullOutputs) {
  for (DType dtype : {DType::F64, DType::F32}) {
    const int64_t B = 2, T = 13, Hq = 4, Hkv = 2, E = 5;
    HostTensor q = test::randn(dtype, {B, T, Hq, E}, 11), k = test::randn(dtype, {B, T, Hkv, E}, 12);
    HostTensor v = test::randn(dtype, {B, T, Hkv, E}, 13);
    HostTensor doc = ids_from(B, T, {from_lengths({5, 8}), from_lengths({13})});
    HostTensor out(dtype, {B, T, Hq, E}), lse(dtype, {B, Hq, T});
    attention_forward(AttentionParams{q.t, k.t, v.t, doc.t, 0.7f}, out.t, lse.t);
    HostTensor start(DType::I32, {B}), len(DType::I32, {B}), o(dtype, {B, Hq, E});
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t b = 0; b < B; ++b) {
        int64_t s = t;
        while (s > 0 && doc.get(b * T + s - 1) == doc.get(b * T + t)) --s;
        start.set(b, static_cast<double>(s));
        len.set(b, static_cast<double>(t + 1));
      }
      attention_decode(q.t.select(1, t), k.t, v.t, start.t, len.t, 0.7f, o.t);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < Hq * E; ++i)
          EXPECT_NEAR(o.get(b * Hq * E + i), out.get((b * T + t) * Hq * E + i),
                      dtype == DType::F64 ? 1e-12 : 2e-6);
    }
    start.set(0, 3);
    len.set(0, static_cast<double>(T + 1));
    EXPECT_THROW(attention_decode(q.t.select(1, 0), k.t, v.t, start.t, len.t, 0.7f, o.t), Error);
  }
}

TEST(Rope, RotatesHalvesAndInverseUndoes) {
  const int64_t B = 1, T = 3, H = 2, E = 8, rot = 6;
  const float theta = 500.0f;
  HostTensor x = test::randn(DType::F64, {B, T, H, E}, 14), pos(DType::I32, {B, T});
  for (int64_t t = 0; t < T; ++t) pos.set(t, static_cast<double>(7 * t + 1));
  HostTensor y = test::copy_of(x);
  rope_apply(y.t, pos.t, theta, rot, false);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t o = (t * H + h) * E;
      for (int64_t i = 0; i < rot / 2; ++i) {
        const double ang = (7 * t + 1) * std::pow(500.0, -2.0 * i / rot);
        const double x1 = x.get(o + i), x2 = x.get(o + i + rot / 2);
        EXPECT_NEAR(y.get(o + i), x1 * std::cos(ang) - x2 * std::sin(ang), 1e-12);
        EXPECT_NEAR(y.get(o + i + rot / 2), x2 * std::cos(ang) + x1 * std::sin(ang), 1e-12);
      }
      for (int64_t i = rot; i < E; ++i) EXPECT_EQ(y.get(o + i), x.get(o + i));
    }
  rope_apply(y.t, pos.t, theta, rot, true);
  EXPECT_LT(test::max_rel_error(y, x), 1e-14);
  EXPECT_THROW(rope_apply(y.t, pos.t, theta, 5, false), Error);
}

}  // namespace
}  // namespace hlm
