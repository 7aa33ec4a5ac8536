// Checks hlm::cuda::ssd_forward / ssd_backward / ssd_step, run on the host emulation, against a
// float64 sequential reference (itself checked by finite differences). Usage:
//   ssd_emu_check [case-filter]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"
#include "ops/ssd.h"

using namespace hlm;

namespace {

struct Problem {
  int B, T, H, G, P, N;
  bool use_doc, use_h0, use_D, use_bias;
  float dt_min, dt_max;
  // values (already rounded to the activation dtype)
  std::vector<double> x, dt, A_log, Bm, Cm, D, bias, h0, dy, dhf;
  std::vector<int32_t> doc;
};

struct Grads {
  std::vector<double> dx, ddt, dA_log, dB, dC, dD, dbias, dh0;
};

double round_to(double v, DType t) {
  if (t == DType::BF16) return bf16_bits_to_f32(f32_to_bf16_bits(static_cast<float>(v)));
  return static_cast<float>(v);
}

double g_dt_max = 0.6;  // the dt clamp's upper end (the factor group lowers it: chunks of mild decay)
int g_doc_gap = 90;     // documents' lengths up to this (the factor group: longer, chunks without a boundary)
double g_d_scale = 1.0;  // D's scale (the factor group: 0, so y is the scan's alone and its errors show)

Problem make_problem(int B, int T, int H, int G, int P, int N, bool doc, bool h0, DType act, unsigned seed) {
  Problem pr{};
  pr.B = B; pr.T = T; pr.H = H; pr.G = G; pr.P = P; pr.N = N;
  pr.use_doc = doc; pr.use_h0 = h0; pr.use_D = true; pr.use_bias = true;
  pr.dt_min = 0.002f; pr.dt_max = static_cast<float>(g_dt_max);
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::uniform_real_distribution<double> ud(0.0, 1.0);
  auto fill = [&](std::vector<double>& v, size_t n, double scale, DType t) {
    v.resize(n);
    for (auto& e : v) e = round_to(scale * nd(rng), t);
  };
  fill(pr.x, size_t(B) * T * H * P, 1.0, act);
  fill(pr.Bm, size_t(B) * T * G * N, 1.0 / std::sqrt(N), act);
  fill(pr.Cm, size_t(B) * T * G * N, 1.0 / std::sqrt(N), act);
  fill(pr.dy, size_t(B) * T * H * P, 1.0, act);
  pr.dt.resize(size_t(B) * T * H);
  for (auto& e : pr.dt) e = static_cast<float>(-3.0 + 4.5 * ud(rng));  // softplus spans the clamps
  pr.A_log.resize(H);
  for (auto& e : pr.A_log) e = static_cast<float>(std::log(0.5 + 8.0 * ud(rng)));
  fill(pr.D, H, g_d_scale, DType::F32);
  fill(pr.bias, H, 0.5, DType::F32);
  if (h0) fill(pr.h0, size_t(B) * H * P * N, 0.5, DType::F32);
  fill(pr.dhf, size_t(B) * H * P * N, 0.3, DType::F32);
  if (doc) {
    pr.doc.resize(size_t(B) * T);
    for (int b = 0; b < B; ++b) {
      int id = 7 * b, t_next = 1 + int(ud(rng) * 40);
      for (int t = 0; t < T; ++t) {
        if (t == t_next || t == 64) {  // one boundary exactly at a chunk start
          ++id;
          t_next = t + 1 + int(ud(rng) * g_doc_gap);
        }
        pr.doc[size_t(b) * T + t] = id % 2;  // ids repeat: boundaries, not ids, separate documents
      }
    }
  }
  return pr;
}

double softplus(double u) { return u > 20 ? u : std::log1p(std::exp(u)); }

// Sequential reference; states[t] = state after step t (per b, h).
void reference(const Problem& pr, std::vector<double>& y, std::vector<double>& hf, Grads* gr) {
  const int B = pr.B, T = pr.T, H = pr.H, G = pr.G, P = pr.P, N = pr.N, hpg = H / G;
  y.assign(size_t(B) * T * H * P, 0);
  hf.assign(size_t(B) * H * P * N, 0);
  if (gr) {
    gr->dx.assign(pr.x.size(), 0);
    gr->ddt.assign(pr.dt.size(), 0);
    gr->dA_log.assign(H, 0);
    gr->dB.assign(pr.Bm.size(), 0);
    gr->dC.assign(pr.Cm.size(), 0);
    gr->dD.assign(H, 0);
    gr->dbias.assign(H, 0);
    gr->dh0.assign(size_t(B) * H * P * N, 0);
  }
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const int g = h / hpg;
      const double A = -std::exp(pr.A_log[h]);
      const double D = pr.use_D ? pr.D[h] : 0, bias = pr.use_bias ? pr.bias[h] : 0;
      std::vector<double> S(size_t(P) * N, 0), h0s(size_t(P) * N, 0);
      if (pr.use_h0)
        for (int i = 0; i < P * N; ++i) h0s[i] = pr.h0[(size_t(b) * H + h) * P * N + i];
      S = h0s;
      std::vector<std::vector<double>> states;
      std::vector<double> dts(T), dsps(T), alphas(T);
      std::vector<int> bnds(T);
      for (int t = 0; t < T; ++t) {
        const size_t row = size_t(b) * T + t;
        double u = pr.dt[row * H + h] + bias, sp = softplus(u), dt = sp, dsp = 1 / (1 + std::exp(-u));
        if (sp < pr.dt_min) { dt = pr.dt_min; dsp = 0; }
        if (sp > pr.dt_max) { dt = pr.dt_max; dsp = 0; }
        int bnd = pr.use_doc && t > 0 && pr.doc[row] != pr.doc[row - 1];
        double alpha = bnd ? 0 : std::exp(dt * A);
        dts[t] = dt; dsps[t] = dsp; alphas[t] = alpha; bnds[t] = bnd;
        for (int p = 0; p < P; ++p) {
          double xp = pr.x[(row * H + h) * P + p], acc = 0;
          for (int n = 0; n < N; ++n) {
            double& s = S[size_t(p) * N + n];
            s = alpha * s + dt * xp * pr.Bm[(row * G + g) * N + n];
            acc += s * pr.Cm[(row * G + g) * N + n];
          }
          y[(row * H + h) * P + p] = acc + D * xp;
        }
        if (gr) states.push_back(S);
      }
      for (int i = 0; i < P * N; ++i) hf[(size_t(b) * H + h) * P * N + i] = S[i];
      if (!gr) continue;
      std::vector<double> dS(size_t(P) * N);
      for (int i = 0; i < P * N; ++i) dS[i] = pr.dhf[(size_t(b) * H + h) * P * N + i];
      double dA = 0;
      for (int t = T - 1; t >= 0; --t) {
        const size_t row = size_t(b) * T + t;
        const double* xv = &pr.x[(row * H + h) * P];
        const double* dyv = &pr.dy[(row * H + h) * P];
        const double* Bv = &pr.Bm[(row * G + g) * N];
        const double* Cv = &pr.Cm[(row * G + g) * N];
        const std::vector<double>& St = states[t];
        const std::vector<double>& Sp = t > 0 ? states[t - 1] : h0s;
        double dal = 0, ddt = 0;
        for (int p = 0; p < P; ++p) {
          double sbd = 0;
          for (int n = 0; n < N; ++n) {
            double& d = dS[size_t(p) * N + n];
            d += dyv[p] * Cv[n];
            gr->dC[(row * G + g) * N + n] += St[size_t(p) * N + n] * dyv[p];
            sbd += d * Bv[n];
            dal += d * Sp[size_t(p) * N + n];
            gr->dB[(row * G + g) * N + n] += dts[t] * d * xv[p];
          }
          gr->dx[(row * H + h) * P + p] = D * dyv[p] + dts[t] * sbd;
          ddt += xv[p] * sbd;
          gr->dD[h] += dyv[p] * xv[p];
        }
        if (!bnds[t]) {
          ddt += dal * alphas[t] * A;
          dA += dal * alphas[t] * dts[t];
        }
        gr->ddt[row * H + h] = ddt * dsps[t];
        gr->dbias[h] += ddt * dsps[t];
        for (auto& d : dS) d *= alphas[t];
      }
      for (int i = 0; i < P * N; ++i) gr->dh0[(size_t(b) * H + h) * P * N + i] = dS[i];
      gr->dA_log[h] += dA * A;
    }
}

