// Checks the core ops' own kernels (gemm_own.cu: GEMV and fallback GEMM; attention_decode.cu;
// norm.cu) on the host emulation against float64 references: odd sizes, row views, bias, split-K,
// determinism (bitwise equal reruns). Usage: core_emu_check [filter]
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "ops/cuda/attention_decode.cuh"
#include "ops/cuda/gemm_own.cuh"
#include "ops/norm.h"
#include "core/tensor.h"

using namespace hlm;

namespace {

int g_fail = 0;
std::string g_filter;

bool want(const std::string& name) { return g_filter.empty() || name.find(g_filter) != std::string::npos; }

void report(const std::string& what, double e, double tol) {
  const bool ok = e <= tol;
  if (!ok) ++g_fail;
  std::printf("  %-60s rel err %.3e %s\n", what.c_str(), e, ok ? "ok" : "FAIL");
}

// A host buffer standing in for device memory: [rows, ld] elements of dtype, 0xFF-poisoned, 256-byte
// aligned (+ `shift` bytes to test misaligned bases).
struct Mat {
  std::vector<unsigned char> mem;
  DType dt;
  int64_t rows, cols, ld;
  size_t shift;
  Mat(DType d, int64_t r, int64_t c, int64_t l, size_t sh = 0) : dt(d), rows(r), cols(c), ld(l), shift(sh) {
    mem.assign(size_t(std::max<int64_t>(r, 1) * l) * dtype_size(d) + 512, 0xFF);
  }
  unsigned char* base() {
    auto a = reinterpret_cast<uintptr_t>(mem.data());
    return reinterpret_cast<unsigned char*>((a + 255) / 256 * 256) + shift;
  }
  cuda::GemmMat gm() { return cuda::GemmMat{base(), rows, cols, ld, dt}; }
  double get(int64_t r, int64_t c) {
    unsigned char* p = base() + size_t(r * ld + c) * dtype_size(dt);
    if (dt == DType::F32) { float f; std::memcpy(&f, p, 4); return f; }
    uint16_t h;
    std::memcpy(&h, p, 2);
    return bf16_bits_to_f32(h);
  }
  void set(int64_t r, int64_t c, double v) {
    unsigned char* p = base() + size_t(r * ld + c) * dtype_size(dt);
    if (dt == DType::F32) { float f = float(v); std::memcpy(p, &f, 4); return; }
    uint16_t h = f32_to_bf16_bits(float(v));
    std::memcpy(p, &h, 2);
  }
  std::vector<unsigned char> bytes() { return std::vector<unsigned char>(base(), base() + size_t(rows * ld) * dtype_size(dt)); }
};

double rel(const std::vector<double>& a, const std::vector<double>& r) {
  double num = 0, den = 0;
  for (size_t i = 0; i < r.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (a[i] - r[i]) * (a[i] - r[i]);
    den += r[i] * r[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

std::mt19937 g_rng(1234);
double randn() { return std::normal_distribution<double>(0, 1)(g_rng); }

// y = alpha x wᵀ + beta y0 + bias through gemv (or gemm_fallback), vs float64.
void check_gemv(int64_t M, int64_t N, int64_t K, int64_t ldx, int64_t ldy, DType out, int bias_kind,
                float alpha, float beta, bool fallback) {
  const std::string name = std::string(fallback ? "fallback" : "gemv") + " M=" + std::to_string(M) +
                           " N=" + std::to_string(N) + " K=" + std::to_string(K) + " ldx=" + std::to_string(ldx) +
                           " ldy=" + std::to_string(ldy) + " out=" + dtype_name(out) + " bias=" + std::to_string(bias_kind) +
                           " beta=" + std::to_string(beta);
  if (!want(name)) return;
  Mat x(DType::BF16, M, K, ldx), w(DType::BF16, N, K, K), y(out, M, N, ldy);
  Mat bias(bias_kind == 2 ? DType::F32 : DType::BF16, 1, N, N);
  std::vector<double> Y0(size_t(M * N)), ref(size_t(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k) x.set(m, k, randn());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) w.set(n, k, randn());
  for (int64_t n = 0; n < N; ++n) bias.set(0, n, randn());
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      if (beta != 0.0f) y.set(m, n, randn());
      Y0[size_t(m * N + n)] = beta != 0.0f ? y.get(m, n) : 0.0;
    }
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k) s += x.get(m, k) * w.get(n, k);
      ref[size_t(m * N + n)] = alpha * s + beta * Y0[size_t(m * N + n)] + (bias_kind ? bias.get(0, n) : 0.0);
    }
  const void* bp = bias_kind ? bias.base() : nullptr;
  const DType bdt = bias.dt;
  Mat y2(out, M, N, ldy);  // same initial contents, for the determinism rerun
  std::memcpy(y2.base(), y.base(), size_t(M * ldy) * dtype_size(out));
  if (fallback) {
    cuda::gemm_fallback(x.gm(), false, w.gm(), true, y.gm(), alpha, beta, bp, bdt);
  } else {
    if (!cuda::gemv_applies(x.gm(), w.gm(), y.gm())) {
      std::printf("  %-60s does not apply: FAIL\n", name.c_str());
      ++g_fail;
      return;
    }
    cuda::gemv(x.gm(), w.gm(), y.gm(), alpha, beta, bp, bdt);
    cuda::gemv(x.gm(), w.gm(), y2.gm(), alpha, beta, bp, bdt);
  }
  std::vector<double> got(size_t(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) got[size_t(m * N + n)] = y.get(m, n);
  // Columns past N in the row view stay poisoned.
  bool untouched = true;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = N; n < ldy; ++n) {
      const unsigned char* p = y.base() + size_t(m * ldy + n) * dtype_size(out);
      if (p[0] != 0xFF) untouched = false;
    }
  if (!untouched) {
    std::printf("  %-60s wrote outside the view: FAIL\n", name.c_str());
    ++g_fail;
  }
  if (!fallback && y.bytes() != y2.bytes()) {
    std::printf("  %-60s rerun differs: FAIL\n", name.c_str());
    ++g_fail;
  }
  report(name, rel(got, ref), out == DType::F32 ? 2e-6 : 6e-3);
}

void check_gemm_fallback_layouts() {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const std::string name = "fallback layouts ta=" + std::to_string(ta) + " tb=" + std::to_string(tb);
      if (!want(name)) continue;
      const int64_t M = 21, N = 19, K = 37;
      Mat a(DType::BF16, ta ? K : M, ta ? M : K, (ta ? M : K) + 3), b(DType::BF16, tb ? N : K, tb ? K : N, (tb ? K : N) + 1);
      Mat c(DType::F32, M, N, N + 2);
      for (int64_t i = 0; i < a.rows; ++i)
        for (int64_t j = 0; j < a.cols; ++j) a.set(i, j, randn());
      for (int64_t i = 0; i < b.rows; ++i)
        for (int64_t j = 0; j < b.cols; ++j) b.set(i, j, randn());
      std::vector<double> ref(size_t(M * N)), got(ref.size());
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          c.set(m, n, randn());
          double s = 0;
          for (int64_t k = 0; k < K; ++k) s += (ta ? a.get(k, m) : a.get(m, k)) * (tb ? b.get(n, k) : b.get(k, n));
          ref[size_t(m * N + n)] = 0.5 * s + 2.0 * c.get(m, n);
        }
      cuda::gemm_fallback(a.gm(), ta, b.gm(), tb, c.gm(), 0.5f, 2.0f, nullptr, DType::F32);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) got[size_t(m * N + n)] = c.get(m, n);
      report(name, rel(got, ref), 2e-6);
    }
}

