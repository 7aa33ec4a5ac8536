// Benchmark: CPU chunked SSD (BLAS GEMMs) against the sequential recurrence, forward and
// forward+backward, fp32. Prints medians, the speed-up, the max relative difference between the
// two, and each one's distance from a float64 run.
// Usage: bench_ssd_cpu [--T 4096] [--H 8] [--P 64] [--N 128] [--G 1] [--B 1] [--chunk 128]
//                      [--runs 11] [--no-backward] [--no-f64]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <utility>
#include <string>
#include <vector>

#include <omp.h>

#include "core/rng.h"
#include "ops/ssd.h"

using namespace hlm;

namespace {

template <typename F>
struct BufT {
  std::vector<F> v;
  Tensor t;
  explicit BufT(std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    v.assign(static_cast<size_t>(n), F(0));
    t = Tensor(v.data(), sizeof(F) == 4 ? DType::F32 : DType::F64, Device::CPU,
               Shape(shape.data(), shape.size()));
  }
  void normal(uint64_t seed, float scale, float shift = 0.0f) {
    Rng r(seed);
    for (F& x : v) x = static_cast<F>(shift + scale * r.normal());
  }
  template <typename G>
  void copy_from(const BufT<G>& o) {
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<F>(o.v[i]);
  }
};
using Buf = BufT<float>;
using Buf64 = BufT<double>;

// Median times of a and b over `runs` runs, a and b interleaved so that both see the same
// background load (the CI / dev machine is shared).
std::pair<double, double> median_ms_pair(int runs, const std::function<void()>& a,
                                         const std::function<void()>& b) {
  a();  // warm-up
  b();
  std::vector<double> ta, tb;
  auto time = [](const std::function<void()>& fn) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  for (int i = 0; i < runs; ++i) {
    ta.push_back(time(a));
    tb.push_back(time(b));
  }
  std::sort(ta.begin(), ta.end());
  std::sort(tb.begin(), tb.end());
  return {ta[ta.size() / 2], tb[tb.size() / 2]};
}

template <typename A, typename B>
double max_rel(const BufT<A>& a, const BufT<B>& b) {
  double worst = 0, scale = 0;
  for (size_t i = 0; i < a.v.size(); ++i) {
    worst = std::max(worst, std::fabs(static_cast<double>(a.v[i]) - static_cast<double>(b.v[i])));
    scale = std::max(scale, std::fabs(static_cast<double>(b.v[i])));
  }
  return worst / std::max(scale, 1e-30);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t T = 4096, H = 8, P = 64, N = 128, G = 1, B = 1, Q = 128;
  int runs = 11;
  bool backward = true, f64_ref = true;
  for (int i = 1; i < argc; ++i) {
    auto next = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", argv[i]);
        std::exit(2);
      }
      return std::atoll(argv[++i]);
    };
    std::string a = argv[i];
    if (a == "--T") T = next();
    else if (a == "--H") H = next();
    else if (a == "--P") P = next();
    else if (a == "--N") N = next();
    else if (a == "--G") G = next();
    else if (a == "--B") B = next();
    else if (a == "--chunk") Q = next();
    else if (a == "--runs") runs = static_cast<int>(next());
    else if (a == "--no-backward") backward = false;
    else if (a == "--no-f64") f64_ref = false;
    else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  Buf x({B, T, H, P}), dt({B, T, H}), A_log({H}), Bm({B, T, G, N}), Cm({B, T, G, N}), D({H}),
      dt_bias({H});
  x.normal(1, 1.0f);
  dt.normal(2, 0.5f);
  for (int64_t h = 0; h < H; ++h) {
    A_log.v[static_cast<size_t>(h)] = std::log(1.0f + 15.0f * static_cast<float>(h) / static_cast<float>(H));
    dt_bias.v[static_cast<size_t>(h)] = -4.0f + 0.3f * static_cast<float>(h);  // dt ≈ 0.02 .. 0.15
  }
  Bm.normal(3, 1.0f / std::sqrt(static_cast<float>(N)));
  Cm.normal(4, 1.0f);
  D.normal(5, 1.0f);
  SsdParams p;
  p.x = x.t;
  p.dt = dt.t;
  p.A_log = A_log.t;
  p.Bm = Bm.t;
  p.Cm = Cm.t;
  p.D = D.t;
  p.dt_bias = dt_bias.t;
  p.chunk = Q;

  std::printf("SSD CPU fp32: B=%lld T=%lld H=%lld P=%lld N=%lld G=%lld chunk=%lld, %d threads, "
              "median of %d interleaved runs\n",
              (long long)B, (long long)T, (long long)H, (long long)P, (long long)N, (long long)G,
              (long long)Q, omp_get_max_threads(), runs);
  Buf y_seq({B, T, H, P}), y_chk({B, T, H, P}), hf_seq({B, H, P, N}), hf_chk({B, H, P, N});
  auto [t_seq, t_chk] = median_ms_pair(
      runs, [&] { cpu::ssd_forward_sequential(p, y_seq.t, hf_seq.t); },
      [&] { cpu::ssd_forward(p, y_chk.t, hf_chk.t); });
  double err = std::max(max_rel(y_chk, y_seq), max_rel(hf_chk, hf_seq));
  std::printf("forward           sequential %9.2f ms   chunked %9.2f ms   speed-up %5.2fx   "
              "max rel diff %.2e\n",
              t_seq, t_chk, t_seq / t_chk, err);
  if (!backward) return 0;

