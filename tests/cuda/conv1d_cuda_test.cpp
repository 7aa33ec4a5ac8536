// CUDA conv1d + SiLU (forward, backward, decode update, state from a prefill) matches its CPU twin
// on random inputs: packed documents, column-slice views, vector and scalar channel paths,
// kernel sizes 2..4; outputs are poisoned first; two runs are bitwise equal. The vector kernels'
// time strips are forced short by HLM_CONV_STRIP in one case (strip edges, partial ring groups).
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/memory.h"
#include "ops/conv1d.h"
#include "test_util.h"

namespace hlm {
namespace {

using test::HostTensor;

struct Dev {
  Buffer buf;
  Tensor t;
};

// Device [.., cols] tensor inside a [.., cols + extra] allocation at column `off`, poisoned.
Dev dev_alloc(DType dtype, std::vector<int64_t> shape, int64_t extra = 0, int64_t off = 0) {
  std::vector<int64_t> full = shape;
  full.back() += extra;
  int64_t n = 1;
  for (int64_t s : full) n *= s;
  Dev d;
  d.buf = Buffer(Device::CUDA, static_cast<size_t>(std::max<int64_t>(n, 1)) * dtype_size(dtype));
  device_memset(d.buf.data(), Device::CUDA, 0xFF, d.buf.size());
  Tensor t = d.buf.as(dtype, Shape(full.data(), full.size()));
  d.t = extra ? t.slice(t.ndim - 1, off, shape.back()) : t;
  return d;
}
Dev upload(const HostTensor& h, DType dtype, int64_t extra = 0, int64_t off = 0) {
  std::vector<int64_t> shape(h.t.shape.begin(), h.t.shape.begin() + h.t.ndim);
  HostTensor conv(dtype, shape);
  for (int64_t i = 0; i < h.t.numel(); ++i) conv.set(i, h.get(i));
  Dev d = dev_alloc(dtype, shape, extra, off);
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
HostTensor rounded(DType act, std::vector<int64_t> shape, uint64_t seed, double stddev) {
  HostTensor h(DType::F32, shape), r(act, shape);
  test::fill_normal(h, seed, stddev);
  for (int64_t i = 0; i < h.t.numel(); ++i) r.set(i, h.get(i));
  for (int64_t i = 0; i < h.t.numel(); ++i) h.set(i, r.get(i));
  return h;
}
void expect_close(const char* what, const HostTensor& got, const HostTensor& ref, double tol) {
  const double e = test::norm_rel_error(got, ref);
  EXPECT_LE(e, tol) << what << ": ‖out − ref‖/‖ref‖ = " << e;
}

struct Case {
  int64_t B, T, C, K;
  DType act = DType::BF16;
  bool doc = true;
  int64_t extra = 0;     // x, y as column slices of a [B,T,C+extra] activation
  int64_t dx_extra = 0;  // dx as a column slice of a [B,T,C+dx_extra] buffer
  bool with_dx = true;   // false: the backward computes dw and dbias only
  double tol = 1e-2;
  uint64_t seed = 1;
};

void check(const Case& c) {
  const uint64_t s = c.seed * 10;
  HostTensor x = rounded(c.act, {c.B, c.T, c.C}, s + 1, 1.0), dy = rounded(c.act, {c.B, c.T, c.C}, s + 2, 1.0);
  HostTensor w(DType::F32, {c.C, c.K}), bias(DType::F32, {c.C}), acc0(DType::F32, {c.C * c.K});
  test::fill_normal(w, s + 3, 0.5);
  test::fill_normal(bias, s + 4, 0.5);
  test::fill_normal(acc0, s + 5, 1.0);
  HostTensor doc(DType::I32, {c.B, c.T});
  for (int64_t b = 0; b < c.B; ++b) {
    int id = 0;
    for (int64_t t = 0; t < c.T; ++t) {
      if (c.doc && (t == 3 || t == 64 || t == 65 || t % 97 == 50)) ++id;
      doc.set(b * c.T + t, id);
    }
  }
  Tensor doc_cpu = c.doc ? doc.t : Tensor();
  // CPU reference
  HostTensor y_ref(DType::F32, {c.B, c.T, c.C}), dx_ref(DType::F32, {c.B, c.T, c.C});
  HostTensor dw_ref(DType::F32, {c.C, c.K}), db_ref(DType::F32, {c.C});
  for (int64_t i = 0; i < c.C * c.K; ++i) dw_ref.set(i, acc0.get(i));
  for (int64_t i = 0; i < c.C; ++i) db_ref.set(i, acc0.get(i));
  conv1d_silu_forward(x.t, w.t, bias.t, doc_cpu, y_ref.t);
  conv1d_silu_backward(dy.t, x.t, w.t, bias.t, doc_cpu, dx_ref.t, dw_ref.t, db_ref.t);

  Dev dxin = upload(x, c.act, c.extra, c.extra / 2), ddy = upload(dy, c.act), dw_ = upload(w, DType::F32),
      dbias = upload(bias, DType::F32), ddoc = upload(doc, DType::I32);
  Tensor doc_dev = c.doc ? ddoc.t : Tensor();
  HostTensor first[4];
  for (int run = 0; run < 2; ++run) {
    Dev y = dev_alloc(c.act, {c.B, c.T, c.C}, c.extra, c.extra / 2),
        dx = dev_alloc(c.act, {c.B, c.T, c.C}, c.dx_extra, c.dx_extra / 2);
    HostTensor dw0(DType::F32, {c.C, c.K}), db0(DType::F32, {c.C});
    for (int64_t i = 0; i < c.C * c.K; ++i) dw0.set(i, acc0.get(i));
    for (int64_t i = 0; i < c.C; ++i) db0.set(i, acc0.get(i));
    Dev dw = upload(dw0, DType::F32), db = upload(db0, DType::F32);
    conv1d_silu_forward(dxin.t, dw_.t, dbias.t, doc_dev, y.t);
    conv1d_silu_backward(ddy.t, dxin.t, dw_.t, dbias.t, doc_dev, c.with_dx ? dx.t : Tensor(), dw.t, db.t);
    HostTensor out[4] = {download(y.t), download(dx.t), download(dw.t), download(db.t)};
    if (run == 0) {
      expect_close("y", out[0], y_ref, c.tol);
      if (c.with_dx) expect_close("dx", out[1], dx_ref, c.tol);
      expect_close("dw", out[2], dw_ref, c.tol);
      expect_close("dbias", out[3], db_ref, c.tol);
      for (int i = 0; i < 4; ++i) first[i] = std::move(out[i]);
    } else {
      for (int i = 0; i < 4; ++i) EXPECT_TRUE(bitwise_equal(out[i], first[i])) << "output " << i << " differs between runs";
    }
  }

  // Decode: state from the prefix [0, T-3) of each row, then three update steps.
  if (c.T > 4) {
    const int64_t T0 = c.T - 3;
    HostTensor xp(DType::F32, {c.B, T0, c.C}), dp(DType::I32, {c.B, T0});
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t t = 0; t < T0; ++t) {
        dp.set(b * T0 + t, doc.get(b * c.T + t));
        for (int64_t ch = 0; ch < c.C; ++ch) xp.set((b * T0 + t) * c.C + ch, x.get((b * c.T + t) * c.C + ch));
      }
    HostTensor st_ref(DType::F32, {c.B, c.C, c.K - 1});
    conv1d_state_from_sequence(xp.t, c.doc ? dp.t : Tensor(), st_ref.t);
    Dev dxp = upload(xp, c.act), ddp = upload(dp, DType::I32), st = dev_alloc(DType::F32, {c.B, c.C, c.K - 1});
    conv1d_state_from_sequence(dxp.t, c.doc ? ddp.t : Tensor(), st.t);
    expect_close("state_from_sequence", download(st.t), st_ref, 1e-6);
    for (int64_t t = T0; t < c.T; ++t) {
      HostTensor xt(DType::F32, {c.B, c.C}), y_cpu(DType::F32, {c.B, c.C});
      for (int64_t b = 0; b < c.B; ++b)
        for (int64_t ch = 0; ch < c.C; ++ch) xt.set(b * c.C + ch, x.get((b * c.T + t) * c.C + ch));
      conv1d_silu_update(xt.t, w.t, bias.t, st_ref.t, y_cpu.t);
      Dev dxt = upload(xt, c.act), yt = dev_alloc(c.act, {c.B, c.C});
      conv1d_silu_update(dxt.t, dw_.t, dbias.t, st.t, yt.t);
      expect_close("update y", download(yt.t), y_cpu, c.tol);
      expect_close("update state", download(st.t), st_ref, 1e-6);
    }
  }
}

TEST(Conv1dCuda, Bf16VectorPathDocs) {
  HLM_REQUIRE_GPU();
  check({2, 333, 256, 4});
}
TEST(Conv1dCuda, ColumnSliceOfXbc) {
  HLM_REQUIRE_GPU();
  Case c{1, 200, 320, 4};
  c.extra = 64;  // x inside a wider activation at column 32
  check(c);
}
TEST(Conv1dCuda, Fp32AndOddChannels) {
  HLM_REQUIRE_GPU();
  Case a{2, 130, 12, 4};
  a.act = DType::F32;
  a.tol = 1e-5;
  check(a);
  Case b{1, 70, 13, 3};  // 13 channels: scalar path
  b.doc = false;
  check(b);
  Case k2{2, 50, 24, 2};
  check(k2);
}
TEST(Conv1dCuda, TrainingLayoutSeveralChannelBlocks) {
  HLM_REQUIRE_GPU();
  // x a column slice of in_proj's output, dx a slice of its gradient, dy contiguous (the 1.43B
  // training step's layout); 2056 channels: 2 forward and 3 backward channel blocks, the last
  // one mostly idle.
  Case c{2, 300, 2056, 4};
  c.extra = 4160;
  c.dx_extra = 4160;
  c.seed = 3;
  check(c);
  Case p{1, 200, 1040, 4};  // dw and dbias only
  p.with_dx = false;
  check(p);
}
TEST(Conv1dCuda, ForcedShortStrips) {
  HLM_REQUIRE_GPU();
  for (const char* strip : {"1", "3", "7", "1000"}) {
    SCOPED_TRACE(std::string("HLM_CONV_STRIP=") + strip);
    setenv("HLM_CONV_STRIP", strip, 1);
    Case c{2, 133, 264, 4};
    c.extra = 64;
    c.dx_extra = 16;
    check(c);
    Case f{1, 70, 20, 3};
    f.act = DType::F32;
    f.tol = 1e-5;
    check(f);
  }
  unsetenv("HLM_CONV_STRIP");
}
TEST(Conv1dCuda, Mamba2Hybrid8BChannels) {  // conv over xBC: 8192 + 2*1024 channels
  HLM_REQUIRE_GPU();
  Case c{1, 1024, 10240, 4};
  c.seed = 8;
  check(c);
}

}  // namespace
}  // namespace hlm