void check_gemm() {
  // Odd M ≤ 8, odd N (partial tiles), K multiple of 8 but not of 128 (partial steps), split-K.
  for (int64_t M : {1, 3, 8})
    for (DType out : {DType::BF16, DType::F32}) check_gemv(M, 75, 96, 96, 75, out, 1, 1.0f, 0.0f, false);
  check_gemv(5, 33, 200, 208, 40, DType::F32, 2, 1.0f, 0.0f, false);    // row views, f32 bias
  check_gemv(7, 131, 1032, 1040, 131, DType::F32, 0, 0.5f, 1.0f, false);  // beta, split-K, ragged step
  check_gemv(2, 40, 2048, 2048, 40, DType::BF16, 1, 1.0f, 0.0f, false);  // split-K over 4 tiles... many splits
  check_gemv(1, 17, 4096, 4096, 17, DType::F32, 0, 1.0f, 0.0f, false);   // max splits
  check_gemv(1, 300, 64, 64, 300, DType::F32, 1, 1.0f, 0.0f, false);     // K < one step
  check_gemv(1, 1001, 2056, 2064, 1001, DType::BF16, 2, 1.0f, 0.5f, false);  // M = 1 stream: ragged last chunk
  check_gemv(1, 37, 16392, 16400, 37, DType::F32, 1, 1.0f, 0.0f, false);    // M = 1 stream, one row per block
  check_gemv(6, 75, 96, 96, 75, DType::F32, 1, 1.0f, 0.0f, true);
  check_gemv(3, 33, 37, 41, 35, DType::BF16, 2, 1.0f, 0.5f, true);       // K not a multiple of 8
  check_gemm_fallback_layouts();
}

