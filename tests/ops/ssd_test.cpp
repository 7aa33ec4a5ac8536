// SSD scan: the chunked algorithm equals the sequential recurrence (outputs, final state and every
// gradient) on many shapes; both pass float64 finite-difference checks; packed documents equal
// separate runs; the decode step reproduces the full scan; row views of a wider activation work.
#include <gtest/gtest.h>

#include <limits>

#include "ops/ssd.h"
#include "test_util.h"

namespace hlm {
namespace {

using test::HostTensor;

struct SsdShape {
  int64_t B, T, H, P, G, N, Q;
};

struct SsdOptions {
  std::vector<std::vector<int64_t>> docs;  // per row: document lengths (empty: no doc tensor)
  bool h0 = false;
  bool D = true;
  bool dt_bias = true;
  float dt_min = 0.0f;
  float dt_max = std::numeric_limits<float>::infinity();
};

struct SsdData {
  SsdShape s;
  SsdOptions o;
  HostTensor x, dt, A_log, Bm, Cm, D, dt_bias, doc, h0;

  SsdParams params() const {
    SsdParams p;
    p.x = x.t;
    p.dt = dt.t;
    p.A_log = A_log.t;
    p.Bm = Bm.t;
    p.Cm = Cm.t;
    if (o.D) p.D = D.t;
    if (o.dt_bias) p.dt_bias = dt_bias.t;
    if (!o.docs.empty()) p.doc = doc.t;
    if (o.h0) p.h0 = h0.t;
    p.dt_min = o.dt_min;
    p.dt_max = o.dt_max;
    p.chunk = s.Q;
    return p;
  }
};

SsdData make_ssd(DType dtype, SsdShape s, SsdOptions o, uint64_t seed) {
  SsdData d{s, o, {}, {}, {}, {}, {}, {}, {}, {}, {}};
  d.x = test::randn(dtype, {s.B, s.T, s.H, s.P}, seed + 1);
  // raw dt around softplus⁻¹(0.1) with dt_bias; spread wide enough that a clamp bites
  d.dt = test::randn(dtype, {s.B, s.T, s.H}, seed + 2, 0.8);
  d.A_log = HostTensor(dtype, {s.H});
  test::fill_uniform(d.A_log, seed + 3, -0.5, 1.2);
  d.Bm = test::randn(dtype, {s.B, s.T, s.G, s.N}, seed + 4, 0.6);
  d.Cm = test::randn(dtype, {s.B, s.T, s.G, s.N}, seed + 5, 0.6);
  d.D = test::randn(dtype, {s.H}, seed + 6);
  d.dt_bias = HostTensor(dtype, {s.H});
  test::fill_uniform(d.dt_bias, seed + 7, -2.5, -1.5);
  d.h0 = test::randn(dtype, {s.B, s.H, s.P, s.N}, seed + 8);
  d.doc = HostTensor(DType::I32, {s.B, s.T});
  if (!o.docs.empty()) {
    for (int64_t b = 0; b < s.B; ++b) {
      int64_t t = 0, id = 0;
      for (int64_t len : o.docs[static_cast<size_t>(b)]) {
        for (int64_t k = 0; k < len; ++k) d.doc.set(b * s.T + t++, static_cast<double>(id));
        ++id;
      }
      EXPECT_EQ(t, s.T) << "document lengths of row " << b << " must add up to T";
    }
  }
  return d;
}

struct SsdGradSet {
  HostTensor dx, ddt, dA_log, dBm, dCm, dD, ddt_bias, dh0;
  SsdGrads view() const {
    SsdGrads g;
    g.dx = dx.t;
    g.ddt = ddt.t;
    g.dA_log = dA_log.t;
    g.dBm = dBm.t;
    g.dCm = dCm.t;
    g.dD = dD.t;
    g.ddt_bias = ddt_bias.t;
    g.dh0 = dh0.t;
    return g;
  }
};

// Input gradients start as NaN (they must be overwritten), parameter gradients at 0.25 (they
// must be accumulated into).
SsdGradSet make_grads(DType dtype, const SsdShape& s) {
  SsdGradSet g;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto filled = [&](std::vector<int64_t> shape, double v) {
    HostTensor h(dtype, std::move(shape));
    for (int64_t i = 0; i < h.t.numel(); ++i) h.set(i, v);
    return h;
  };
  g.dx = filled({s.B, s.T, s.H, s.P}, nan);
  g.ddt = filled({s.B, s.T, s.H}, nan);
  g.dBm = filled({s.B, s.T, s.G, s.N}, nan);
  g.dCm = filled({s.B, s.T, s.G, s.N}, nan);
  g.dh0 = filled({s.B, s.H, s.P, s.N}, nan);
  g.dA_log = filled({s.H}, 0.25);
  g.dD = filled({s.H}, 0.25);
  g.ddt_bias = filled({s.H}, 0.25);
  return g;
}

using FwdFn = void (*)(const SsdParams&, const Tensor&, const Tensor&);
using BwdFn = void (*)(const SsdParams&, const Tensor&, const Tensor&, const SsdGrads&);

struct SsdRun {
  HostTensor y, hf;
  SsdGradSet g;
};

SsdRun run_ssd(const SsdData& d, FwdFn fwd, BwdFn bwd, const HostTensor& dy, const HostTensor& dhf) {
  DType dtype = d.x.t.dtype;
  SsdRun r;
  r.y = HostTensor(dtype, {d.s.B, d.s.T, d.s.H, d.s.P});
  r.hf = HostTensor(dtype, {d.s.B, d.s.H, d.s.P, d.s.N});
  SsdParams p = d.params();
  fwd(p, r.y.t, r.hf.t);
  r.g = make_grads(dtype, d.s);
  bwd(p, dy.t, dhf.t, r.g.view());
  return r;
}

void expect_close(const HostTensor& a, const HostTensor& b, double tol, const std::string& what) {
  double e = test::max_rel_error(a, b);
  EXPECT_LE(e, tol) << what;
}

void compare_chunked_to_sequential(DType dtype, SsdShape s, SsdOptions o, uint64_t seed,
                                   const std::string& label) {
  SCOPED_TRACE(label);
  SsdData d = make_ssd(dtype, s, o, seed);
  HostTensor dy = test::randn(dtype, {s.B, s.T, s.H, s.P}, seed + 20);
  HostTensor dhf = test::randn(dtype, {s.B, s.H, s.P, s.N}, seed + 21);
  SsdRun seq = run_ssd(d, cpu::ssd_forward_sequential, cpu::ssd_backward_sequential, dy, dhf);
  SsdRun chk = run_ssd(d, ssd_forward, ssd_backward, dy, dhf);
  const double tol = dtype == DType::F64 ? 1e-10 : 2e-5;
  expect_close(chk.y, seq.y, tol, "y");
  expect_close(chk.hf, seq.hf, tol, "h_final");
  expect_close(chk.g.dx, seq.g.dx, tol, "dx");
  expect_close(chk.g.ddt, seq.g.ddt, tol, "ddt");
  expect_close(chk.g.dBm, seq.g.dBm, tol, "dBm");
  expect_close(chk.g.dCm, seq.g.dCm, tol, "dCm");
  expect_close(chk.g.dh0, seq.g.dh0, tol, "dh0");
  expect_close(chk.g.dA_log, seq.g.dA_log, tol, "dA_log");
  expect_close(chk.g.dD, seq.g.dD, tol, "dD");
  expect_close(chk.g.ddt_bias, seq.g.ddt_bias, tol, "ddt_bias");
}

struct NamedCase {
  const char* name;
  SsdShape s;
  SsdOptions o;
};

std::vector<NamedCase> equivalence_cases() {
  SsdOptions plain;
  SsdOptions bare;
  bare.D = false;
  bare.dt_bias = false;
  SsdOptions h0;
  h0.h0 = true;
  SsdOptions clamp;
  clamp.h0 = true;
  clamp.dt_min = 0.08f;
  clamp.dt_max = 0.2f;
  SsdOptions docs;
  docs.h0 = true;
  // row 0: a boundary exactly at a chunk edge (8), single-token documents, a boundary at 31
  // row 1: one boundary at a chunk edge (16) and a single-token last document
  docs.docs = {{8, 1, 13, 1, 17}, {16, 23, 1}};
  SsdOptions docs_clamp = docs;
  docs_clamp.dt_min = 0.08f;
  docs_clamp.dt_max = 0.25f;
  return {
      {"T multiple of chunk", {1, 32, 2, 4, 1, 8, 8}, plain},
      {"partial last chunk, groups, batch", {2, 37, 4, 5, 2, 6, 8}, h0},
      {"chunk larger than T", {2, 10, 2, 3, 1, 4, 32}, h0},
      {"chunk 1", {1, 9, 2, 3, 2, 5, 1}, h0},
      {"no D, no dt_bias", {1, 20, 3, 4, 3, 4, 6}, bare},
      {"dt clamp", {2, 25, 4, 3, 2, 5, 8}, clamp},
      {"packed documents", {2, 40, 4, 4, 2, 6, 8}, docs},
      {"packed documents, clamp, odd chunk", {2, 40, 6, 3, 3, 5, 7}, docs_clamp},
  };
}

TEST(Ssd, ChunkedMatchesSequentialF64) {
  uint64_t seed = 100;
  for (const NamedCase& c : equivalence_cases())
    compare_chunked_to_sequential(DType::F64, c.s, c.o, seed += 50, c.name);
}

TEST(Ssd, ChunkedMatchesSequentialF32) {
  uint64_t seed = 900;
  for (const NamedCase& c : equivalence_cases())
    compare_chunked_to_sequential(DType::F32, c.s, c.o, seed += 50, c.name);
  // a realistic head: P 64, N 32, chunk 32, documents
  SsdOptions docs;
  docs.h0 = true;
  docs.docs = {{30, 34, 1, 31}};
  compare_chunked_to_sequential(DType::F32, {1, 96, 2, 64, 1, 32, 32}, docs, 77, "P 64, docs");
}

// Float64 central differences of L = Σ wy·y + Σ wh·h_final against every gradient.
void fd_check_ssd(FwdFn fwd, BwdFn bwd, const char* label) {
  SCOPED_TRACE(label);
  SsdShape s{2, 13, 4, 3, 2, 4, 4};
  SsdOptions o;
  o.h0 = true;
  o.docs = {{5, 1, 7}, {4, 9}};  // boundary at a chunk edge (4) in row 1
  o.dt_min = 0.08f;
  o.dt_max = 0.3f;
  SsdData d = make_ssd(DType::F64, s, o, 4242);
  HostTensor wy = test::randn(DType::F64, {s.B, s.T, s.H, s.P}, 31);
  HostTensor wh = test::randn(DType::F64, {s.B, s.H, s.P, s.N}, 32);
  SsdRun r = run_ssd(d, fwd, bwd, wy, wh);
  // undo the 0.25 the parameter gradients started from
  for (HostTensor* g : {&r.g.dA_log, &r.g.dD, &r.g.ddt_bias})
    for (int64_t i = 0; i < g->t.numel(); ++i) g->set(i, g->get(i) - 0.25);
  HostTensor y(DType::F64, {s.B, s.T, s.H, s.P}), hf(DType::F64, {s.B, s.H, s.P, s.N});
  auto loss = [&] {
    fwd(d.params(), y.t, hf.t);
    return test::dot(y, wy) + test::dot(hf, wh);
  };
  struct Item {
    const char* name;
    HostTensor* x;
    const HostTensor* g;
  };
  for (const Item& it : {Item{"x", &d.x, &r.g.dx}, Item{"dt", &d.dt, &r.g.ddt},
                         Item{"A_log", &d.A_log, &r.g.dA_log}, Item{"Bm", &d.Bm, &r.g.dBm},
                         Item{"Cm", &d.Cm, &r.g.dCm}, Item{"D", &d.D, &r.g.dD},
                         Item{"dt_bias", &d.dt_bias, &r.g.ddt_bias}, Item{"h0", &d.h0, &r.g.dh0}}) {
    for (uint64_t k = 0; k < 2; ++k)
      EXPECT_LT(test::fd_direction_error(*it.x, *it.g, loss, 500 + k), 1e-6) << it.name;
  }
}

TEST(SsdGrad, ChunkedFiniteDifferences) { fd_check_ssd(ssd_forward, ssd_backward, "chunked"); }
TEST(SsdGrad, SequentialFiniteDifferences) {
  fd_check_ssd(cpu::ssd_forward_sequential, cpu::ssd_backward_sequential, "sequential");
}

// Copies rows [t0, t0+len) of b's slice of a [B,T,...] tensor into a new [1,len,...] tensor.
HostTensor take_tokens(const HostTensor& src, int64_t b, int64_t t0, int64_t len) {
  std::vector<int64_t> shape(src.t.shape.begin(), src.t.shape.begin() + src.t.ndim);
  const int64_t T = shape[1];
  int64_t inner = 1;
  for (size_t i = 2; i < shape.size(); ++i) inner *= shape[i];
  shape[0] = 1;
  shape[1] = len;
  HostTensor out(src.t.dtype, shape);
  for (int64_t t = 0; t < len; ++t)
    for (int64_t i = 0; i < inner; ++i) out.set(t * inner + i, src.get(((b * T) + t0 + t) * inner + i));
  return out;
}

TEST(Ssd, PackedRowEqualsDocumentsRunSeparately) {
  for (DType dtype : {DType::F64, DType::F32}) {
    SsdShape s{1, 23, 4, 3, 2, 5, 4};
    SsdOptions o;
    o.h0 = true;
    o.docs = {{7, 9, 1, 6}};  // boundaries at 7, 16 (a chunk edge) and 17
    SsdData d = make_ssd(dtype, s, o, 77);
    HostTensor y(dtype, {1, s.T, s.H, s.P}), hf(dtype, {1, s.H, s.P, s.N});
    ssd_forward(d.params(), y.t, hf.t);
    int64_t t0 = 0;
    bool first = true;
    for (int64_t len : o.docs[0]) {
      SsdData one = make_ssd(dtype, {1, len, s.H, s.P, s.G, s.N, s.Q}, SsdOptions{}, 77);
      one.o = o;
      one.o.docs.clear();
      one.o.h0 = first;  // h0 only reaches the row's first document
      one.x = take_tokens(d.x, 0, t0, len);
      one.dt = take_tokens(d.dt, 0, t0, len);
      one.Bm = take_tokens(d.Bm, 0, t0, len);
      one.Cm = take_tokens(d.Cm, 0, t0, len);
      one.A_log = test::copy_of(d.A_log);
      one.D = test::copy_of(d.D);
      one.dt_bias = test::copy_of(d.dt_bias);
      one.h0 = test::copy_of(d.h0);
      HostTensor y1(dtype, {1, len, s.H, s.P}), hf1(dtype, {1, s.H, s.P, s.N});
      ssd_forward(one.params(), y1.t, hf1.t);
      HostTensor ref = take_tokens(y, 0, t0, len);
      EXPECT_LE(test::max_rel_error(y1, ref), dtype == DType::F64 ? 1e-12 : 1e-5)
          << "document at " << t0;
      if (t0 + len == s.T) {
        EXPECT_LE(test::max_rel_error(hf1, hf), dtype == DType::F64 ? 1e-12 : 1e-5);
      }
      t0 += len;
      first = false;
    }
  }
}

TEST(Ssd, DecodeStepReproducesTheScan) {
  for (DType dtype : {DType::F64, DType::F32}) {
    SsdShape s{2, 11, 4, 3, 2, 5, 4};
    SsdOptions o;
    o.h0 = true;
    o.dt_min = 0.05f;
    o.dt_max = 0.3f;
    SsdData d = make_ssd(dtype, s, o, 91);
    HostTensor y(dtype, {s.B, s.T, s.H, s.P}), hf(dtype, {s.B, s.H, s.P, s.N});
    ssd_forward(d.params(), y.t, hf.t);
    HostTensor state(dtype, {s.B, s.H, s.P, s.N});
    for (int64_t i = 0; i < state.t.numel(); ++i) state.set(i, d.h0.get(i));
    HostTensor yall(dtype, {s.B, s.T, s.H, s.P});
    for (int64_t t = 0; t < s.T; ++t) {
      SsdStepParams sp;
      sp.x = d.x.t.select(1, t);
      sp.dt = d.dt.t.select(1, t);
      sp.Bm = d.Bm.t.select(1, t);
      sp.Cm = d.Cm.t.select(1, t);
      sp.A_log = d.A_log.t;
      sp.D = d.D.t;
      sp.dt_bias = d.dt_bias.t;
      sp.dt_min = o.dt_min;
      sp.dt_max = o.dt_max;
      ssd_step(sp, state.t, yall.t.select(1, t));
    }
    const double tol = dtype == DType::F64 ? 1e-12 : 1e-5;
    EXPECT_LE(test::max_rel_error(yall, y), tol);
    EXPECT_LE(test::max_rel_error(state, hf), tol);
  }
}

// x, B and C as column slices of one [B,T,W] activation (as the Mamba mixer lays them out), and
// y / dx as slices of wider buffers: same results as contiguous tensors.
TEST(Ssd, RowViewsOfAWiderActivation) {
  const DType dtype = DType::F64;
  SsdShape s{2, 19, 4, 3, 2, 5, 8};
  SsdOptions o;
  o.docs = {{19}, {6, 13}};
  SsdData d = make_ssd(dtype, s, o, 5);
  const int64_t HP = s.H * s.P, GN = s.G * s.N, W = HP + 2 * GN + 3;
  HostTensor wide(dtype, {s.B, s.T, W});
  for (int64_t r = 0; r < s.B * s.T; ++r) {
    for (int64_t i = 0; i < HP; ++i) wide.set(r * W + i, d.x.get(r * HP + i));
    for (int64_t i = 0; i < GN; ++i) {
      wide.set(r * W + HP + i, d.Bm.get(r * GN + i));
      wide.set(r * W + HP + GN + i, d.Cm.get(r * GN + i));
    }
  }
  HostTensor y_wide(dtype, {s.B, s.T, HP + 2}), dx_wide(dtype, {s.B, s.T, HP + 1});
  auto view4 = [&](const HostTensor& h, int64_t offset, int64_t width, int64_t a, int64_t b) {
    Tensor t = h.t.slice(2, offset, width);
    t.ndim = 4;
    t.shape = {s.B, s.T, a, b, 0, 0};
    t.stride = {h.t.stride[0], h.t.stride[1], b, 1, 0, 0};
    return t;
  };
  SsdParams pv = d.params();
  pv.x = view4(wide, 0, HP, s.H, s.P);
  pv.Bm = view4(wide, HP, GN, s.G, s.N);
  pv.Cm = view4(wide, HP + GN, GN, s.G, s.N);
  HostTensor dy = test::randn(dtype, {s.B, s.T, s.H, s.P}, 6);
  HostTensor y(dtype, {s.B, s.T, s.H, s.P}), hf(dtype, {s.B, s.H, s.P, s.N});
  ssd_forward(d.params(), y.t, hf.t);
  SsdGradSet g = make_grads(dtype, s);
  ssd_backward(d.params(), dy.t, Tensor(), g.view());
  HostTensor hf2(dtype, {s.B, s.H, s.P, s.N});
  ssd_forward(pv, view4(y_wide, 1, HP, s.H, s.P), hf2.t);
  SsdGradSet g2 = make_grads(dtype, s);
  SsdGrads gv = g2.view();
  gv.dx = view4(dx_wide, 0, HP, s.H, s.P);
  ssd_backward(pv, dy.t, Tensor(), gv);
  double worst = 0, worst_dx = 0;
  for (int64_t r = 0; r < s.B * s.T; ++r)
    for (int64_t i = 0; i < HP; ++i) {
      worst = std::max(worst, std::fabs(y_wide.get(r * (HP + 2) + 1 + i) - y.get(r * HP + i)));
      worst_dx = std::max(worst_dx, std::fabs(dx_wide.get(r * (HP + 1) + i) - g.dx.get(r * HP + i)));
    }
  EXPECT_EQ(worst, 0.0);
  EXPECT_EQ(worst_dx, 0.0);
  EXPECT_EQ(test::max_rel_error(hf2, hf), 0.0);
  EXPECT_EQ(test::max_rel_error(g2.dBm, g.dBm), 0.0);
  EXPECT_EQ(test::max_rel_error(g2.dCm, g.dCm), 0.0);
  EXPECT_EQ(test::max_rel_error(g2.ddt, g.ddt), 0.0);
}

TEST(Ssd, RejectsBadShapes) {
  SsdData d = make_ssd(DType::F32, {1, 8, 4, 3, 2, 5, 4}, SsdOptions{}, 3);
  HostTensor y(DType::F32, {1, 8, 4, 4});  // wrong P
  EXPECT_THROW(ssd_forward(d.params(), y.t, Tensor()), Error);
  HostTensor y_ok(DType::F64, {1, 8, 4, 3});  // wrong dtype
  EXPECT_THROW(ssd_forward(d.params(), y_ok.t, Tensor()), Error);
  SsdParams p = d.params();
  p.chunk = 0;
  HostTensor y3(DType::F32, {1, 8, 4, 3});
  EXPECT_THROW(ssd_forward(p, y3.t, Tensor()), Error);
}

}  // namespace
}  // namespace hlm
