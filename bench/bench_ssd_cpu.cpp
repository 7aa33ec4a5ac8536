// Benchmark: CPU chunked SSD (BLAS GEMMs) against the sequential recurrence, forward and
// forward+backward, fp32. Prints medians, the speed-up and the max relative difference.
// Usage: bench_ssd_cpu [--T 4096] [--H 8] [--P 64] [--N 128] [--G 1] [--B 1] [--chunk 128]
//                      [--runs 7] [--no-backward]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <omp.h>

#include "core/rng.h"
#include "ops/ssd.h"

using namespace hlm;

namespace {

struct Buf {
  std::vector<float> v;
  Tensor t;
  Buf(std::vector<int64_t> shape) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    v.assign(static_cast<size_t>(n), 0.0f);
    t = Tensor(v.data(), DType::F32, Device::CPU, Shape(shape.data(), shape.size()));
  }
  void normal(uint64_t seed, float scale, float shift = 0.0f) {
    Rng r(seed);
    for (float& x : v) x = shift + scale * r.normal();
  }
};

double median_ms(int runs, const std::function<void()>& fn) {
  fn();  // warm-up
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

double max_rel(const Buf& a, const Buf& b) {
  double worst = 0, scale = 0;
  for (size_t i = 0; i < a.v.size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(a.v[i] - b.v[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(b.v[i])));
  }
  return worst / std::max(scale, 1e-30);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t T = 4096, H = 8, P = 64, N = 128, G = 1, B = 1, Q = 128;
  int runs = 7;
  bool backward = true;
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
              "median of %d runs\n",
              (long long)B, (long long)T, (long long)H, (long long)P, (long long)N, (long long)G,
              (long long)Q, omp_get_max_threads(), runs);
  Buf y_seq({B, T, H, P}), y_chk({B, T, H, P}), hf_seq({B, H, P, N}), hf_chk({B, H, P, N});
  double t_seq = median_ms(runs, [&] { cpu::ssd_forward_sequential(p, y_seq.t, hf_seq.t); });
  double t_chk = median_ms(runs, [&] { cpu::ssd_forward(p, y_chk.t, hf_chk.t); });
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
  double tb_seq = median_ms(runs, [&] {
    zero_params(gs);
    cpu::ssd_forward_sequential(p, y_seq.t, Tensor());
    cpu::ssd_backward_sequential(p, dy.t, Tensor(), view(gs));
  });
  double tb_chk = median_ms(runs, [&] {
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
  return 0;
}