// Decode attention vs float64: q [B,Hq,E], caches [B,S,Hkv,E] (row views with extra columns),
// per-row [start, len) ranges including an empty one.
void check_decode(int B, int S, int Hq, int Hkv, int E, std::vector<int> starts, std::vector<int> lens) {
  const std::string name = "decode B=" + std::to_string(B) + " S=" + std::to_string(S) + " Hq=" + std::to_string(Hq) +
                           " Hkv=" + std::to_string(Hkv) + " E=" + std::to_string(E);
  if (!want(name)) return;
  const int64_t W = int64_t(Hkv) * E;
  Mat q(DType::BF16, B, int64_t(Hq) * E, int64_t(Hq) * E + 8), k(DType::BF16, int64_t(B) * S, W, W + 16),
      v(DType::BF16, int64_t(B) * S, W, W + 8), out(DType::BF16, B, int64_t(Hq) * E, int64_t(Hq) * E + 3);
  for (int64_t r = 0; r < q.rows; ++r)
    for (int64_t c = 0; c < q.cols; ++c) q.set(r, c, randn());
  for (int64_t r = 0; r < k.rows; ++r)
    for (int64_t c = 0; c < W; ++c) {
      k.set(r, c, randn());
      v.set(r, c, randn());
    }
  const float scale = 1.0f / std::sqrt(float(E));
  std::vector<double> ref(size_t(B) * Hq * E, 0.0), got(ref.size());
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < Hq; ++h) {
      const int hk = h / (Hq / Hkv);
      const int s0 = std::max(starts[b], 0), s1 = std::min(lens[b], S);
      if (s1 <= s0) continue;
      std::vector<double> sc(size_t(s1 - s0));
      double mx = -INFINITY;
      for (int s = s0; s < s1; ++s) {
        double d = 0;
        for (int e = 0; e < E; ++e) d += q.get(b, int64_t(h) * E + e) * k.get(int64_t(b) * S + s, int64_t(hk) * E + e);
        sc[size_t(s - s0)] = d * scale;
        mx = std::max(mx, d * scale);
      }
      double sum = 0;
      for (auto& x : sc) sum += (x = std::exp(x - mx));
      for (int s = s0; s < s1; ++s)
        for (int e = 0; e < E; ++e)
          ref[(size_t(b) * Hq + h) * E + e] += sc[size_t(s - s0)] / sum * v.get(int64_t(b) * S + s, int64_t(hk) * E + e);
    }
  std::vector<int32_t> st(starts.begin(), starts.end()), ln(lens.begin(), lens.end());
  cuda::DecodeProblem p{};
  p.q = q.base();
  p.k = k.base();
  p.v = v.base();
  p.out = out.base();
  p.start = st.data();
  p.len = ln.data();
  p.ldq = q.ld;
  p.ldk = k.ld;
  p.ldv = v.ld;
  p.ldo = out.ld;
  p.B = B;
  p.S = S;
  p.Hq = Hq;
  p.Hkv = Hkv;
  p.E = E;
  p.scale = scale;
  cuda::attention_decode_run(p);
  const std::vector<unsigned char> first = out.bytes();
  cuda::attention_decode_run(p);
  if (out.bytes() != first) {
    std::printf("  %-60s rerun differs: FAIL\n", name.c_str());
    ++g_fail;
  }
  for (int b = 0; b < B; ++b)
    for (int64_t c = 0; c < int64_t(Hq) * E; ++c) got[size_t(b) * Hq * E + size_t(c)] = out.get(b, c);
  report(name, rel(got, ref), 6e-3);
}