// Finite-difference check of the reference backward on a tiny problem (loss = <y,dy> + <hf,dhf>).
bool check_reference_fd() {
  Problem pr = make_problem(1, 9, 2, 1, 3, 4, true, true, DType::F32, 5);
  pr.doc = {0, 0, 0, 1, 1, 1, 1, 2, 2};
  auto loss = [&](const Problem& q) {
    std::vector<double> y, hf;
    reference(q, y, hf, nullptr);
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += y[i] * q.dy[i];
    for (size_t i = 0; i < hf.size(); ++i) l += hf[i] * q.dhf[i];
    return l;
  };
  std::vector<double> y, hf;
  Grads gr;
  reference(pr, y, hf, &gr);
  double worst = 0;
  auto check = [&](std::vector<double> Problem::*field, const std::vector<double>& grad) {
    for (size_t i = 0; i < grad.size(); ++i) {
      Problem q = pr;
      const double e = 1e-6;
      (q.*field)[i] += e;
      double lp = loss(q);
      (q.*field)[i] -= 2 * e;
      double lm = loss(q);
      double fd = (lp - lm) / (2 * e);
      worst = std::max(worst, std::fabs(fd - grad[i]) / (1e-6 + std::fabs(fd) + std::fabs(grad[i])));
    }
  };
  check(&Problem::x, gr.dx);
  check(&Problem::dt, gr.ddt);
  check(&Problem::A_log, gr.dA_log);
  check(&Problem::Bm, gr.dB);
  check(&Problem::Cm, gr.dC);
  check(&Problem::D, gr.dD);
  check(&Problem::bias, gr.dbias);
  check(&Problem::h0, gr.dh0);
  std::printf("reference backward vs finite differences: worst relative error %.2e\n", worst);
  return worst < 1e-5;
}

