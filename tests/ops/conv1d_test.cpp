// Causal depthwise conv1d + SiLU: matches its formula, passes float64 finite differences with
// packed documents, a packed row equals its documents run separately, and the decode update
// (from zero or from conv1d_state_from_sequence after a prefill) reproduces the full outputs.
#include <gtest/gtest.h>

#include "ops/conv1d.h"
#include "test_util.h"

namespace hlm {
namespace {

using test::HostTensor;

HostTensor doc_ids(int64_t B, int64_t T, const std::vector<std::vector<int64_t>>& lens) {
  HostTensor d(DType::I32, {B, T});
  for (int64_t b = 0; b < B; ++b) {
    int64_t t = 0, id = 0;
    for (int64_t len : lens[static_cast<size_t>(b)]) {
      for (int64_t k = 0; k < len; ++k) d.set(b * T + t++, static_cast<double>(id));
      ++id;
    }
  }
  return d;
}

double silu(double u) { return u / (1 + std::exp(-u)); }

TEST(Conv1d, MatchesFormulaWithDocuments) {
  const int64_t B = 2, T = 9, C = 5, K = 4;
  HostTensor x = test::randn(DType::F64, {B, T, C}, 1), w = test::randn(DType::F64, {C, K}, 2);
  HostTensor bias = test::randn(DType::F64, {C}, 3), y(DType::F64, {B, T, C});
  HostTensor doc = doc_ids(B, T, {{3, 1, 5}, {9}});
  conv1d_silu_forward(x.t, w.t, bias.t, doc.t, y.t);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c) {
        double u = bias.get(c);
        for (int64_t k = 0; k < K; ++k) {
          const int64_t s = t - (K - 1) + k;
          bool ok = s >= 0;
          for (int64_t q = s + 1; ok && q <= t; ++q) ok = doc.get(b * T + q) == doc.get(b * T + q - 1);
          if (ok) u += w.get(c * K + k) * x.get((b * T + s) * C + c);
        }
        EXPECT_NEAR(y.get((b * T + t) * C + c), silu(u), 1e-12);
      }
}

TEST(Conv1dGrad, FiniteDifferencesWithDocuments) {
  const DType f = DType::F64;
  const int64_t B = 2, T = 10, C = 3, K = 4, W = 7;
  HostTensor xw = test::randn(f, {B, T, W}, 4);
  Tensor x = xw.t.slice(2, 2, C);  // a column slice of a wider activation
  HostTensor w = test::randn(f, {C, K}, 5), bias = test::randn(f, {C}, 6);
  HostTensor gy = test::randn(f, {B, T, C}, 7), doc = doc_ids(B, T, {{2, 1, 4, 3}, {6, 4}});
  HostTensor y(f, {B, T, C}), dxw(f, {B, T, W}), dw(f, {C, K}), db(f, {C});
  Tensor dx = dxw.t.slice(2, 1, C);
  conv1d_silu_forward(x, w.t, bias.t, doc.t, y.t);
  conv1d_silu_backward(gy.t, x, w.t, bias.t, doc.t, dx, dw.t, db.t);
  HostTensor xc(f, {B, T, C}), dxc(f, {B, T, C});
  for (int64_t r = 0; r < B * T; ++r)
    for (int64_t c = 0; c < C; ++c) {
      xc.set(r * C + c, xw.get(r * W + 2 + c));
      dxc.set(r * C + c, dxw.get(r * W + 1 + c));
    }
  auto loss = [&] {
    conv1d_silu_forward(xc.t, w.t, bias.t, doc.t, y.t);
    return test::dot(y, gy);
  };
  EXPECT_LT(test::fd_direction_error(xc, dxc, loss, 1), 1e-6);
  EXPECT_LT(test::fd_direction_error(w, dw, loss, 2), 1e-6);
  EXPECT_LT(test::fd_direction_error(bias, db, loss, 3), 1e-6);
}

TEST(Conv1d, PackedRowEqualsDocumentsRunSeparately) {
  const int64_t T = 12, C = 4, K = 4;
  const std::vector<int64_t> lens = {5, 1, 6};
  HostTensor x = test::randn(DType::F32, {1, T, C}, 8), w = test::randn(DType::F32, {C, K}, 9);
  HostTensor bias = test::randn(DType::F32, {C}, 10), y(DType::F32, {1, T, C});
  HostTensor doc = doc_ids(1, T, {lens});
  conv1d_silu_forward(x.t, w.t, bias.t, doc.t, y.t);
  int64_t t0 = 0;
  for (int64_t len : lens) {
    Tensor xs = x.t.slice(1, t0, len);
    HostTensor ys(DType::F32, {1, len, C});
    conv1d_silu_forward(xs, w.t, bias.t, Tensor(), ys.t);
    for (int64_t i = 0; i < len * C; ++i) EXPECT_EQ(ys.get(i), y.get(t0 * C + i)) << t0;
    t0 += len;
  }
}

TEST(Conv1d, DecodeUpdateReproducesFullOutputs) {
  for (DType dtype : {DType::F32, DType::F64}) {
    const int64_t B = 2, T = 11, C = 6, K = 4, T0 = 6;  // prefill T0 tokens, decode the rest
    HostTensor x = test::randn(dtype, {B, T, C}, 11), w = test::randn(dtype, {C, K}, 12);
    HostTensor bias = test::randn(dtype, {C}, 13), y(dtype, {B, T, C});
    // row 0: the last prefill document starts at 4 and continues into decode;
    // row 1: a document starting at T0 - 1 (fewer than K-1 inputs of it in the prefill)
    HostTensor doc = doc_ids(B, T, {{4, T - 4}, {T0 - 1, T - T0 + 1}});
    conv1d_silu_forward(x.t, w.t, bias.t, doc.t, y.t);
    HostTensor state(dtype, {B, C, K - 1});
    conv1d_state_from_sequence(x.t.slice(1, 0, T0), doc.t.slice(1, 0, T0), state.t);
    HostTensor yt(dtype, {B, C});
    for (int64_t t = T0; t < T; ++t) {
      conv1d_silu_update(x.t.select(1, t), w.t, bias.t, state.t, yt.t);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < C; ++c)
          EXPECT_NEAR(yt.get(b * C + c), y.get((b * T + t) * C + c), dtype == DType::F64 ? 1e-13 : 1e-6);
    }
    // decoding a whole row from a zero state equals the forward without documents
    HostTensor y1(dtype, {B, T, C});
    conv1d_silu_forward(x.t, w.t, bias.t, Tensor(), y1.t);
    HostTensor zero(dtype, {B, C, K - 1});
    for (int64_t t = 0; t < T; ++t) {
      conv1d_silu_update(x.t.select(1, t), w.t, bias.t, zero.t, yt.t);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < C; ++c)
          EXPECT_NEAR(yt.get(b * C + c), y1.get((b * T + t) * C + c), dtype == DType::F64 ? 1e-13 : 1e-6);
    }
  }
}

}  // namespace
}  // namespace hlm