// RMSNorm forward + backward vs float64 (x as a row view of width ld), dw accumulating onto 0.25,
// backward rerun bitwise equal.
void check_rmsnorm(int64_t M, int64_t D, int64_t ld, DType dt) {
  const std::string name = "rmsnorm M=" + std::to_string(M) + " D=" + std::to_string(D) + " ld=" + std::to_string(ld) +
                           " " + dtype_name(dt);
  if (!want(name)) return;
  const float eps = 1e-5f;
  Mat x(dt, M, D, ld), y(dt, M, D, D), dy(dt, M, D, D), dx(dt, M, D, D + 8), w(DType::F32, 1, D, D),
      dw(DType::F32, 1, D, D), dw2(DType::F32, 1, D, D), rstd(DType::F32, 1, M, M);
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < D; ++c) {
      x.set(r, c, 2.0 * randn());
      dy.set(r, c, randn());
    }
  for (int64_t c = 0; c < D; ++c) {
    w.set(0, c, 1.0 + 0.5 * randn());
    dw.set(0, c, 0.25);
    dw2.set(0, c, 0.25);
  }
  std::vector<double> Y(size_t(M * D)), DX(Y.size()), DW(size_t(D), 0.0), R(static_cast<size_t>(M));
  for (int64_t r = 0; r < M; ++r) {
    double ss = 0;
    for (int64_t c = 0; c < D; ++c) ss += x.get(r, c) * x.get(r, c);
    const double rs = 1.0 / std::sqrt(ss / double(D) + eps);
    R[size_t(r)] = rs;
    double dot = 0;
    for (int64_t c = 0; c < D; ++c) {
      Y[size_t(r * D + c)] = x.get(r, c) * rs * w.get(0, c);
      dot += w.get(0, c) * dy.get(r, c) * x.get(r, c);
    }
    for (int64_t c = 0; c < D; ++c) {
      DX[size_t(r * D + c)] = rs * (w.get(0, c) * dy.get(r, c) - x.get(r, c) * rs * rs * dot / double(D));
      DW[size_t(c)] += dy.get(r, c) * x.get(r, c) * rs;
    }
  }
  auto tensor = [](Mat& m) {
    Tensor t(m.base(), m.dt, Device::CUDA, {m.rows, m.cols});
    t.stride[0] = m.ld;
    return t;
  };
  Tensor tw(w.base(), DType::F32, Device::CUDA, {D}), tdw(dw.base(), DType::F32, Device::CUDA, {D}),
      tdw2(dw2.base(), DType::F32, Device::CUDA, {D}), tr(rstd.base(), DType::F32, Device::CUDA, {M});
  cuda::rmsnorm_forward(tensor(x), tw, eps, tensor(y), tr);
  cuda::rmsnorm_backward(tensor(dy), tensor(x), tw, tr, tensor(dx), tdw);
  cuda::rmsnorm_backward(tensor(dy), tensor(x), tw, tr, tensor(dx), tdw2);
  std::vector<double> gy(Y.size()), gdx(Y.size()), gdw(DW.size()), gr(R.size());
  for (int64_t r = 0; r < M; ++r) {
    gr[size_t(r)] = rstd.get(0, r);
    for (int64_t c = 0; c < D; ++c) {
      gy[size_t(r * D + c)] = y.get(r, c);
      gdx[size_t(r * D + c)] = dx.get(r, c);
    }
  }
  for (int64_t c = 0; c < D; ++c) gdw[size_t(c)] = dw.get(0, c) - 0.25;
  const double tol = dt == DType::F32 ? 2e-6 : 6e-3;
  report(name + " y", rel(gy, Y), tol);
  report(name + " rstd", rel(gr, R), 2e-6);
  report(name + " dx", rel(gdx, DX), tol);
  report(name + " dw", rel(gdw, DW), 1e-5);
  if (dw.bytes() != dw2.bytes()) {
    std::printf("  %-60s dw rerun differs: FAIL\n", name.c_str());
    ++g_fail;
  }
  // residual_rmsnorm_backward: dres (starting at a known value) += dx; dw accumulates again.
  Mat dres(dt, M, D, x.ld);
  std::vector<double> RES(Y.size()), gres(Y.size());
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < D; ++c) {
      dres.set(r, c, randn());
      RES[size_t(r * D + c)] = dres.get(r, c) + DX[size_t(r * D + c)];
    }
  cuda::residual_rmsnorm_backward(tensor(dy), tensor(x), tw, tr, tensor(dres), tdw2);
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < D; ++c) gres[size_t(r * D + c)] = dres.get(r, c);
  for (int64_t c = 0; c < D; ++c) gdw[size_t(c)] = (dw2.get(0, c) - 0.25) / 2.0;
  report(name + " residual dres", rel(gres, RES), tol);
  report(name + " residual dw", rel(gdw, DW), 1e-5);
}