// ---- emulated device tensors (host memory labelled CUDA) ----
struct DevT {
  std::vector<unsigned char> mem;
  Tensor t;
  DevT() = default;
  DevT(DType dt, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    mem.assign(size_t(n) * dtype_size(dt) + 64, 0xFF);  // poisoned
    t = Tensor(mem.data(), dt, Device::CUDA, Shape(shape.data(), shape.size()));
  }
  void set(const std::vector<double>& v) {
    for (size_t i = 0; i < v.size(); ++i) {
      if (t.dtype == DType::F32) t.ptr<float>()[i] = static_cast<float>(v[i]);
      else if (t.dtype == DType::BF16) t.ptr<uint16_t>()[i] = f32_to_bf16_bits(static_cast<float>(v[i]));
    }
  }
  std::vector<double> get() const {
    std::vector<double> v(size_t(t.numel()));
    for (size_t i = 0; i < v.size(); ++i)
      v[i] = t.dtype == DType::F32 ? t.ptr<float>()[i] : bf16_bits_to_f32(t.ptr<uint16_t>()[i]);
    return v;
  }
  void fill(double v) { set(std::vector<double>(size_t(t.numel()), v)); }
};

double rel_err(const std::vector<double>& a, const std::vector<double>& r) {
  double num = 0, den = 0;
  for (size_t i = 0; i < r.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (a[i] - r[i]) * (a[i] - r[i]);
    den += r[i] * r[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

// y's error in its scan part alone, relative to that part: D x dominates y when D ~ N(0, 1), so
// y's own relative error hides the scan's (a mutation that drops the document mask stayed under
// 1e-2). The output's rounding (to act) is not the scan's: the reference's own rounding error r is
// taken out in quadrature, sqrt(|e|^2 - |r|^2), as the two are independent.
// The same for dx, whose D dy term dominates it alike: `in` is the input D multiplies (x or dy).
double scan_rel_err(const Problem& pr, const std::vector<double>& in, const std::vector<double>& y,
                    const std::vector<double>& yr, DType act) {
  double e2 = 0, r2 = 0, s2 = 0;
  const size_t HP = size_t(pr.H) * pr.P;
  for (size_t i = 0; i < yr.size(); ++i) {
    if (!std::isfinite(y[i])) return INFINITY;
    const double dx = pr.D[(i % HP) / pr.P] * in[i];
    e2 += (y[i] - yr[i]) * (y[i] - yr[i]);
    const double r = round_to(yr[i], act) - yr[i];
    r2 += r * r;
    s2 += (yr[i] - dx) * (yr[i] - dx);
  }
  return std::sqrt(std::max(e2 - r2, 0.0)) / std::max(std::sqrt(s2), 1e-30);
}

int g_fail = 0;
uint64_t g_hash = 1469598103934665603ull;  // FNV-1a over every output's bytes (race check across EMU_SCHED)
void hash_bytes(const Tensor& t) {
  const auto* p = static_cast<const unsigned char*>(t.data);
  for (size_t i = 0; i < t.nbytes(); ++i) g_hash = (g_hash ^ p[i]) * 1099511628211ull;
}
void report(const char* what, double err, double tol) {
  bool ok = err <= tol;
  if (!ok) ++g_fail;
  std::printf("  %-10s rel err %.3e (tol %.0e) %s\n", what, err, tol, ok ? "ok" : "FAIL");
}

void run_case(const char* name, int B, int T, int H, int G, int P, int N, bool doc, bool h0, DType act,
              double tol, bool backward) {
  std::printf("%s: B=%d T=%d H=%d G=%d P=%d N=%d doc=%d h0=%d %s\n", name, B, T, H, G, P, N, doc, h0,
              dtype_name(act));
  Problem pr = make_problem(B, T, H, G, P, N, doc, h0, act, 1234u + unsigned(T));
  std::vector<double> yr, hfr;
  Grads gr;
  DevT x(act, {B, T, H, P}), dt(DType::BF16, {B, T, H}), A_log(DType::F32, {H}), Bm(act, {B, T, G, N}),
      Cm(act, {B, T, G, N}), D(DType::F32, {H}), bias(DType::F32, {H}), docT(DType::I32, {B, T}),
      h0T(DType::F32, {B, H, P, N}), y(act, {B, T, H, P}), hf(DType::F32, {B, H, P, N});
  // dt given as bf16: round the reference's raw dt the same way
  for (auto& v : pr.dt) v = round_to(v, DType::BF16);
  reference(pr, yr, hfr, backward ? &gr : nullptr);
  x.set(pr.x); dt.set(pr.dt); A_log.set(pr.A_log); Bm.set(pr.Bm); Cm.set(pr.Cm); D.set(pr.D); bias.set(pr.bias);
  if (doc) std::memcpy(docT.t.data, pr.doc.data(), pr.doc.size() * 4);
  if (h0) h0T.set(pr.h0);
  SsdParams p;
  p.x = x.t; p.dt = dt.t; p.A_log = A_log.t; p.Bm = Bm.t; p.Cm = Cm.t; p.D = D.t; p.dt_bias = bias.t;
  if (doc) p.doc = docT.t;
  if (h0) p.h0 = h0T.t;
  p.dt_min = pr.dt_min; p.dt_max = pr.dt_max;
  cuda::ssd_forward(p, y.t, hf.t);
  hash_bytes(y.t);
  hash_bytes(hf.t);
  const std::vector<double> yv = y.get();
  report("y", rel_err(yv, yr), tol);
  if (g_d_scale != 0) report("y - D x", scan_rel_err(pr, pr.x, yv, yr, act), tol);
  report("h_final", rel_err(hf.get(), hfr), tol);
  if (!backward) return;
  DevT dy(act, {B, T, H, P}), dhf(DType::F32, {B, H, P, N}), dx(act, {B, T, H, P}), ddt(DType::F32, {B, T, H}),
      dA(DType::F32, {H}), dB(act, {B, T, G, N}), dC(act, {B, T, G, N}), dD(DType::F32, {H}), dbias(DType::F32, {H}),
      dh0(DType::F32, {B, H, P, N});
  dy.set(pr.dy); dhf.set(pr.dhf);
  dA.fill(0.5); dD.fill(-0.25); dbias.fill(0.125);  // accumulated into
  SsdGrads g;
  g.dx = dx.t; g.ddt = ddt.t; g.dA_log = dA.t; g.dBm = dB.t; g.dCm = dC.t; g.dD = dD.t; g.ddt_bias = dbias.t;
  if (h0) g.dh0 = dh0.t;
  cuda::ssd_backward(p, dy.t, dhf.t, g);
  for (const Tensor* t : {&dx.t, &ddt.t, &dA.t, &dB.t, &dC.t, &dD.t, &dbias.t, &dh0.t}) hash_bytes(*t);
  auto plus = [](std::vector<double> v, double c) { for (auto& e : v) e += c; return v; };
  const std::vector<double> dxv = dx.get();
  report("dx", rel_err(dxv, gr.dx), tol);
  if (g_d_scale != 0) report("dx - D dy", scan_rel_err(pr, pr.dy, dxv, gr.dx, act), tol);
  report("ddt", rel_err(ddt.get(), gr.ddt), tol);
  report("dB", rel_err(dB.get(), gr.dB), tol);
  report("dC", rel_err(dC.get(), gr.dC), tol);
  report("dA_log", rel_err(plus(dA.get(), -0.5), gr.dA_log), tol);
  report("dD", rel_err(plus(dD.get(), 0.25), gr.dD), tol);
  report("ddt_bias", rel_err(plus(dbias.get(), -0.125), gr.dbias), tol);
  if (h0) report("dh0", rel_err(dh0.get(), gr.dh0), tol);
}

void run_step_case(int B, int H, int G, int P, int N, DType act, double tol) {
  std::printf("ssd_step: B=%d H=%d G=%d P=%d N=%d %s\n", B, H, G, P, N, dtype_name(act));
  // a T = 1 problem with h0 = state: one step of the reference recurrence
  Problem pr = make_problem(B, 1, H, G, P, N, false, true, act, 77u + unsigned(N));
  for (auto& v : pr.dt) v = round_to(v, DType::BF16);
  std::vector<double> yr, hfr;
  reference(pr, yr, hfr, nullptr);
  DevT x(act, {B, H, P}), dt(DType::BF16, {B, H}), A_log(DType::F32, {H}), Bm(act, {B, G, N}), Cm(act, {B, G, N}),
      D(DType::F32, {H}), bias(DType::F32, {H}), st(DType::F32, {B, H, P, N}), y(act, {B, H, P});
  x.set(pr.x); dt.set(pr.dt); A_log.set(pr.A_log); Bm.set(pr.Bm); Cm.set(pr.Cm); D.set(pr.D); bias.set(pr.bias);
  st.set(pr.h0);
  SsdStepParams p;
  p.x = x.t; p.dt = dt.t; p.A_log = A_log.t; p.Bm = Bm.t; p.Cm = Cm.t; p.D = D.t; p.dt_bias = bias.t;
  p.dt_min = pr.dt_min; p.dt_max = pr.dt_max;
  cuda::ssd_step(p, st.t, y.t);
  hash_bytes(y.t);
  hash_bytes(st.t);
  report("y", rel_err(y.get(), yr), tol);
  report("state", rel_err(st.get(), hfr), tol);
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  std::string filter = argc > 1 ? argv[1] : "";
  // A filter naming a group runs that group alone ("ws" not also "bwdws"); else every group whose
  // name contains it ("fast": the fast* groups).
  const std::vector<std::string> groups = {"fd",       "generic",   "fast64x128", "segments", "pieces",   "variants",
                                           "ws",       "bwdwg",     "bwdpipe",    "rowmajor", "bwdws",    "fastexact",
                                           "fast64x64", "fast128x128", "heads",   "step",     "factor"};
  const bool exact = std::find(groups.begin(), groups.end(), filter) != groups.end();
  auto want = [&](const char* n) {
    if (std::find(groups.begin(), groups.end(), n) == groups.end()) {
      std::fprintf(stderr, "ssd_emu_check: group %s missing from the list of groups\n", n);
      std::exit(2);
    }
    return filter.empty() || (exact ? filter == n : std::string(n).find(filter) != std::string::npos);
  };
  if (want("fd") && !check_reference_fd()) ++g_fail;
  if (want("generic")) {
    run_case("generic-f32", 2, 37, 4, 2, 8, 16, true, true, DType::F32, 1e-5, true);
    run_case("generic-bf16", 1, 20, 2, 1, 5, 6, false, false, DType::BF16, 1e-2, true);
  }
  if (want("fast64x128")) run_case("fast64x128", 2, 150, 4, 2, 64, 128, true, true, DType::BF16, 1e-2, true);
  if (want("segments")) {  // chunk-parallel split: 1 chunk per segment .. one segment; partial last segment
    for (const char* seg : {"1", "2", "4", "1000"}) {
      setenv("HLM_SSD_SEG_CHUNKS", seg, 1);
      std::printf("HLM_SSD_SEG_CHUNKS=%s\n", seg);
      run_case("segments", 2, 333, 4, 2, 64, 128, true, true, DType::BF16, 1e-2, true);
      run_case("segments-nodoc", 1, 300, 2, 1, 64, 64, false, false, DType::BF16, 1e-2, true);
    }
    unsetenv("HLM_SSD_SEG_CHUNKS");
  }
  if (want("pieces")) {  // segment states from pieces: 1-3 chunks (uneven, empty last), one long piece
    setenv("HLM_SSD_SEG_CHUNKS", "4", 1);
    for (const char* pc : {"1", "2", "3"}) {
      setenv("HLM_SSD_PIECE_CHUNKS", pc, 1);
      std::printf("HLM_SSD_SEG_CHUNKS=4 HLM_SSD_PIECE_CHUNKS=%s\n", pc);
      run_case("pieces", 2, 333, 4, 2, 64, 128, true, true, DType::BF16, 1e-2, true);
    }
    setenv("HLM_SSD_SEG_CHUNKS", "12", 1);
    for (const char* pc : {"12", "5"}) {
      setenv("HLM_SSD_PIECE_CHUNKS", pc, 1);
      std::printf("HLM_SSD_SEG_CHUNKS=12 HLM_SSD_PIECE_CHUNKS=%s\n", pc);
      run_case("pieces-long", 1, 1500, 2, 1, 64, 64, true, true, DType::BF16, 1e-2, true);
    }
    unsetenv("HLM_SSD_PIECE_CHUNKS");
    unsetenv("HLM_SSD_SEG_CHUNKS");
  }
  if (want("variants")) {  // the forward's other walks (the default is 11; 1, 2 the wgmma walks)
    for (const char* v : {"1", "2", "12", "21"}) {
      setenv("HLM_SSD_FWD_VARIANT", v, 1);
      std::printf("HLM_SSD_FWD_VARIANT=%s\n", v);
      run_case("variant", 2, 150, 4, 2, 64, 128, true, true, DType::BF16, 1e-2, false);
      setenv("HLM_SSD_SEG_CHUNKS", "2", 1);
      run_case("variant-seg2", 1, 333, 2, 1, 64, 64, true, true, DType::BF16, 1e-2, false);
      unsetenv("HLM_SSD_SEG_CHUNKS");
    }
    unsetenv("HLM_SSD_FWD_VARIANT");
    setenv("HLM_SSD_SWEEP_HEADS", "1", 1);  // one head per sweep block, forward and backward
    setenv("HLM_SSD_SEG_CHUNKS", "2", 1);
    run_case("sweep1", 2, 333, 4, 2, 64, 128, true, true, DType::BF16, 1e-2, true);
    unsetenv("HLM_SSD_SEG_CHUNKS");
    unsetenv("HLM_SSD_SWEEP_HEADS");
  }
  if (want("ws")) {  // variant 2 alone (CI, mutate_barriers.sh): 2 head pairs, every ring slot reused, late G,
                     // batch 2 with partial last chunks (HLM_SSD_FWD_VARIANT=3 or 4 set outside: variant 3,
                     // or 3 with y stored by TMA, the same hash; EARLY_G is ignored there)
    setenv("HLM_SSD_FWD_VARIANT", "2", 0);
    setenv("HLM_SSD_SEG_CHUNKS", "5", 1);
    run_case("ws-heads4", 1, 600, 4, 1, 64, 128, true, true, DType::BF16, 1e-2, false);  // each chunk's G early
    run_case("ws-batch2", 2, 333, 4, 2, 64, 64, true, true, DType::BF16, 1e-2, false);
    setenv("HLM_SSD_WS_EARLY_G", "0", 1);
    run_case("ws-late-g", 1, 600, 4, 1, 64, 128, true, true, DType::BF16, 1e-2, false);
    unsetenv("HLM_SSD_WS_EARLY_G");
    unsetenv("HLM_SSD_SEG_CHUNKS");
    unsetenv("HLM_SSD_FWD_VARIANT");
  }
  if (want("factor")) {  // variant 7 (factored scans) where its fast chunks and rescales happen: dt
                         // clamped to 0.02 (every chunk without a boundary fast; the state's scale
                         // reaches its floor within a segment for the larger decays), to 0.1 (fast
                         // or exact by the decay) and to 0.3 (steep: fast about the middle or
                         // exact), with and without documents; D = 0
    setenv("HLM_SSD_FWD_VARIANT", "7", 0);
    setenv("HLM_SSD_SEG_CHUNKS", "8", 1);
    g_d_scale = 0.0;
    for (double dmax : {0.02, 0.1, 0.3}) {
      g_dt_max = dmax;
      std::printf("dt_max=%g\n", dmax);
      run_case("factor-nodoc", 1, 1100, 4, 1, 64, 128, false, true, DType::BF16, 1e-2, false);
      g_doc_gap = 400;
      run_case("factor-doc", 2, 700, 4, 2, 64, 64, true, false, DType::BF16, 1e-2, false);
      g_doc_gap = 130;  // most chunks hold a boundary: fast ones masked by document
      run_case("factor-doc-short", 1, 900, 4, 1, 64, 128, true, true, DType::BF16, 1e-2, false);
      g_doc_gap = 90;
    }
    g_dt_max = 0.6;
    g_d_scale = 1.0;
    unsetenv("HLM_SSD_SEG_CHUNKS");
    unsetenv("HLM_SSD_FWD_VARIANT");
  }
  if (want("bwdwg")) {  // the backward's wgmma chunk kernel: 2, 8 (every slot rotation), 3 heads per group
    setenv("HLM_SSD_BWD_VARIANT", "1", 1);
    run_case("bwdwg", 2, 150, 4, 2, 64, 128, true, true, DType::BF16, 1e-2, true);
    run_case("bwdwg-heads8", 1, 200, 8, 1, 64, 128, true, true, DType::BF16, 1e-2, true);
    run_case("bwdwg-heads3", 2, 130, 6, 2, 64, 64, true, false, DType::BF16, 1e-2, true);
    unsetenv("HLM_SSD_BWD_VARIANT");
  }
  if (want("bwdpipe")) {  // variants 3 and 4 (warpgroup 0 pipelined over two heads; 4: copies by
                          // warpgroup 1): bwdwg's cases, then 1 head per group; one hash for both
    for (const char* v : {"3", "4"}) {
      setenv("HLM_SSD_BWD_VARIANT", v, 1);
      run_case("bwdwg", 2, 150, 4, 2, 64, 128, true, true, DType::BF16, 1e-2, true);
      run_case("bwdwg-heads8", 1, 200, 8, 1, 64, 128, true, true, DType::BF16, 1e-2, true);
      run_case("bwdwg-heads3", 2, 130, 6, 2, 64, 64, true, false, DType::BF16, 1e-2, true);
      run_case("bwdpipe-heads1", 2, 200, 4, 4, 64, 128, true, true, DType::BF16, 1e-2, true);
    }
    unsetenv("HLM_SSD_BWD_VARIANT");
  }
  if (want("rowmajor")) {  // the sweeps' states row-major (the default is core-matrix order)
    setenv("HLM_SSD_CORE_STATES", "0", 1);
    for (const char* v : {"1", "2", "4"}) {
      setenv("HLM_SSD_BWD_VARIANT", v, 1);
      std::printf("HLM_SSD_BWD_VARIANT=%s HLM_SSD_CORE_STATES=0\n", v);
      run_case("rowmajor", 2, 150, 4, 2, 64, 128, true, true, DType::BF16, 1e-2, true);
      run_case("rowmajor-n64", 2, 130, 6, 2, 64, 64, true, false, DType::BF16, 1e-2, true);
    }
    unsetenv("HLM_SSD_BWD_VARIANT");
    unsetenv("HLM_SSD_CORE_STATES");
  }
  if (want("bwdws")) {  // its warp-specialised form: 1, 2, 3, 8 heads per group (every ring and slot reused)
    setenv("HLM_SSD_BWD_VARIANT", "2", 1);
    run_case("bwdws", 2, 150, 4, 2, 64, 128, true, true, DType::BF16, 1e-2, true);
    run_case("bwdws-heads8", 1, 200, 8, 1, 64, 128, true, true, DType::BF16, 1e-2, true);
    run_case("bwdws-heads3", 2, 130, 6, 2, 64, 64, true, false, DType::BF16, 1e-2, true);
    run_case("bwdws-heads1", 2, 200, 4, 4, 64, 128, true, true, DType::BF16, 1e-2, true);
    unsetenv("HLM_SSD_BWD_VARIANT");
  }
  if (want("fastexact")) run_case("fastexact", 1, 64, 2, 1, 64, 128, false, false, DType::BF16, 1e-2, true);
  if (want("fast64x64")) run_case("fast64x64", 1, 100, 2, 2, 64, 64, true, true, DType::BF16, 1e-2, true);
  if (want("fast128x128")) run_case("fast128x128", 1, 70, 2, 1, 128, 128, true, false, DType::BF16, 1e-2, true);
  // Many heads per group: the backward chunk kernel's scan (one head ahead, 3 slots), epilogue (one
  // head behind) and raw dt (two heads ahead) rotate through every slot; 3 heads per group also
  // takes the odd-group paths (forward 11, one-head sweeps), P = 128 its single head buffer.
  if (want("heads")) {
    run_case("heads8", 1, 200, 8, 1, 64, 128, true, true, DType::BF16, 1e-2, true);
    run_case("heads3", 2, 130, 6, 2, 64, 64, true, false, DType::BF16, 1e-2, true);
    run_case("heads3-p128", 1, 70, 3, 1, 128, 128, true, true, DType::BF16, 1e-2, true);
  }
  if (want("step")) {
    run_step_case(2, 4, 2, 8, 128, DType::BF16, 1e-2);
    run_step_case(1, 2, 1, 3, 16, DType::F32, 1e-5);
    run_step_case(1, 2, 1, 3, 6, DType::F32, 1e-5);
    run_step_case(1, 128, 8, 64, 128, DType::BF16, 1e-2);  // 2 float4 per thread (8B, batch 1)
    run_step_case(9, 16, 2, 64, 128, DType::BF16, 1e-2);   // 4 float4 per thread
    run_step_case(9, 16, 2, 64, 128, DType::F32, 1e-5);
  }
  std::printf("output hash %016llx\n%s\n", static_cast<unsigned long long>(g_hash), g_fail ? "FAILED" : "all ok");
  return g_fail ? 1 : 0;
}
