// Checks hlm::cuda::conv1d_silu_* on the host emulation against a float64 reference.
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "ops/conv1d.h"

using namespace hlm;

namespace {

int g_fail = 0;

struct Buf {
  std::vector<unsigned char> mem;
  Tensor t;  // view (may be a column slice of the allocation)
  DType dt = DType::F32;
  Buf(DType d, std::vector<int64_t> shape) : dt(d) {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    mem.assign(size_t(n) * dtype_size(d) + 64, 0xFF);
    t = Tensor(mem.data(), d, Device::CUDA, Shape(shape.data(), shape.size()));
  }
};
double getv(const Tensor& t, int64_t off) {
  if (t.dtype == DType::F32) return t.ptr<float>()[off];
  if (t.dtype == DType::I32) return t.ptr<int32_t>()[off];
  return bf16_bits_to_f32(t.ptr<uint16_t>()[off]);
}
void setv(const Tensor& t, int64_t off, double v) {
  if (t.dtype == DType::F32) t.ptr<float>()[off] = float(v);
  else t.ptr<uint16_t>()[off] = f32_to_bf16_bits(float(v));
}
// element (b, t, c) of a [B,T,C] view
int64_t off3(const Tensor& t, int64_t b, int64_t i, int64_t c) { return b * t.stride[0] + i * t.stride[1] + c * t.stride[2]; }

double rel(const std::vector<double>& a, const std::vector<double>& r) {
  double num = 0, den = 0;
  for (size_t i = 0; i < r.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (a[i] - r[i]) * (a[i] - r[i]);
    den += r[i] * r[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}
void report(const char* what, double e, double tol) {
  bool ok = e <= tol;
  if (!ok) ++g_fail;
  std::printf("  %-8s rel err %.3e %s\n", what, e, ok ? "ok" : "FAIL");
}

// FNV-1a over the outputs: equal across EMU_SCHED orders (no order-dependent sums).
uint64_t hash_of(uint64_t h, const std::vector<double>& v) {
  for (double d : v) {
    unsigned char b[8];
    std::memcpy(b, &d, 8);
    for (unsigned char c : b) h = (h ^ c) * 1099511628211ull;
  }
  return h;
}

// with_dx false: the backward is asked for dw and dbias only (dx undefined).
void run(int B, int T, int C, int K, DType dt, bool slice, bool doc, double tol, bool with_dx = true) {
  const char* strip = std::getenv("HLM_CONV_STRIP");
  std::printf("conv1d: B=%d T=%d C=%d K=%d %s slice=%d doc=%d dx=%d strip=%s\n", B, T, C, K, dtype_name(dt), slice, doc,
              with_dx, strip ? strip : "auto");
  std::mt19937 rng(unsigned(B * 1000 + T * 10 + C + K));
  std::normal_distribution<double> nd(0, 1);
  const int W = slice ? C + 24 : C, c_off = slice ? 8 : 0;
  Buf xa(dt, {B, T, W}), ya(dt, {B, T, W}), dya(dt, {B, T, W}), dxa(dt, {B, T, W});
  Tensor x = slice ? xa.t.slice(2, c_off, C) : xa.t, y = slice ? ya.t.slice(2, c_off, C) : ya.t;
  Tensor dy = slice ? dya.t.slice(2, c_off, C) : dya.t, dx = slice ? dxa.t.slice(2, c_off, C) : dxa.t;
  Buf w(DType::F32, {C, K}), bias(DType::F32, {C}), docb(DType::I32, {B, T}), dw(DType::F32, {C, K}), db(DType::F32, {C});
  std::vector<double> X(size_t(B) * T * C), DY(X.size()), Wv(size_t(C) * K), Bv(C);
  std::vector<int> D(size_t(B) * T, 0);
  auto rnd = [&](double s) { return s * nd(rng); };
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < C; ++c) {
        size_t i = (size_t(b) * T + t) * C + c;
        setv(x, off3(x, b, t, c), rnd(1));
        X[i] = getv(x, off3(x, b, t, c));
        setv(dy, off3(dy, b, t, c), rnd(1));
        DY[i] = getv(dy, off3(dy, b, t, c));
      }
  for (int i = 0; i < C * K; ++i) { Wv[i] = float(rnd(0.5)); setv(w.t, i, Wv[i]); }
  for (int c = 0; c < C; ++c) { Bv[c] = float(rnd(0.5)); setv(bias.t, c, Bv[c]); }
  for (int c = 0; c < C * K; ++c) setv(dw.t, c, 0.25);
  for (int c = 0; c < C; ++c) setv(db.t, c, -0.5);
  if (doc)
    for (int b = 0; b < B; ++b) {
      int id = 0;
      for (int t = 0; t < T; ++t) {
        if (t == 5 || t == 64 || t == 65 || t == 100) ++id;
        D[size_t(b) * T + t] = id;                               // segment (count of starts)
        docb.t.ptr<int32_t>()[size_t(b) * T + t] = id % 2;        // ids repeat: starts decide
      }
    }
  // reference
  std::vector<double> Y(X.size()), DX(X.size(), 0), DW(size_t(C) * K, 0), DB(C, 0);
  for (int b = 0; b < B; ++b)
    for (int c = 0; c < C; ++c)
      for (int t = 0; t < T; ++t) {
        double z = Bv[c];
        for (int k = 0; k < K; ++k) {
          int pos = t - K + 1 + k;
          if (pos >= 0 && D[size_t(b) * T + pos] == D[size_t(b) * T + t]) z += Wv[size_t(c) * K + k] * X[(size_t(b) * T + pos) * C + c];
        }
        double s = 1 / (1 + std::exp(-z));
        size_t i = (size_t(b) * T + t) * C + c;
        Y[i] = z * s;
        double dz = DY[i] * s * (1 + z * (1 - s));
        DB[c] += dz;
        for (int k = 0; k < K; ++k) {
          int pos = t - K + 1 + k;
          if (pos >= 0 && D[size_t(b) * T + pos] == D[size_t(b) * T + t]) {
            DW[size_t(c) * K + k] += dz * X[(size_t(b) * T + pos) * C + c];
            DX[(size_t(b) * T + pos) * C + c] += dz * Wv[size_t(c) * K + k];
          }
        }
      }
  Tensor docT = doc ? docb.t : Tensor();
  cuda::conv1d_silu_forward(x, w.t, bias.t, docT, y);
  cuda::conv1d_silu_backward(dy, x, w.t, bias.t, docT, with_dx ? dx : Tensor(), dw.t, db.t);
  std::vector<double> Yg(X.size()), DXg(X.size()), DWg(size_t(C) * K), DBg(C);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int c = 0; c < C; ++c) {
        size_t i = (size_t(b) * T + t) * C + c;
        Yg[i] = getv(y, off3(y, b, t, c));
        DXg[i] = getv(dx, off3(dx, b, t, c));
      }
  for (int i = 0; i < C * K; ++i) DWg[i] = getv(dw.t, i) - 0.25;
  for (int c = 0; c < C; ++c) DBg[c] = getv(db.t, c) + 0.5;
  report("y", rel(Yg, Y), tol);
  if (with_dx) report("dx", rel(DXg, DX), tol);
  report("dw", rel(DWg, DW), tol);
  report("dbias", rel(DBg, DB), tol);
  std::printf("  hash     %016llx\n", static_cast<unsigned long long>(hash_of(hash_of(hash_of(hash_of(1469598103934665603ull, Yg), DXg), DWg), DBg)));
  if (slice) {  // columns outside the slice stay untouched (poison pattern)
    bool ok = true;
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T; ++t)
        for (int c = 0; c < W; ++c)
          if (c < c_off || c >= c_off + C) {
            size_t o = size_t(off3(ya.t, b, t, c)) * dtype_size(dt);
            for (size_t e = 0; e < dtype_size(dt); ++e)
              if (ya.mem[o + e] != 0xFF || dxa.mem[o + e] != 0xFF) ok = false;
          }
    if (!ok) ++g_fail;
    std::printf("  outside   %s\n", ok ? "untouched ok" : "WRITTEN (FAIL)");
  }
  // decode: state from the first T-3 positions, then steps over the last 3 must match y
  if (!doc && T > 4) {
    const int T0 = T - 3;
    Buf st(DType::F32, {B, C, K - 1}), xs(dt, {B, C}), ys(dt, {B, C});
    Buf xpre(dt, {B, T0, C});
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < T0; ++t)
        for (int c = 0; c < C; ++c) setv(xpre.t, (size_t(b) * T0 + t) * C + c, X[(size_t(b) * T + t) * C + c]);
    cuda::conv1d_state_from_sequence(xpre.t, Tensor(), st.t);
    std::vector<double> Ys, Yr;
    for (int t = T0; t < T; ++t) {
      for (int b = 0; b < B; ++b)
        for (int c = 0; c < C; ++c) setv(xs.t, size_t(b) * C + c, X[(size_t(b) * T + t) * C + c]);
      cuda::conv1d_silu_update(xs.t, w.t, bias.t, st.t, ys.t);
      for (int b = 0; b < B; ++b)
        for (int c = 0; c < C; ++c) {
          Ys.push_back(getv(ys.t, size_t(b) * C + c));
          Yr.push_back(Y[(size_t(b) * T + t) * C + c]);
        }
    }
    report("update", rel(Ys, Yr), tol);
  }
  if (doc) {  // state after a prefill that ends inside a document
    Buf st(DType::F32, {B, C, K - 1});
    cuda::conv1d_state_from_sequence(x, docT, st.t);
    double worst = 0;
    for (int b = 0; b < B; ++b)
      for (int c = 0; c < C; ++c)
        for (int j = 0; j < K - 1; ++j) {
          int pos = T - K + 1 + j;
          double ref = (pos >= 0 && D[size_t(b) * T + pos] == D[size_t(b) * T + T - 1]) ? X[(size_t(b) * T + pos) * C + c] : 0;
          worst = std::max(worst, std::fabs(getv(st.t, (size_t(b) * C + c) * (K - 1) + j) - ref));
        }
    report("state", worst, 1e-6);
  }
}

}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  run(2, 150, 48, 4, DType::BF16, true, true, 1e-2);
  run(2, 150, 48, 4, DType::BF16, false, false, 1e-2);
  run(1, 70, 12, 4, DType::F32, false, true, 1e-5);
  run(1, 70, 13, 3, DType::BF16, false, false, 1e-2);
  run(2, 33, 16, 2, DType::F32, true, true, 1e-5);
  // Several channel blocks (forward 2048 bf16 / 1024 f32 channels per block, backward half),
  // the last one partly idle; dw and dbias without dx.
  run(1, 45, 2056, 4, DType::BF16, true, true, 1e-2);
  run(2, 40, 1036, 4, DType::F32, false, true, 1e-5);
  run(1, 64, 1040, 3, DType::BF16, false, false, 1e-2, false);
  // Forced strip lengths: many strips, partial ring groups, strips shorter than the K-1 halo,
  // documents across strip edges, one strip per row.
  for (const char* strip : {"1", "2", "3", "5", "7", "33", "1000"}) {
    setenv("HLM_CONV_STRIP", strip, 1);
    run(2, 150, 48, 4, DType::BF16, true, true, 1e-2);
    run(1, 70, 12, 4, DType::F32, false, true, 1e-5);
    run(2, 33, 16, 2, DType::F32, true, true, 1e-5);
    run(1, 70, 16, 3, DType::BF16, false, false, 1e-2);
  }
  unsetenv("HLM_CONV_STRIP");
  std::printf("%s\n", g_fail ? "FAILED" : "all ok");
  return g_fail ? 1 : 0;
}