// Gated RMSNorm forward and backward vs float64 (x, z, dz row views of a wider activation, as the
// model passes them), every output written (y, dx, dz poisoned), rstd per (row, group), dw
// accumulating onto 0.25, backward rerun bitwise equal. gdt: dtype of dy, dx, dz (x's dtype takes
// the vector path, F32 grads under BF16 x the per-element kernel).
void check_gated(int64_t M, int64_t D, int64_t gs, int64_t ldx, int64_t ldz, DType dt, DType wdt,
                 bool f32_grads = false) {
  const DType gdt = f32_grads ? DType::F32 : dt;
  const std::string name = "gated M=" + std::to_string(M) + " D=" + std::to_string(D) + " gs=" + std::to_string(gs) +
                           " ldx=" + std::to_string(ldx) + " ldz=" + std::to_string(ldz) + " " + dtype_name(dt) +
                           " w " + dtype_name(wdt) + (gdt != dt ? std::string(" grads ") + dtype_name(gdt) : "");
  if (!want(name)) return;
  const float eps = 1e-5f;
  const int64_t ng = D / gs;
  Mat x(dt, M, D, ldx), z(dt, M, D, ldz), y(dt, M, D, D), w(wdt, 1, D, D), rstd(DType::F32, M, ng, ng);
  Mat dy(gdt, M, D, D), dx(gdt, M, D, D + 8), dz(gdt, M, D, ldz), dw(wdt, 1, D, D), dw2(wdt, 1, D, D);
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < D; ++c) {
      x.set(r, c, randn());
      z.set(r, c, 1.5 * randn());
      dy.set(r, c, randn());
    }
  for (int64_t c = 0; c < D; ++c) {
    w.set(0, c, 1.0 + 0.5 * randn());
    dw.set(0, c, 0.25);
    dw2.set(0, c, 0.25);
  }
  std::vector<double> Y(size_t(M * D)), R(size_t(M * ng)), gy(Y.size()), gr(R.size());
  std::vector<double> DX(Y.size()), DZ(Y.size()), DW(size_t(D), 0.0), gdx(Y.size()), gdz(Y.size()), gdw(DW.size());
  for (int64_t r = 0; r < M; ++r)
    for (int64_t g = 0; g < ng; ++g) {
      double ss = 0, dot = 0;
      std::vector<double> gate(static_cast<size_t>(gs)), sig(gate.size());
      for (int64_t i = 0; i < gs; ++i) {
        const double zv = z.get(r, g * gs + i);
        sig[size_t(i)] = 1.0 / (1.0 + std::exp(-zv));
        gate[size_t(i)] = x.get(r, g * gs + i) * zv * sig[size_t(i)];
        ss += gate[size_t(i)] * gate[size_t(i)];
        dot += w.get(0, g * gs + i) * dy.get(r, g * gs + i) * gate[size_t(i)];
      }
      const double rs = 1.0 / std::sqrt(ss / double(gs) + eps);
      R[size_t(r * ng + g)] = rs;
      for (int64_t i = 0; i < gs; ++i) {
        const int64_t c = g * gs + i;
        const double s = sig[size_t(i)], zv = z.get(r, c), xv = x.get(r, c), gv = dy.get(r, c);
        Y[size_t(r * D + c)] = gate[size_t(i)] * rs * w.get(0, c);
        const double dgate = rs * (w.get(0, c) * gv - gate[size_t(i)] * rs * rs * dot / double(gs));
        DX[size_t(r * D + c)] = dgate * zv * s;
        DZ[size_t(r * D + c)] = dgate * xv * s * (1.0 + zv * (1.0 - s));
        DW[size_t(c)] += gv * gate[size_t(i)] * rs;
      }
    }
  auto tensor = [](Mat& m) {
    Tensor t(m.base(), m.dt, Device::CUDA, {m.rows, m.cols});
    t.stride[0] = m.ld;
    return t;
  };
  Tensor tw(w.base(), wdt, Device::CUDA, {D}), tdw(dw.base(), wdt, Device::CUDA, {D}),
      tdw2(dw2.base(), wdt, Device::CUDA, {D});
  cuda::gated_rmsnorm_forward(tensor(x), tensor(z), tw, gs, eps, tensor(y), tensor(rstd));
  cuda::gated_rmsnorm_backward(tensor(dy), tensor(x), tensor(z), tw, tensor(rstd), gs, tensor(dx), tensor(dz), tdw);
  cuda::gated_rmsnorm_backward(tensor(dy), tensor(x), tensor(z), tw, tensor(rstd), gs, tensor(dx), tensor(dz), tdw2);
  bool untouched = true;
  for (int64_t r = 0; r < M; ++r) {
    for (int64_t g = 0; g < ng; ++g) gr[size_t(r * ng + g)] = rstd.get(r, g);
    for (int64_t c = 0; c < D; ++c) {
      gy[size_t(r * D + c)] = y.get(r, c);
      gdx[size_t(r * D + c)] = dx.get(r, c);
      gdz[size_t(r * D + c)] = dz.get(r, c);
    }
    for (int64_t c = D; c < ldz; ++c) {
      const unsigned char* p = dz.base() + size_t(r * ldz + c) * dtype_size(gdt);
      if (p[0] != 0xFF) untouched = false;
    }
  }
  for (int64_t c = 0; c < D; ++c) gdw[size_t(c)] = dw.get(0, c) - 0.25;
  if (!untouched) {
    std::printf("  %-60s dz written outside the view: FAIL\n", name.c_str());
    ++g_fail;
  }
  const double tol = dt == DType::F32 ? 2e-6 : 6e-3, gtol = dt == DType::F32 && gdt == DType::F32 ? 1e-5 : 6e-3;
  report(name + " y", rel(gy, Y), tol);
  report(name + " rstd", rel(gr, R), 2e-6);
  report(name + " dx", rel(gdx, DX), gtol);
  report(name + " dz", rel(gdz, DZ), gtol);
  report(name + " dw", rel(gdw, DW), wdt == DType::F32 ? 2e-5 : 6e-3);
  if (dw.bytes() != dw2.bytes()) {
    std::printf("  %-60s dw rerun differs: FAIL\n", name.c_str());
    ++g_fail;
  }
}

