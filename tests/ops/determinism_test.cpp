// Determinism: every op with a parallel path (conv1d, norms, SSD, attention, cross-entropy) gives
// bitwise the same outputs and gradients with 1 and 2 threads, at sizes large enough to take that
// path; plain BLAS calls (linear) repeat bitwise for a fixed thread count (OpenBLAS itself may sum
// in another order with another thread count).
#include <gtest/gtest.h>
#include <omp.h>

#include <functional>

#include "ops/attention.h"
#include "ops/conv1d.h"
#include "ops/gemm.h"
#include "ops/loss.h"
#include "ops/norm.h"
#include "ops/ssd.h"
#include "test_util.h"

namespace hlm {
namespace {

using test::HostTensor;

// Runs fn with 1 and with 2 threads; fn returns the tensors to compare.
void expect_thread_independent(const std::function<std::vector<HostTensor>()>& fn, const char* what) {
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  std::vector<HostTensor> one = fn();
  omp_set_num_threads(2);
  std::vector<HostTensor> two = fn();
  omp_set_num_threads(threads);
  ASSERT_EQ(one.size(), two.size());
  for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(one[i].storage == two[i].storage) << what << " output " << i;
}

HostTensor packed_docs(int64_t B, int64_t T, int64_t period) {
  HostTensor d(DType::I32, {B, T});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) d.set(b * T + t, static_cast<double>((t + 7 * b) / period));
  return d;
}

TEST(Determinism, Conv1dAndNorms) {
  const DType f = DType::F32;
  const int64_t B = 2, T = 256, C = 64, K = 4;
  HostTensor x = test::randn(f, {B, T, C}, 1), w = test::randn(f, {C, K}, 2), bias = test::randn(f, {C}, 3);
  HostTensor gy = test::randn(f, {B, T, C}, 4), z = test::randn(f, {B, T, C}, 5), nw = test::randn(f, {C}, 6);
  HostTensor doc = packed_docs(B, T, 37);
  expect_thread_independent([&] {
    HostTensor y(f, {B, T, C}), dx(f, {B, T, C}), dw(f, {C, K}), db(f, {C});
    conv1d_silu_forward(x.t, w.t, bias.t, doc.t, y.t);
    conv1d_silu_backward(gy.t, x.t, w.t, bias.t, doc.t, dx.t, dw.t, db.t);
    std::vector<HostTensor> r;
    r.push_back(std::move(y));
    r.push_back(std::move(dx));
    r.push_back(std::move(dw));
    r.push_back(std::move(db));
    return r;
  }, "conv1d");
  expect_thread_independent([&] {
    HostTensor y(f, {B, T, C}), rstd(f, {B * T}), dx(f, {B, T, C}), dw(f, {C});
    HostTensor gy2(f, {B, T, C}), rstd2(f, {B * T, C / 16}), dx2(f, {B, T, C}), dz2(f, {B, T, C}), dw2(f, {C});
    rmsnorm_forward(x.t, nw.t, 1e-5f, y.t, rstd.t);
    rmsnorm_backward(gy.t, x.t, nw.t, rstd.t, dx.t, dw.t);
    gated_rmsnorm_forward(x.t, z.t, nw.t, 16, 1e-5f, gy2.t, rstd2.t);
    gated_rmsnorm_backward(gy.t, x.t, z.t, nw.t, rstd2.t, 16, dx2.t, dz2.t, dw2.t);
    std::vector<HostTensor> r;
    for (HostTensor* h : {&y, &rstd, &dx, &dw, &gy2, &rstd2, &dx2, &dz2, &dw2}) r.push_back(std::move(*h));
    return r;
  }, "norms");
}

TEST(Determinism, SsdAttentionLossLinear) {
  const DType f = DType::F32;
  const int64_t B = 2, T = 100, H = 4, P = 16, G = 2, N = 16;
  HostTensor x = test::randn(f, {B, T, H, P}, 1), dt = test::randn(f, {B, T, H}, 2, 0.5);
  HostTensor A_log = test::randn(f, {H}, 3, 0.3), Bm = test::randn(f, {B, T, G, N}, 4, 0.5);
  HostTensor Cm = test::randn(f, {B, T, G, N}, 5, 0.5), D = test::randn(f, {H}, 6);
  HostTensor h0 = test::randn(f, {B, H, P, N}, 7), gy = test::randn(f, {B, T, H, P}, 8);
  HostTensor doc = packed_docs(B, T, 23);
  SsdParams p;
  p.x = x.t;
  p.dt = dt.t;
  p.A_log = A_log.t;
  p.Bm = Bm.t;
  p.Cm = Cm.t;
  p.D = D.t;
  p.doc = doc.t;
  p.h0 = h0.t;
  p.chunk = 16;
  expect_thread_independent([&] {
    HostTensor y(f, {B, T, H, P}), hf(f, {B, H, P, N}), dx(f, {B, T, H, P}), ddt(f, {B, T, H});
    HostTensor dA(f, {H}), dB(f, {B, T, G, N}), dC(f, {B, T, G, N}), dD(f, {H}), dh0(f, {B, H, P, N});
    ssd_forward(p, y.t, hf.t);
    SsdGrads g;
    g.dx = dx.t;
    g.ddt = ddt.t;
    g.dA_log = dA.t;
    g.dBm = dB.t;
    g.dCm = dC.t;
    g.dD = dD.t;
    g.dh0 = dh0.t;
    ssd_backward(p, gy.t, Tensor(), g);
    std::vector<HostTensor> r;
    for (HostTensor* h : {&y, &hf, &dx, &ddt, &dA, &dB, &dC, &dD, &dh0}) r.push_back(std::move(*h));
    return r;
  }, "ssd");
  const int64_t Hq = 4, Hkv = 2, E = 16;
  HostTensor q = test::randn(f, {B, T, Hq, E}, 9), k = test::randn(f, {B, T, Hkv, E}, 10);
  HostTensor v = test::randn(f, {B, T, Hkv, E}, 11), go = test::randn(f, {B, T, Hq, E}, 12);
  expect_thread_independent([&] {
    HostTensor out(f, {B, T, Hq, E}), lse(f, {B, Hq, T}), dq(f, {B, T, Hq, E}), dk(f, {B, T, Hkv, E}),
        dv(f, {B, T, Hkv, E});
    AttentionParams ap{q.t, k.t, v.t, doc.t, 0.25f};
    attention_forward(ap, out.t, lse.t);
    attention_backward(ap, out.t, lse.t, go.t, dq.t, dk.t, dv.t);
    std::vector<HostTensor> r;
    for (HostTensor* h : {&out, &lse, &dq, &dk, &dv}) r.push_back(std::move(*h));
    return r;
  }, "attention");
  const int64_t M = 64, V = 700, K = 48;
  HostTensor logits = test::randn(f, {M, V}, 13, 2.0), targets(DType::I32, {M});
  for (int64_t m = 0; m < M; ++m) targets.set(m, m % 5 == 0 ? kIgnoreIndex : (m * 37) % V);
  HostTensor lx = test::randn(f, {M, K}, 14), lw = test::randn(f, {V, K}, 15), lb = test::randn(f, {V}, 16);
  expect_thread_independent([&] {
    HostTensor losses(f, {M}), lse(f, {M}), d(f, {M, V});
    cross_entropy_forward(logits.t, targets.t, kIgnoreIndex, losses.t, lse.t);
    cross_entropy_backward(logits.t, targets.t, lse.t, kIgnoreIndex, 0.01f, d.t);
    std::vector<HostTensor> r;
    for (HostTensor* h : {&losses, &lse, &d}) r.push_back(std::move(*h));
    return r;
  }, "cross-entropy");
  auto linear = [&] {
    HostTensor y(f, {M, V}), dx(f, {M, K}), dw(f, {V, K}), db(f, {V});
    linear_forward(lx.t, lw.t, lb.t, y.t);
    linear_backward(logits.t, lx.t, lw.t, dx.t, dw.t, db.t, false);
    std::vector<HostTensor> r;
    for (HostTensor* h : {&y, &dx, &dw, &db}) r.push_back(std::move(*h));
    return r;
  };
  std::vector<HostTensor> a = linear(), b = linear();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(a[i].storage == b[i].storage) << "linear output " << i;
}

}  // namespace
}  // namespace hlm