  Buf dy({B, T, H, P});
  dy.normal(6, 1.0f);
  struct G8 {
    Buf dx, ddt, dA, dB, dC, dD, dbias;
  };
  auto make = [&] {
    return G8{Buf({B, T, H, P}), Buf({B, T, H}), Buf({H}), Buf({B, T, G, N}), Buf({B, T, G, N}),
              Buf({H}), Buf({H})};
  };
  G8 gs = make(), gc = make();
  auto view = [](G8& g) {
    SsdGrads v;
    v.dx = g.dx.t;
    v.ddt = g.ddt.t;
    v.dA_log = g.dA.t;
    v.dBm = g.dB.t;
    v.dCm = g.dC.t;
    v.dD = g.dD.t;
    v.ddt_bias = g.dbias.t;
    return v;
  };
  auto zero_params = [](G8& g) {
    std::fill(g.dA.v.begin(), g.dA.v.end(), 0.0f);
    std::fill(g.dD.v.begin(), g.dD.v.end(), 0.0f);
    std::fill(g.dbias.v.begin(), g.dbias.v.end(), 0.0f);
  };
  auto [tb_seq, tb_chk] = median_ms_pair(
      runs,
      [&] {
        zero_params(gs);
        cpu::ssd_forward_sequential(p, y_seq.t, Tensor());
        cpu::ssd_backward_sequential(p, dy.t, Tensor(), view(gs));
      },
      [&] {
        zero_params(gc);
        cpu::ssd_forward(p, y_chk.t, Tensor());
        cpu::ssd_backward(p, dy.t, Tensor(), view(gc));
      });
  double gerr = 0;
  const char* names[] = {"dx", "ddt", "dA_log", "dB", "dC", "dD", "ddt_bias"};
  Buf* a[] = {&gc.dx, &gc.ddt, &gc.dA, &gc.dB, &gc.dC, &gc.dD, &gc.dbias};
  Buf* b[] = {&gs.dx, &gs.ddt, &gs.dA, &gs.dB, &gs.dC, &gs.dD, &gs.dbias};
  std::printf("gradients max rel diff:");
  for (int i = 0; i < 7; ++i) {
    double e = max_rel(*a[i], *b[i]);
    gerr = std::max(gerr, e);
    std::printf(" %s %.1e", names[i], e);
  }
  std::printf("\n");
  std::printf("forward+backward  sequential %9.2f ms   chunked %9.2f ms   speed-up %5.2fx   "
              "max rel diff %.2e\n",
              tb_seq, tb_chk, tb_seq / tb_chk, gerr);
  if (!f64_ref) return 0;
  // The same problem in float64 (sequential scan): how far is each fp32 algorithm from it?
  Buf64 x64({B, T, H, P}), dt64({B, T, H}), A64({H}), B64({B, T, G, N}), C64({B, T, G, N}), D64({H}),
      bias64({H}), y64({B, T, H, P}), dy64({B, T, H, P});
  x64.copy_from(x);
  dt64.copy_from(dt);
  A64.copy_from(A_log);
  B64.copy_from(Bm);
  C64.copy_from(Cm);
  D64.copy_from(D);
  bias64.copy_from(dt_bias);
  dy64.copy_from(dy);
  SsdParams p64 = p;
  p64.x = x64.t;
  p64.dt = dt64.t;
  p64.A_log = A64.t;
  p64.Bm = B64.t;
  p64.Cm = C64.t;
  p64.D = D64.t;
  p64.dt_bias = bias64.t;
  struct G64 {
    Buf64 dx, ddt, dA, dB, dC, dD, dbias;
  };
  G64 gr{Buf64({B, T, H, P}), Buf64({B, T, H}), Buf64({H}), Buf64({B, T, G, N}),
         Buf64({B, T, G, N}), Buf64({H}), Buf64({H})};
  SsdGrads v64;
  v64.dx = gr.dx.t;
  v64.ddt = gr.ddt.t;
  v64.dA_log = gr.dA.t;
  v64.dBm = gr.dB.t;
  v64.dCm = gr.dC.t;
  v64.dD = gr.dD.t;
  v64.ddt_bias = gr.dbias.t;
  cpu::ssd_forward_sequential(p64, y64.t, Tensor());
  cpu::ssd_backward_sequential(p64, dy64.t, Tensor(), v64);
  Buf64* r[] = {&gr.dx, &gr.ddt, &gr.dA, &gr.dB, &gr.dC, &gr.dD, &gr.dbias};
  for (int which = 0; which < 2; ++which) {
    G8& g = which == 0 ? gs : gc;
    Buf* mine[] = {&g.dx, &g.ddt, &g.dA, &g.dB, &g.dC, &g.dD, &g.dbias};
    double worst = max_rel(which == 0 ? y_seq : y_chk, y64);
    std::printf("fp32 %-10s vs float64: y %.1e", which == 0 ? "sequential" : "chunked", worst);
    for (int i = 0; i < 7; ++i) std::printf(" %s %.1e", names[i], max_rel(*mine[i], *r[i]));
    std::printf("\n");
  }
  return 0;
}