// residual_rmsnorm_forward vs float64: x (a row view) += d, rounded to x's dtype, then RMSNorm of
// the rounded sum; x's columns past D untouched.
void check_residual(int64_t M, int64_t D, int64_t ld, DType dt, DType wdt) {
  const std::string name = "residual M=" + std::to_string(M) + " D=" + std::to_string(D) + " ld=" + std::to_string(ld) +
                           " " + dtype_name(dt) + " w " + dtype_name(wdt);
  if (!want(name)) return;
  const float eps = 1e-5f;
  Mat x(dt, M, D, ld), d(dt, M, D, D), y(dt, M, D, D), w(wdt, 1, D, D), rstd(DType::F32, 1, M, M);
  std::vector<double> X(size_t(M * D)), Y(X.size()), R(static_cast<size_t>(M)), gx(X.size()), gy(X.size()), gr(R.size());
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < D; ++c) {
      x.set(r, c, 2.0 * randn());
      d.set(r, c, randn());
    }
  for (int64_t c = 0; c < D; ++c) w.set(0, c, 1.0 + 0.5 * randn());
  Mat sum(dt, M, D, D);  // x + d rounded to dt: the residual the op must store
  for (int64_t r = 0; r < M; ++r)
    for (int64_t c = 0; c < D; ++c) {
      sum.set(r, c, float(float(x.get(r, c)) + float(d.get(r, c))));
      X[size_t(r * D + c)] = sum.get(r, c);
    }
  for (int64_t r = 0; r < M; ++r) {
    double ss = 0;
    for (int64_t c = 0; c < D; ++c) ss += X[size_t(r * D + c)] * X[size_t(r * D + c)];
    const double rs = 1.0 / std::sqrt(ss / double(D) + eps);
    R[size_t(r)] = rs;
    for (int64_t c = 0; c < D; ++c) Y[size_t(r * D + c)] = X[size_t(r * D + c)] * rs * w.get(0, c);
  }
  auto tensor = [](Mat& m) {
    Tensor t(m.base(), m.dt, Device::CUDA, {m.rows, m.cols});
    t.stride[0] = m.ld;
    return t;
  };
  Tensor tw(w.base(), wdt, Device::CUDA, {D}), tr(rstd.base(), DType::F32, Device::CUDA, {M});
  cuda::residual_rmsnorm_forward(tensor(x), tensor(d), tw, eps, tensor(y), tr);
  bool untouched = true;
  for (int64_t r = 0; r < M; ++r) {
    gr[size_t(r)] = rstd.get(0, r);
    for (int64_t c = 0; c < D; ++c) {
      gx[size_t(r * D + c)] = x.get(r, c);
      gy[size_t(r * D + c)] = y.get(r, c);
    }
    for (int64_t c = D; c < ld; ++c) {
      const unsigned char* p = x.base() + size_t(r * ld + c) * dtype_size(dt);
      if (p[0] != 0xFF) untouched = false;
    }
  }
  if (!untouched) {
    std::printf("  %-60s wrote outside the view: FAIL\n", name.c_str());
    ++g_fail;
  }
  report(name + " x (exact)", rel(gx, X), 0.0);
  report(name + " y", rel(gy, Y), dt == DType::F32 ? 2e-6 : 6e-3);
  report(name + " rstd", rel(gr, R), 2e-6);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) g_filter = argv[1];
  check_gemm();
  check_decode(1, 2048, 32, 8, 128, {0}, {2048});
  check_decode(3, 300, 8, 2, 128, {0, 17, 5}, {300, 251, 6});
  check_decode(3, 300, 12, 1, 64, {0, 17, 5}, {300, 251, 6});
  check_decode(2, 200, 4, 4, 64, {3, 50}, {3, 199});  // an empty range: zeros
  check_decode(1, 1000, 10, 2, 128, {0}, {997});      // G = 5 (padded to 8), partial steps
  check_rmsnorm(37, 1000, 1024, DType::BF16);  // vector path, one warp per row, ragged vectors
  check_rmsnorm(37, 1000, 1024, DType::F32);
  check_rmsnorm(19, 2048, 2048, DType::BF16);
  check_rmsnorm(9, 4096, 4104, DType::BF16);  // several warps per row
  check_rmsnorm(40, 8192, 8192, DType::BF16);
  check_rmsnorm(5, 1001, 1001, DType::BF16);  // plain kernels
  check_rmsnorm(1, 4096, 4096, DType::BF16);  // decode: one row spread over the block, w prefetched
  check_rmsnorm(3, 8192, 8200, DType::BF16);
  check_rmsnorm(2, 2048, 2048, DType::F32);
  check_rmsnorm(600, 256, 256, DType::BF16);  // hundreds of dw partials (the finish lanes)
  // Gated RMSNorm: decode shapes (8 groups of 1024, z a slice of in_proj's output), spread and
  // several-vectors-per-thread layouts, f32 and bf16 weights, and the per-warp fallback.
  check_gated(1, 8192, 1024, 8192, 18560, DType::BF16, DType::BF16);
  check_gated(3, 8192, 1024, 8192, 18560, DType::BF16, DType::F32);
  check_gated(2, 2048, 2048, 2056, 2048, DType::BF16, DType::BF16);
  check_gated(700, 512, 128, 512, 520, DType::BF16, DType::BF16);  // many short segments
  check_gated(300, 4096, 1024, 4096, 4104, DType::BF16, DType::BF16);  // not spread: kVpt 4
  check_gated(5, 384, 64, 392, 384, DType::F32, DType::F32);
  check_gated(4, 520, 40, 520, 520, DType::BF16, DType::BF16);     // 40 % 8 = 0: vector, tiny group
  check_gated(3, 500, 100, 500, 500, DType::BF16, DType::BF16);    // 100 % 8 ≠ 0: per-warp kernel
  // Backward layouts: the 1.43B training shape's segments (8 groups of 512, z and dz slices of
  // the 10304-wide in_proj activation; fewer rows), one group (several rows per pass), more groups
  // than slots (sub-passes), 4 vectors per thread, mixed grad dtype. M > 396 (3 blocks x 132 SMs
  // here) gives blocks several rows, so dw sums over rows and over the shared-memory copies.
  check_gated(64, 4096, 512, 4096, 10304, DType::BF16, DType::BF16);
  check_gated(800, 4096, 512, 4096, 10304, DType::BF16, DType::F32);
  check_gated(1000, 256, 256, 264, 256, DType::BF16, DType::F32);  // 8 rows per pass
  check_gated(900, 1536, 32, 1536, 1544, DType::BF16, DType::BF16);
  check_gated(61, 4096, 512, 4096, 10304, DType::BF16, DType::F32);
  check_gated(1, 4096, 512, 4096, 10304, DType::BF16, DType::BF16);
  check_gated(29, 256, 256, 264, 256, DType::BF16, DType::F32);     // ng 1: 8 rows per pass
  check_gated(13, 1536, 32, 1536, 1544, DType::BF16, DType::BF16);  // 48 groups > 8 slots
  check_gated(7, 8192, 8192, 8192, 8200, DType::BF16, DType::BF16); // 1024 vectors: 4 per thread
  check_gated(9, 768, 256, 776, 768, DType::F32, DType::BF16);      // f32: 64 vectors per group
  check_gated(6, 1024, 512, 1024, 1032, DType::BF16, DType::BF16, true);  // per-element kernel
  // Residual + RMSNorm: decode rows, a row view, many rows, and the fallback (odd D).
  check_residual(1, 4096, 4096, DType::BF16, DType::BF16);
  check_residual(5, 4096, 4104, DType::BF16, DType::F32);
  check_residual(300, 1024, 1024, DType::BF16, DType::BF16);
  check_residual(1100, 2048, 2048, DType::BF16, DType::BF16);  // not spread: 8 vectors per thread
  check_residual(3, 2048, 2048, DType::F32, DType::F32);
  check_residual(4, 1001, 1001, DType::BF16, DType::BF16);
  std::printf("%s (%d failures)\n", g_fail ? "FAIL" : "all ok", g_fail);
  return g_fail ? 1 : 0;
}
