// CUDA SSD (forward, backward, decode step) matches its CPU twin on fresh random inputs: odd
// lengths, packed documents, h0 / h_final, clamped dt, column-slice inputs, every fast (P, N)
// instantiation and the generic path; outputs are poisoned first; two runs are bitwise equal.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/memory.h"
#include "ops/ssd.h"
#include "test_util.h"

namespace hlm {
namespace {

using test::HostTensor;
using test::ScopedEnv;

// A device tensor (owning), optionally a column slice [.., off, off + cols) of a wider last dim.
struct Dev {
  Buffer buf;
  Tensor t;
};

Dev dev_alloc(DType dtype, std::vector<int64_t> shape, int64_t extra_cols = 0, int64_t col_off = 0) {
  std::vector<int64_t> full = shape;
  full.back() += extra_cols;
  int64_t n = 1;
  for (int64_t s : full) n *= s;
  Dev d;
  d.buf = Buffer(Device::CUDA, static_cast<size_t>(std::max<int64_t>(n, 1)) * dtype_size(dtype));
  device_memset(d.buf.data(), Device::CUDA, 0xFF, d.buf.size());  // poison: NaN in every float dtype
  Tensor t = d.buf.as(dtype, Shape(full.data(), full.size()));
  d.t = extra_cols ? t.slice(t.ndim - 1, col_off, shape.back()) : t;
  return d;
}

// Uploads host values (any dtype) converted to `dtype`.
Dev upload(const HostTensor& h, DType dtype, int64_t extra_cols = 0, int64_t col_off = 0) {
  std::vector<int64_t> shape(h.t.shape.begin(), h.t.shape.begin() + h.t.ndim);
  HostTensor conv(dtype, shape);
  for (int64_t i = 0; i < h.t.numel(); ++i) conv.set(i, h.get(i));
  Dev d = dev_alloc(dtype, shape, extra_cols, col_off);
  copy_tensor(d.t, conv.t);
  return d;
}

HostTensor download(const Tensor& t) {
  std::vector<int64_t> shape(t.shape.begin(), t.shape.begin() + t.ndim);
  HostTensor h(t.dtype, shape);
  copy_tensor(h.t, t);
  return h;
}

bool bitwise_equal(const HostTensor& a, const HostTensor& b) {
  return a.t.nbytes() == b.t.nbytes() && std::memcmp(a.t.data, b.t.data, a.t.nbytes()) == 0;
}

struct Case {
  int64_t B, T, H, G, P, N;
  DType act = DType::BF16;
  bool doc = true, h0 = true, slice = false;
  double tol = 1e-2;
  uint64_t seed = 1;
  float dt_max = 0.5f;  // the dt clamp's upper end (lower: chunks of mild decay)
  bool zero_D = false;  // D = 0: y is the scan's alone (D x would dominate it and hide the scan's errors)
};

// Inputs as F32 host tensors holding values exactly representable in the activation dtype.
struct Inputs {
  HostTensor x, dt, A_log, Bm, Cm, D, bias, doc, h0, dy, dhf;
  float dt_min = 0.001f, dt_max = 0.5f;
};

// Rounds every value to the nearest value of `dtype` (kept in the F32 tensor).
void round_to(HostTensor& h, DType dtype) {
  HostTensor r(dtype, {h.t.numel()});
  for (int64_t i = 0; i < h.t.numel(); ++i) r.set(i, h.get(i));
  for (int64_t i = 0; i < h.t.numel(); ++i) h.set(i, r.get(i));
}

HostTensor rounded(DType act, std::vector<int64_t> shape, uint64_t seed, double stddev) {
  HostTensor h(DType::F32, shape);
  test::fill_normal(h, seed, stddev);
  round_to(h, act);
  return h;
}

// Raw dt in [-2.5, 1]: softplus(dt + bias) crosses both clamps for some positions.
HostTensor raw_dt(std::vector<int64_t> shape, uint64_t seed) {
  HostTensor h(DType::F32, shape);
  test::fill_uniform(h, seed, -2.5, 1.0);
  round_to(h, DType::BF16);
  return h;
}

Inputs make_inputs(const Case& c) {
  Inputs in;
  in.dt_max = c.dt_max;
  const uint64_t s = c.seed * 100;
  in.x = rounded(c.act, {c.B, c.T, c.H, c.P}, s + 1, 1.0);
  in.Bm = rounded(c.act, {c.B, c.T, c.G, c.N}, s + 2, 1.0 / std::sqrt(double(c.N)));
  in.Cm = rounded(c.act, {c.B, c.T, c.G, c.N}, s + 3, 1.0 / std::sqrt(double(c.N)));
  in.dy = rounded(c.act, {c.B, c.T, c.H, c.P}, s + 4, 1.0);
  in.dt = raw_dt({c.B, c.T, c.H}, s + 5);
  in.A_log = HostTensor(DType::F32, {c.H});
  test::fill_uniform(in.A_log, s + 6, 0.0, 2.5);
  in.D = HostTensor(DType::F32, {c.H});
  test::fill_normal(in.D, s + 7, c.zero_D ? 0.0 : 1.0);
  in.bias = HostTensor(DType::F32, {c.H});
  test::fill_uniform(in.bias, s + 8, -1.0, 0.5);
  if (c.h0) {
    in.h0 = HostTensor(DType::F32, {c.B, c.H, c.P, c.N});
    test::fill_normal(in.h0, s + 9, 0.5);
  }
  in.dhf = HostTensor(DType::F32, {c.B, c.H, c.P, c.N});
  test::fill_normal(in.dhf, s + 10, 0.3);
  if (c.doc) {
    in.doc = HostTensor(DType::I32, {c.B, c.T});
    Rng rng(s + 11, 0);
    for (int64_t b = 0; b < c.B; ++b) {
      int id = 0;
      int64_t next = 1 + static_cast<int64_t>(rng.below(40));
      for (int64_t t = 0; t < c.T; ++t) {
        if (t == next || t == 128) {  // t = 128: a boundary exactly at a chunk start
          ++id;
          next = t + 1 + static_cast<int64_t>(rng.below(static_cast<uint64_t>(std::max<int64_t>(2, c.T / 3))));
        }
        in.doc.set(b * c.T + t, id);
      }
    }
  }
  return in;
}

SsdParams cpu_params(const Inputs& in, const Case& c) {
  SsdParams p;
  p.x = in.x.t;
  p.dt = in.dt.t;
  p.A_log = in.A_log.t;
  p.Bm = in.Bm.t;
  p.Cm = in.Cm.t;
  p.D = in.D.t;
  p.dt_bias = in.bias.t;
  if (c.doc) p.doc = in.doc.t;
  if (c.h0) p.h0 = in.h0.t;
  p.dt_min = in.dt_min;
  p.dt_max = in.dt_max;
  return p;
}

// Device copies of the inputs; with c.slice, x/B/C are column slices of one xBC activation and
// dt a column slice of a wider projection output.
struct DevInputs {
  Dev x, dt, A_log, Bm, Cm, D, bias, doc, h0, dy, dhf;
  SsdParams p;
};
DevInputs upload_inputs(const Inputs& in, const Case& c) {
  DevInputs d;
  const int64_t xbc = c.H * c.P + 2 * c.G * c.N;
  if (c.slice) {
    // [B,T,H,P] inside [B,T,xbc]: build as 3-D slices then view as 4-D.
    auto slice4 = [&](const HostTensor& h, int64_t off, int64_t inner, int64_t cols) {
      HostTensor flat(DType::F32, {c.B, c.T, inner * cols});
      std::memcpy(flat.t.data, h.t.data, h.t.nbytes());
      Dev dv = upload(flat, c.act, xbc - inner * cols, off);
      dv.t.ndim = 4;
      dv.t.shape = {c.B, c.T, inner, cols, 0, 0};
      dv.t.stride = {c.T * xbc, xbc, cols, 1, 0, 0};
      return dv;
    };
    d.x = slice4(in.x, 0, c.H, c.P);
    d.Bm = slice4(in.Bm, c.H * c.P, c.G, c.N);
    d.Cm = slice4(in.Cm, c.H * c.P + c.G * c.N, c.G, c.N);
    d.dt = upload(in.dt, DType::BF16, 5, 3);
  } else {
    d.x = upload(in.x, c.act);
    d.Bm = upload(in.Bm, c.act);
    d.Cm = upload(in.Cm, c.act);
    d.dt = upload(in.dt, DType::BF16);
  }
  d.A_log = upload(in.A_log, DType::F32);
  d.D = upload(in.D, DType::F32);
  d.bias = upload(in.bias, DType::F32);
  if (c.doc) d.doc = upload(in.doc, DType::I32);
  if (c.h0) d.h0 = upload(in.h0, DType::F32);
  d.dy = upload(in.dy, c.act);
  d.dhf = upload(in.dhf, DType::F32);
  d.p.x = d.x.t;
  d.p.dt = d.dt.t;
  d.p.A_log = d.A_log.t;
  d.p.Bm = d.Bm.t;
  d.p.Cm = d.Cm.t;
  d.p.D = d.D.t;
  d.p.dt_bias = d.bias.t;
  if (c.doc) d.p.doc = d.doc.t;
  if (c.h0) d.p.h0 = d.h0.t;
  d.p.dt_min = in.dt_min;
  d.p.dt_max = in.dt_max;
  return d;
}

void expect_close(const char* what, const HostTensor& got, const HostTensor& ref, double tol) {
  const double e = test::norm_rel_error(got, ref);
  EXPECT_LE(e, tol) << what << ": ‖out − ref‖/‖ref‖ = " << e;
}

// y's scan part alone (y - D x) against the reference's, relative to that part, the output's own
// rounding to the activation dtype (the reference's, |round(y_ref) - y_ref|) taken out in
// quadrature: with D ~ N(0, 1) D x dominates y, and y's own error hides the scan's (the emulator: a
// dropped document mask gave y 6.2e-3, its scan part 7.0e-2). The same for dx, whose D dy term
// dominates it alike: `lin` is the input D multiplies (x or dy).
void expect_scan_close(const char* what, const HostTensor& lin, const Inputs& in, const Case& c, const HostTensor& y,
                       const HostTensor& y_ref) {
  HostTensor r(c.act, {y_ref.t.numel()});
  double e2 = 0, r2 = 0, s2 = 0;
  for (int64_t i = 0; i < y_ref.t.numel(); ++i) {
    r.set(i, y_ref.get(i));
    const double ref = y_ref.get(i), got = y.get(i), dx = in.D.get((i / c.P) % c.H) * lin.get(i);
    if (!std::isfinite(got)) {
      ADD_FAILURE() << what << ": non-finite output at " << i;
      return;
    }
    e2 += (got - ref) * (got - ref);
    r2 += (r.get(i) - ref) * (r.get(i) - ref);
    s2 += (ref - dx) * (ref - dx);
  }
  const double e = std::sqrt(std::max(e2 - r2, 0.0)) / std::max(std::sqrt(s2), 1e-30);
  EXPECT_LE(e, c.tol) << what << " (the scan's part): ‖out − ref‖/‖ref‖ = " << e;
}

void check_forward(const Case& c) {
  Inputs in = make_inputs(c);
  HostTensor y_ref(DType::F32, {c.B, c.T, c.H, c.P}), hf_ref(DType::F32, {c.B, c.H, c.P, c.N});
  ssd_forward(cpu_params(in, c), y_ref.t, hf_ref.t);
  DevInputs d = upload_inputs(in, c);
  Dev y = dev_alloc(c.act, {c.B, c.T, c.H, c.P}), hf = dev_alloc(DType::F32, {c.B, c.H, c.P, c.N});
  ssd_forward(d.p, y.t, hf.t);
  HostTensor y1 = download(y.t), hf1 = download(hf.t);
  expect_close("y", y1, y_ref, c.tol);
  if (!c.zero_D) expect_scan_close("y - D x", in.x, in, c, y1, y_ref);
  expect_close("h_final", hf1, hf_ref, c.tol);
  // determinism: poison and run again
  device_memset(y.buf.data(), Device::CUDA, 0xFF, y.buf.size());
  device_memset(hf.buf.data(), Device::CUDA, 0xFF, hf.buf.size());
  ssd_forward(d.p, y.t, hf.t);
  EXPECT_TRUE(bitwise_equal(download(y.t), y1)) << "y differs between two runs";
  EXPECT_TRUE(bitwise_equal(download(hf.t), hf1)) << "h_final differs between two runs";
}

void check_backward(const Case& c) {
  Inputs in = make_inputs(c);
  const std::vector<int64_t> xs{c.B, c.T, c.H, c.P}, bs{c.B, c.T, c.G, c.N}, ts{c.B, c.T, c.H},
      hs{c.H}, ss{c.B, c.H, c.P, c.N};
  // Parameter gradients accumulate: start both sides from the same non-zero values.
  HostTensor acc0(DType::F32, hs);
  test::fill_normal(acc0, c.seed + 77, 1.0);
  HostTensor gx(DType::F32, xs), gdt(DType::F32, ts), gA(DType::F32, hs), gB(DType::F32, bs),
      gC(DType::F32, bs), gD(DType::F32, hs), gbias(DType::F32, hs), gh0(DType::F32, ss);
  for (HostTensor* h : {&gA, &gD, &gbias})
    for (int64_t i = 0; i < c.H; ++i) h->set(i, acc0.get(i));
  SsdGrads gc{gx.t, gdt.t, gA.t, gB.t, gC.t, gD.t, gbias.t, c.h0 ? gh0.t : Tensor()};
  ssd_backward(cpu_params(in, c), in.dy.t, in.dhf.t, gc);

  DevInputs d = upload_inputs(in, c);
  auto run = [&]() {
    struct Out {
      Dev dx, ddt, dA, dB, dC, dD, dbias, dh0;
    } o;
    o.dx = dev_alloc(c.act, xs);
    o.ddt = dev_alloc(DType::F32, ts);
    o.dB = dev_alloc(c.act, bs);
    o.dC = dev_alloc(c.act, bs);
    o.dh0 = dev_alloc(DType::F32, ss);
    o.dA = upload(acc0, DType::F32);
    o.dD = upload(acc0, DType::F32);
    o.dbias = upload(acc0, DType::F32);
    SsdGrads g{o.dx.t, o.ddt.t, o.dA.t, o.dB.t, o.dC.t, o.dD.t, o.dbias.t, c.h0 ? o.dh0.t : Tensor()};
    ssd_backward(d.p, d.dy.t, d.dhf.t, g);
    return o;
  };
  auto o1 = run();
  const HostTensor dx1 = download(o1.dx.t);
  expect_close("dx", dx1, gx, c.tol);
  if (!c.zero_D) expect_scan_close("dx - D dy", in.dy, in, c, dx1, gx);
  expect_close("ddt", download(o1.ddt.t), gdt, c.tol);
  expect_close("dBm", download(o1.dB.t), gB, c.tol);
  expect_close("dCm", download(o1.dC.t), gC, c.tol);
  // compare the accumulated parameter gradients by their increments
  auto increment = [&](const HostTensor& h) {
    HostTensor r(DType::F32, hs);
    for (int64_t i = 0; i < c.H; ++i) r.set(i, h.get(i) - acc0.get(i));
    return r;
  };
  expect_close("dA_log", increment(download(o1.dA.t)), increment(gA), c.tol);
  expect_close("dD", increment(download(o1.dD.t)), increment(gD), c.tol);
  expect_close("ddt_bias", increment(download(o1.dbias.t)), increment(gbias), c.tol);
  if (c.h0) expect_close("dh0", download(o1.dh0.t), gh0, c.tol);
  auto o2 = run();
  for (auto [a, b] : {std::pair{&o1.dx, &o2.dx}, {&o1.ddt, &o2.ddt}, {&o1.dA, &o2.dA}, {&o1.dB, &o2.dB},
                      {&o1.dC, &o2.dC}, {&o1.dD, &o2.dD}, {&o1.dbias, &o2.dbias}, {&o1.dh0, &o2.dh0}})
    EXPECT_TRUE(bitwise_equal(download(a->t), download(b->t))) << "gradients differ between two runs";
}

// --- the tensor-core path (bf16, chunk 64, P x N instantiations) ---

TEST(SsdCuda, ForwardOddLengthDocsH0) {
  HLM_REQUIRE_GPU();
  check_forward({2, 333, 8, 2, 64, 128});
}
TEST(SsdCuda, BackwardOddLengthDocsH0) {
  HLM_REQUIRE_GPU();
  check_backward({2, 333, 8, 2, 64, 128});
}
TEST(SsdCuda, ColumnSliceInputs) {
  HLM_REQUIRE_GPU();
  Case c{1, 200, 4, 2, 64, 128};
  c.slice = true;
  check_forward(c);
  check_backward(c);
}
TEST(SsdCuda, NoDocNoH0ExactChunks) {
  HLM_REQUIRE_GPU();
  Case c{1, 256, 4, 1, 64, 128};
  c.doc = c.h0 = false;
  check_forward(c);
  check_backward(c);
}
TEST(SsdCuda, Mamba2Hybrid8BShape) {  // H=128, P=64, G=8, N=128
  HLM_REQUIRE_GPU();
  Case c{1, 2048, 128, 8, 64, 128};
  c.seed = 8;
  check_forward(c);
  check_backward(c);
}
TEST(SsdCuda, Instantiation64x64) {
  HLM_REQUIRE_GPU();
  check_forward({2, 300, 16, 4, 64, 64});
  check_backward({2, 300, 16, 4, 64, 64});
}
// Odd and small head counts per group: the backward chunk kernel pipelines the per-head scan (one
// head ahead) and epilogue (one head behind) over the group's heads; P = 128 has one head buffer.
TEST(SsdCuda, HeadsPerGroup) {
  HLM_REQUIRE_GPU();
  check_backward({2, 333, 6, 2, 64, 128});   // 3 per group
  check_backward({1, 200, 5, 1, 64, 64});    // 5 per group
  check_backward({1, 300, 3, 3, 64, 128});   // 1 per group
  check_backward({1, 130, 3, 1, 128, 128});  // 3 per group, single head buffer
}
TEST(SsdCuda, Instantiation128x128) {
  HLM_REQUIRE_GPU();
  check_forward({1, 1030, 32, 4, 128, 128});
  check_backward({1, 1030, 32, 4, 128, 128});
}

// Forward and backward of case c with the chunk-parallel split forced: HLM_SSD_SEG_CHUNKS = seg,
// HLM_SSD_PIECE_CHUNKS = piece (null: the automatic choice).
void check_split(const char* seg, const char* piece, Case c, uint64_t seed) {
  SCOPED_TRACE(std::string("HLM_SSD_SEG_CHUNKS=") + seg + " HLM_SSD_PIECE_CHUNKS=" + (piece ? piece : "auto"));
  setenv("HLM_SSD_SEG_CHUNKS", seg, 1);
  if (piece) setenv("HLM_SSD_PIECE_CHUNKS", piece, 1);
  c.seed = seed;
  check_forward(c);
  check_backward(c);
  unsetenv("HLM_SSD_PIECE_CHUNKS");
  unsetenv("HLM_SSD_SEG_CHUNKS");
}

// The chunk-parallel split: chunks per segment forced from 1 (every chunk its own segment) to more
// than the row has (no state pass), with a partial last segment and documents across segment edges.
TEST(SsdCuda, SegmentSplits) {
  HLM_REQUIRE_GPU();
  for (const char* seg : {"1", "3", "7", "100000"}) check_split(seg, nullptr, {2, 1000, 8, 2, 64, 128}, 11);
}

// The segment states come from pieces (each one weighted product over its tokens, then a pass over
// pieces): pieces of 1 .. 7 chunks, uneven and empty last pieces, and the longest piece (64 chunks,
// 4096 tokens of coefficients) with documents across piece and segment edges.
TEST(SsdCuda, PieceSplits) {
  HLM_REQUIRE_GPU();
  for (const char* pc : {"1", "3", "7"}) check_split("7", pc, {2, 1000, 8, 2, 64, 128}, 12);
  check_split("70", "64", {1, 9000, 4, 1, 64, 64}, 13);
  check_split("70", nullptr, {1, 9000, 4, 1, 64, 64}, 13);
}

// The forward's walks: the mma.sync block shapes 11 (the default: one head, 2 blocks per SM), 12
// and 21, and the wgmma walks (sm_90: variant 1, one warpgroup per head; variant 2, two consumer
// warpgroups and a producer warpgroup; variant 3, that with the consumers' chunk reordered; variant
// 4, that with y stored by TMA: batch 2 and partial last chunks check its clipping; variant 5, that
// with x, B and C loaded by TMA: partial chunks read as zeros, C's rows in 8-row blocks; variant 6,
// that with a scan warp per head), also with forced segment splits.
TEST(SsdCuda, ForwardBlockShapes) {
  HLM_REQUIRE_GPU();
  for (const char* v : {"1", "2", "3", "4", "5", "6", "7", "11", "12", "21"}) {
    SCOPED_TRACE(std::string("HLM_SSD_FWD_VARIANT=") + v);
    setenv("HLM_SSD_FWD_VARIANT", v, 1);
    check_forward({2, 1000, 8, 2, 64, 128});
    check_forward({1, 333, 16, 4, 64, 64});
  }
  for (const char* v : {"1", "2", "3", "4", "5", "6", "7"}) {  // the wgmma walks: one warpgroup per head;
                                                               // warp-specialised (3: reordered; 4: TMA y;
                                                               // 5: TMA loads too; 6: a scan warp per
                                                               // head; 7: 6 with factored scans)
    SCOPED_TRACE(std::string("HLM_SSD_FWD_VARIANT=") + v);
    setenv("HLM_SSD_FWD_VARIANT", v, 1);
    {  // dt a bf16 column slice at an odd offset (the walk of variant 1 copies the words holding it)
      Case c{2, 200, 4, 2, 64, 128};
      c.slice = true;
      check_forward(c);
      Case n{1, 256, 4, 1, 64, 128};
      n.doc = n.h0 = false;
      check_forward(n);
      Case z{2, 700, 8, 2, 64, 128};  // D = 0: y is the scan's alone, its errors not hidden by D x
      z.zero_D = true;
      z.dt_max = 0.1f;
      check_forward(z);
    }
    for (const char* segs : {"1", "3"}) {
      SCOPED_TRACE(std::string("HLM_SSD_SEG_CHUNKS=") + segs);
      setenv("HLM_SSD_SEG_CHUNKS", segs, 1);
      check_forward({2, 1000, 8, 2, 64, 128});
      check_forward({1, 333, 16, 4, 64, 64});
    }
    unsetenv("HLM_SSD_SEG_CHUNKS");
  }
  unsetenv("HLM_SSD_FWD_VARIANT");
  // Variant 2 with its y copy-out under the Yo product (HLM_SSD_WS_LATE_COPY=1): one and several
  // segments, a partial last chunk.
  ScopedEnv variant("HLM_SSD_FWD_VARIANT", "2"), late("HLM_SSD_WS_LATE_COPY", "1");
  check_forward({2, 1000, 8, 2, 64, 128});
  check_forward({1, 333, 16, 4, 64, 64});
  ScopedEnv segs("HLM_SSD_SEG_CHUNKS", "3");
  check_forward({2, 1000, 8, 2, 64, 128});
}

// Forward variant 7 (factored scans) where its fast chunks and the state's rescales happen: dt
// clamped low (every chunk without a boundary fast; the state's scale reaches its floor within a
// segment) and in between (chunks fast or exact by their decay), documents or none, one segment or
// several, the 8B shape; D = 0, so that y is the scan's alone.
TEST(SsdCuda, ForwardFactoredScans) {
  HLM_REQUIRE_GPU();
  ScopedEnv variant("HLM_SSD_FWD_VARIANT", "7");
  for (float dmax : {0.02f, 0.1f, 0.3f}) {  // 0.3: steep chunks, about the middle or exact
    SCOPED_TRACE(dmax);
    for (const char* segs : {"0", "1", "5"}) {
      SCOPED_TRACE(std::string("HLM_SSD_SEG_CHUNKS=") + segs);
      ScopedEnv seg("HLM_SSD_SEG_CHUNKS", segs);
      Case n{1, 3000, 4, 1, 64, 128};
      n.doc = false;
      n.dt_max = dmax;
      n.zero_D = true;
      check_forward(n);
      Case d{2, 1000, 8, 2, 64, 64};
      d.dt_max = dmax;
      d.zero_D = true;
      check_forward(d);
    }
  }
  Case e{1, 4096, 128, 8, 64, 128};
  e.doc = false;
  e.dt_max = 0.05f;
  e.zero_D = true;
  check_forward(e);
}

// The chunk-gradient kernels of the backward (HLM_SSD_BWD_VARIANT: 1 the wgmma kernel, the default
// on sm_90a for P = 64; 2 its warp-specialised form; 3 it with warpgroup 0 pipelined over two
// heads; 4 that with warpgroup 1 alone issuing the copies; 0 the mma.sync kernel): odd lengths,
// documents, h0, column slices, 1 / 2 / 3 / 16 heads per group, both N, segment splits.
TEST(SsdCuda, BackwardChunkKernels) {
  HLM_REQUIRE_GPU();
  // Both N, several heads per group, and a segment split: run for every kernel and states layout.
  auto common_cases = [] {
    check_backward({2, 333, 8, 2, 64, 128});
    check_backward({2, 300, 16, 4, 64, 64});
    ScopedEnv segs("HLM_SSD_SEG_CHUNKS", "3");
    check_backward({2, 1000, 8, 2, 64, 128});
  };
  for (const char* v : {"1", "2", "3", "4", "0"}) {
    SCOPED_TRACE(std::string("HLM_SSD_BWD_VARIANT=") + v);
    ScopedEnv variant("HLM_SSD_BWD_VARIANT", v);
    common_cases();
    check_backward({2, 333, 6, 2, 64, 128});    // 3 per group
    check_backward({1, 300, 3, 3, 64, 128});    // 1 per group
    check_backward({1, 1000, 32, 2, 64, 128});  // 16 per group
    Case c{1, 200, 4, 2, 64, 128};
    c.slice = true;
    check_backward(c);
    Case n{1, 256, 4, 1, 64, 128};
    n.doc = n.h0 = false;
    check_backward(n);
  }
  // The sweeps' states row-major (HLM_SSD_CORE_STATES=0; the default is core-matrix order), read
  // by every wgmma kernel.
  ScopedEnv row_major("HLM_SSD_CORE_STATES", "0");
  for (const char* v : {"1", "2", "3", "4"}) {
    SCOPED_TRACE(std::string("HLM_SSD_CORE_STATES=0 HLM_SSD_BWD_VARIANT=") + v);
    ScopedEnv variant("HLM_SSD_BWD_VARIANT", v);
    common_cases();
  }
}

// --- the generic path (any P, N, fp32 activations) ---

TEST(SsdCuda, GenericTinyShape) {
  HLM_REQUIRE_GPU();
  Case c{2, 37, 4, 2, 8, 16};
  c.act = DType::F32;
  c.tol = 1e-4;
  check_forward(c);
  check_backward(c);
}
TEST(SsdCuda, GenericOddBf16) {  // P = 80 (Nemotron Nano v2 head dim) takes the generic path
  HLM_REQUIRE_GPU();
  check_forward({1, 130, 4, 2, 80, 32});
  check_backward({1, 130, 4, 2, 80, 32});
}
TEST(SsdCuda, GenericFp32At8BHeadShape) {
  HLM_REQUIRE_GPU();
  Case c{1, 200, 8, 2, 64, 128};
  c.act = DType::F32;
  c.tol = 1e-4;
  check_forward(c);
  check_backward(c);
}

// --- decode step ---

void check_step(int64_t B, int64_t H, int64_t G, int64_t P, int64_t N, DType act, double tol, uint64_t seed) {
  HostTensor x = rounded(act, {B, H, P}, seed + 1, 1.0);
  HostTensor Bm = rounded(act, {B, G, N}, seed + 2, 1.0 / std::sqrt(double(N)));
  HostTensor Cm = rounded(act, {B, G, N}, seed + 3, 1.0 / std::sqrt(double(N)));
  HostTensor dt = raw_dt({B, H}, seed + 4);
  HostTensor A_log(DType::F32, {H}), D(DType::F32, {H}), bias(DType::F32, {H});
  test::fill_uniform(A_log, seed + 5, 0.0, 2.5);
  test::fill_normal(D, seed + 6, 1.0);
  test::fill_uniform(bias, seed + 7, -1.0, 0.5);
  HostTensor state0(DType::F32, {B, H, P, N}), st_ref(DType::F32, {B, H, P, N}), y_ref(DType::F32, {B, H, P});
  test::fill_normal(state0, seed + 8, 0.5);
  for (int64_t i = 0; i < state0.t.numel(); ++i) st_ref.set(i, state0.get(i));
  SsdStepParams pc{x.t, dt.t, A_log.t, Bm.t, Cm.t, D.t, bias.t};
  pc.dt_min = 0.001f;
  pc.dt_max = 0.5f;
  ssd_step(pc, st_ref.t, y_ref.t);

  Dev dx = upload(x, act), ddt = upload(dt, DType::BF16), dA = upload(A_log, DType::F32), dB = upload(Bm, act),
      dC = upload(Cm, act), dD = upload(D, DType::F32), dbias = upload(bias, DType::F32);
  SsdStepParams pd{dx.t, ddt.t, dA.t, dB.t, dC.t, dD.t, dbias.t};
  pd.dt_min = pc.dt_min;
  pd.dt_max = pc.dt_max;
  HostTensor first_y, first_state;
  for (int run = 0; run < 2; ++run) {
    Dev st = upload(state0, DType::F32), y = dev_alloc(act, {B, H, P});
    ssd_step(pd, st.t, y.t);
    HostTensor yh = download(y.t), sh = download(st.t);
    if (run == 0) {
      expect_close("y", yh, y_ref, tol);
      expect_close("state", sh, st_ref, tol);
      first_y = std::move(yh);
      first_state = std::move(sh);
    } else {
      EXPECT_TRUE(bitwise_equal(yh, first_y)) << "ssd_step y differs between two runs";
      EXPECT_TRUE(bitwise_equal(sh, first_state)) << "ssd_step state differs between two runs";
    }
  }
}

TEST(SsdCuda, StepBatch1And32At8BShape) {
  HLM_REQUIRE_GPU();
  check_step(1, 128, 8, 64, 128, DType::BF16, 1e-2, 11);
  check_step(32, 128, 8, 64, 128, DType::BF16, 1e-2, 12);
}
TEST(SsdCuda, StepOddShapes) {
  HLM_REQUIRE_GPU();
  check_step(3, 6, 3, 5, 16, DType::F32, 1e-5, 13);  // vector path, 4 lanes per row
  check_step(2, 4, 2, 3, 10, DType::F32, 1e-5, 14);  // N not a multiple of 4: one thread per row
}


// --- fused decode step of the mixer (conv update + state update + gated norm) ---

struct MixCase {
  int64_t B, H, G, P, N;
  int64_t norm_group = 0;  // 0: the SSM group (H/G heads)
  bool fused = true;       // whether the CUDA path must take the fused kernel
  const char* hpb = "";    // HLM_MAMBA_STEP_HPB for the call ("" = default)
  int64_t extra_cols = 0;  // zx / out as column views of wider rows
  uint64_t seed = 1;
};

void check_mamba_step(const MixCase& c) {
  const int64_t Di = c.H * c.P, Cd = Di + 2 * c.G * c.N, W = Di + Cd + c.H, K = 4;
  const int64_t ng = c.norm_group ? c.norm_group : Di / c.G;
  const uint64_t s = c.seed * 1000;
  const DType act = DType::BF16;
  HostTensor conv_w = rounded(act, {Cd, K}, s + 1, 0.5), conv_b = rounded(act, {Cd}, s + 2, 0.2);
  HostTensor norm_w = rounded(act, {Di}, s + 3, 1.0);
  HostTensor A_log(DType::F32, {c.H}), D(DType::F32, {c.H}), bias(DType::F32, {c.H});
  test::fill_uniform(A_log, s + 4, 0.0, 2.5);
  test::fill_normal(D, s + 5, 1.0);
  test::fill_uniform(bias, s + 6, -1.0, 0.5);
  HostTensor conv0 = rounded(act, {c.B, Cd, K - 1}, s + 7, 1.0);
  HostTensor ssm0(DType::F32, {c.B, c.H, c.P, c.N});
  test::fill_normal(ssm0, s + 8, 0.5);
  // Three tokens in a row: the conv state's shift and the state's decay are checked across steps.
  constexpr int kSteps = 3;
  std::vector<HostTensor> zx;
  for (int t = 0; t < kSteps; ++t) {
    HostTensor z = rounded(act, {c.B, W}, s + 10 + t, 1.0);
    for (int64_t b = 0; b < c.B; ++b)  // raw dt in [-2.5, 1]: both clamps are crossed
      for (int64_t h = 0; h < c.H; ++h) z.set(b * W + Di + Cd + h, -2.5 + 3.5 * double((b * 7 + h * 13 + t * 5) % 17) / 16.0);
    round_to(z, act);
    zx.push_back(std::move(z));
  }
  auto params = [&](const Tensor& zxt, const Tensor& cw, const Tensor& cb, const Tensor& a, const Tensor& d,
                    const Tensor& bi, const Tensor& nw) {
    MambaStepParams p;
    p.zx = zxt;
    p.conv_w = cw;
    p.conv_b = cb;
    p.A_log = a;
    p.D = d;
    p.dt_bias = bi;
    p.norm_w = nw;
    p.heads = c.H;
    p.head_dim = c.P;
    p.groups = c.G;
    p.state_dim = c.N;
    p.norm_group = ng;
    p.norm_eps = 1e-5f;
    p.dt_min = 0.001f;
    p.dt_max = 0.5f;
    return p;
  };
  // CPU reference (F32) over the same rounded values.
  HostTensor conv_ref(DType::F32, {c.B, Cd, K - 1}), ssm_ref(DType::F32, {c.B, c.H, c.P, c.N});
  for (int64_t i = 0; i < conv0.t.numel(); ++i) conv_ref.set(i, conv0.get(i));
  for (int64_t i = 0; i < ssm0.t.numel(); ++i) ssm_ref.set(i, ssm0.get(i));
  std::vector<HostTensor> out_ref;
  {
    HostTensor xbc(DType::F32, {c.B, Cd}), y(DType::F32, {c.B, Di}), rstd(DType::F32, {c.B, Di / ng});
    for (int t = 0; t < kSteps; ++t) {
      HostTensor o(DType::F32, {c.B, Di});
      mamba_step(params(zx[static_cast<size_t>(t)].t, conv_w.t, conv_b.t, A_log.t, D.t, bias.t, norm_w.t), conv_ref.t,
                 ssm_ref.t, MambaStepWork{xbc.t, y.t, rstd.t}, o.t);
      out_ref.push_back(std::move(o));
    }
  }
  ScopedEnv env("HLM_MAMBA_STEP_HPB", c.hpb), fuse("HLM_MAMBA_STEP", "1");  // the fused kernel is opt-in
  Dev dcw = upload(conv_w, act), dcb = upload(conv_b, act), dnw = upload(norm_w, act), dA = upload(A_log, DType::F32),
      dD = upload(D, DType::F32), dbias = upload(bias, DType::F32);
  std::vector<HostTensor> first;
  for (int run = 0; run < 2; ++run) {
    Dev conv = upload(conv0, act), ssm = upload(ssm0, DType::F32);
    Dev xbc = dev_alloc(act, {c.B, Cd}), y = dev_alloc(act, {c.B, Di}), rstd = dev_alloc(DType::F32, {c.B, Di / ng});
    for (int t = 0; t < kSteps; ++t) {
      Dev dzx = upload(zx[static_cast<size_t>(t)], act, c.extra_cols, c.extra_cols / 2);
      Dev out = dev_alloc(act, {c.B, Di}, c.extra_cols, c.extra_cols / 3);
      mamba_step(params(dzx.t, dcw.t, dcb.t, dA.t, dD.t, dbias.t, dnw.t), conv.t, ssm.t,
                 MambaStepWork{xbc.t, y.t, rstd.t}, out.t);
      HostTensor o = download(out.t);
      const std::string what = "out, step " + std::to_string(t);
      if (run == 0) {
        expect_close(what.c_str(), o, out_ref[static_cast<size_t>(t)], 2e-2);
        first.push_back(std::move(o));
      } else {
        EXPECT_TRUE(bitwise_equal(o, first[static_cast<size_t>(t)])) << what << " differs between two runs";
      }
    }
    if (run == 0) {
      expect_close("conv_state", download(conv.t), conv_ref, 1e-6);
      expect_close("ssm_state", download(ssm.t), ssm_ref, 1e-2);
    }
    // The fused kernel never writes the unfused path's work space: still poisoned iff it ran.
    const HostTensor xh = download(xbc.t);
    bool untouched = true;
    for (int64_t i = 0; i < xh.t.numel(); ++i) untouched = untouched && std::isnan(xh.get(i));
    EXPECT_EQ(untouched, c.fused) << (c.fused ? "the fused kernel did not run" : "the unfused path did not run");
  }
}

TEST(SsdCuda, MambaStepFused8BGroups) {
  HLM_REQUIRE_GPU();
  // 8 heads per group: one 8-block cluster per (row, group), a head per block.
  check_mamba_step({3, 16, 2, 64, 128});
  // 16 heads per group (the 8B mixer's): 2 heads per block by default, 16-block clusters forced.
  check_mamba_step({1, 32, 2, 64, 128, 0, true, "", 24, 2});
  check_mamba_step({2, 32, 2, 64, 128, 0, true, "1", 0, 3});
}
TEST(SsdCuda, MambaStepFusedOtherInstantiations) {
  HLM_REQUIRE_GPU();
  check_mamba_step({2, 8, 4, 64, 64, 0, true, "", 8, 4});   // 2 heads per group
  check_mamba_step({2, 4, 1, 128, 128, 0, true, "", 0, 5});  // P = 128
}
TEST(SsdCuda, MambaStepDefaultIsUnfused) {
  HLM_REQUIRE_GPU();
  ScopedEnv off("HLM_MAMBA_STEP", "");  // unset: the default
  const int64_t B = 1, H = 16, G = 2, P = 64, N = 128, Di = H * P, Cd = Di + 2 * G * N;
  Dev zx = dev_alloc(DType::BF16, {B, Di + Cd + H}), cw = dev_alloc(DType::BF16, {Cd, 4}),
      nw = dev_alloc(DType::BF16, {Di}), al = dev_alloc(DType::F32, {H});
  Dev conv = dev_alloc(DType::BF16, {B, Cd, 3}), ssm = dev_alloc(DType::F32, {B, H, P, N});
  Dev xbc = dev_alloc(DType::BF16, {B, Cd}), y = dev_alloc(DType::BF16, {B, Di}), rstd = dev_alloc(DType::F32, {B, 2}),
      out = dev_alloc(DType::BF16, {B, Di});
  for (Dev* d : {&zx, &cw, &nw, &al, &conv, &ssm}) device_memset(d->buf.data(), Device::CUDA, 0, d->buf.size());
  MambaStepParams p;
  p.zx = zx.t;
  p.conv_w = cw.t;
  p.A_log = al.t;
  p.norm_w = nw.t;
  p.heads = H;
  p.head_dim = P;
  p.groups = G;
  p.state_dim = N;
  p.norm_group = Di / G;
  mamba_step(p, conv.t, ssm.t, MambaStepWork{xbc.t, y.t, rstd.t}, out.t);
  const HostTensor xh = download(xbc.t);
  for (int64_t i = 0; i < xh.t.numel(); ++i) ASSERT_FALSE(std::isnan(xh.get(i))) << "work.xbc unwritten: the fused kernel ran";
}
TEST(SsdCuda, MambaStepUnfusedFallbacks) {
  HLM_REQUIRE_GPU();
  check_mamba_step({2, 6, 3, 16, 32, 0, false, "", 0, 6});          // P = 16: no fused instantiation
  check_mamba_step({2, 16, 2, 64, 128, 64, false, "", 0, 7});       // norm group of one head, not the SSM group
  check_mamba_step({1, 128, 2, 64, 128, 0, false, "", 0, 8});       // 64 heads per group: a cluster would pass 16
}

}  // namespace
}  // namespace hlm
