// Benchmark: forward+backward time of every CPU op at the shapes of a small hybrid model
// (d_model 256, Mamba 8 heads × 64, d_state 64, attention 4 × 64, MLP 1024 relu², T 512), split
// into GEMM and non-GEMM time, so the non-GEMM share of a layer's step can be watched.
// Usage: bench_ops_cpu [--B 4] [--T 512] [--V 50304] [--runs 5]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <omp.h>

#include "core/rng.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/conv1d.h"
#include "ops/embedding.h"
#include "ops/gemm.h"
#include "ops/loss.h"
#include "ops/norm.h"
#include "ops/ssd.h"

using namespace hlm;

namespace {

struct Buf {
  std::vector<float> v;
  Tensor t;
  Buf(std::vector<int64_t> shape, float scale = 0.5f, uint64_t seed = 1) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    v.resize(static_cast<size_t>(n));
    Rng r(seed);
    for (float& x : v) x = scale * r.normal();
    t = Tensor(v.data(), DType::F32, Device::CPU, Shape(shape.data(), shape.size()));
  }
};

double median_ms(int runs, const std::function<void()>& fn) {
  fn();
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

struct Row {
  std::string name;
  bool gemm;
  double ms;
};

}  // namespace

int main(int argc, char** argv) {
  int64_t B = 4, T = 512, V = 50304;
  int runs = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    long long val = std::atoll(argv[i + 1]);
    if (a == "--B") B = val;
    else if (a == "--T") T = val;
    else if (a == "--V") V = val;
    else if (a == "--runs") runs = static_cast<int>(val);
    else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  const int64_t M = B * T, Dm = 256, H = 8, P = 64, N = 64, G = 1, DI = H * P, K = 4;
  const int64_t CONV = DI + 2 * G * N, INP = 2 * DI + 2 * G * N + H;  // in_proj: z, xBC, dt
  const int64_t Hq = 4, Hkv = 2, E = 64, F = 1024;
  std::vector<Row> rows;
  auto add = [&](const std::string& name, bool gemm, const std::function<void()>& fn) {
    rows.push_back({name, gemm, median_ms(runs, fn)});
  };
  Buf x({B, T, Dm}), w_norm({Dm}, 0.1f), y({B, T, Dm}), rstd({M}), dx({B, T, Dm}), dw_norm({Dm});
  add("rmsnorm fwd+bwd", false, [&] {
    rmsnorm_forward(x.t, w_norm.t, 1e-5f, y.t, rstd.t);
    rmsnorm_backward(y.t, x.t, w_norm.t, rstd.t, dx.t, dw_norm.t);
  });
  // Mamba mixer
  Buf w_in({INP, Dm}, 0.05f), zxbcdt({B, T, INP}), dzxbcdt({B, T, INP}), dw_in({INP, Dm});
  add("mamba in_proj fwd+bwd", true, [&] {
    linear_forward(x.t, w_in.t, Tensor(), zxbcdt.t);
    linear_backward(zxbcdt.t, x.t, w_in.t, dx.t, dw_in.t, Tensor(), false);
  });
  Tensor xBC = zxbcdt.t.slice(2, DI, CONV);
  Buf cw({CONV, K}), cb({CONV}), xbc_act({B, T, CONV}), dxbc({B, T, CONV}), dcw({CONV, K}), dcb({CONV});
  add("conv1d+silu fwd+bwd", false, [&] {
    conv1d_silu_forward(xBC, cw.t, cb.t, Tensor(), xbc_act.t);
    conv1d_silu_backward(xbc_act.t, xBC, cw.t, cb.t, Tensor(), dxbc.t, dcw.t, dcb.t);
  });
  auto view4 = [&](Tensor base, int64_t off, int64_t width, int64_t a, int64_t b) {
    Tensor t = base.slice(2, off, width);
    t.ndim = 4;
    t.shape = {B, T, a, b, 0, 0};
    t.stride = {base.stride[0], base.stride[1], b, 1, 0, 0};
    return t;
  };
  Buf A_log({H}, 0.3f), D({H}), dt_bias({H}, 0.1f), ys({B, T, H, P}), dys({B, T, H, P}, 0.5f, 3);
  Buf gdx({B, T, H, P}), gddt({B, T, H}), gdB({B, T, G, N}), gdC({B, T, G, N}), gA({H}), gD({H}), gbias({H});
  SsdParams sp;
  sp.x = view4(xbc_act.t, 0, DI, H, P);
  sp.Bm = view4(xbc_act.t, DI, G * N, G, N);
  sp.Cm = view4(xbc_act.t, DI + G * N, G * N, G, N);
  sp.dt = zxbcdt.t.slice(2, DI + CONV, H);
  sp.A_log = A_log.t;
  sp.D = D.t;
  sp.dt_bias = dt_bias.t;
  sp.chunk = 128;
  SsdGrads sg;
  sg.dx = gdx.t;
  sg.ddt = gddt.t;
  sg.dBm = gdB.t;
  sg.dCm = gdC.t;
  sg.dA_log = gA.t;
  sg.dD = gD.t;
  sg.ddt_bias = gbias.t;
  add("ssd chunked fwd+bwd", false, [&] {
    ssd_forward(sp, ys.t, Tensor());
    ssd_backward(sp, dys.t, Tensor(), sg);
  });
  Tensor z = zxbcdt.t.slice(2, 0, DI);
  Buf gw({DI}, 0.1f), gy({B, T, DI}), grstd({M, 1}), gdxx({B, T, DI}), gdz({B, T, DI}), gdw({DI});
  add("gated rmsnorm fwd+bwd", false, [&] {
    gated_rmsnorm_forward(ys.t.reshape({B, T, DI}), z, gw.t, DI / G, 1e-5f, gy.t, grstd.t);
    gated_rmsnorm_backward(gy.t, ys.t.reshape({B, T, DI}), z, gw.t, grstd.t, DI / G, gdxx.t, gdz.t, gdw.t);
  });
  Buf w_out({Dm, DI}, 0.05f), dw_out({Dm, DI});
  add("mamba out_proj fwd+bwd", true, [&] {
    linear_forward(gy.t, w_out.t, Tensor(), y.t);
    linear_backward(y.t, gy.t, w_out.t, gdxx.t, dw_out.t, Tensor(), false);
  });
  // Attention
  const int64_t QKV = (Hq + 2 * Hkv) * E;
  Buf w_qkv({QKV, Dm}, 0.05f), qkv({B, T, QKV}), dqkv({B, T, QKV}), dw_qkv({QKV, Dm});
  add("attention qkv proj fwd+bwd", true, [&] {
    linear_forward(x.t, w_qkv.t, Tensor(), qkv.t);
    linear_backward(qkv.t, x.t, w_qkv.t, dx.t, dw_qkv.t, Tensor(), false);
  });
  Buf ao({B, T, Hq, E}), alse({B, Hq, T}), dao({B, T, Hq, E}, 0.5f, 4);
  AttentionParams ap{view4(qkv.t, 0, Hq * E, Hq, E), view4(qkv.t, Hq * E, Hkv * E, Hkv, E),
                     view4(qkv.t, (Hq + Hkv) * E, Hkv * E, Hkv, E), Tensor(), 0.125f};
  add("attention core fwd+bwd", false, [&] {
    attention_forward(ap, ao.t, alse.t);
    attention_backward(ap, ao.t, alse.t, dao.t, view4(dqkv.t, 0, Hq * E, Hq, E),
                       view4(dqkv.t, Hq * E, Hkv * E, Hkv, E),
                       view4(dqkv.t, (Hq + Hkv) * E, Hkv * E, Hkv, E));
  });
  Buf w_o({Dm, Hq * E}, 0.05f), dw_o({Dm, Hq * E});
  add("attention o_proj fwd+bwd", true, [&] {
    linear_forward(ao.t.reshape({B, T, Hq * E}), w_o.t, Tensor(), y.t);
    linear_backward(y.t, ao.t.reshape({B, T, Hq * E}), w_o.t, dao.t.reshape({B, T, Hq * E}), dw_o.t, Tensor(), false);
  });
  // MLP
  Buf w_up({F, Dm}, 0.05f), up({B, T, F}), act({B, T, F}), dup({B, T, F}), dw_up({F, Dm}), w_down({Dm, F}, 0.03f), dw_down({Dm, F});
  add("mlp up+down fwd+bwd", true, [&] {
    linear_forward(x.t, w_up.t, Tensor(), up.t);
    linear_forward(act.t, w_down.t, Tensor(), y.t);
    linear_backward(y.t, act.t, w_down.t, dup.t, dw_down.t, Tensor(), false);
    linear_backward(dup.t, x.t, w_up.t, dx.t, dw_up.t, Tensor(), false);
  });
  add("relu² fwd+bwd", false, [&] {
    activation_forward(Activation::ReluSquared, up.t, act.t);
    activation_backward(Activation::ReluSquared, up.t, act.t, dup.t);
  });
  // Head
  if (V > 0) {
    Buf table({V, Dm}, 0.02f), logits({M, V}), losses({M}), lse({M}), dtable({V, Dm});
    std::vector<int32_t> ids(static_cast<size_t>(M));
    for (int64_t m = 0; m < M; ++m) ids[static_cast<size_t>(m)] = static_cast<int32_t>((m * 7919) % V);
    Tensor idt(ids.data(), DType::I32, Device::CPU, {M});
    add("embedding fwd+bwd", false, [&] {
      embedding_forward(idt, table.t, x.t);
      embedding_backward(idt, x.t, dtable.t);
    });
    add("lm head fwd+bwd (tied)", true, [&] {
      linear_forward(x.t, table.t, Tensor(), logits.t);
      linear_backward(logits.t, x.t, table.t, dx.t, dtable.t, Tensor(), false);
    });
    add("cross-entropy fwd+bwd", false, [&] {
      cross_entropy_forward(logits.t, idt, kIgnoreIndex, losses.t, lse.t);
      cross_entropy_backward(logits.t, idt, lse.t, kIgnoreIndex, 1.0f / static_cast<float>(M), logits.t);
    });
  }
  double gemm = 0, other = 0;
  std::printf("CPU ops fwd+bwd, fp32, B=%lld T=%lld d_model=%lld V=%lld, %d threads, median of %d\n",
              (long long)B, (long long)T, (long long)Dm, (long long)V, omp_get_max_threads(), runs);
  for (const Row& r : rows) {
    std::printf("  %-28s %9.2f ms  %s\n", r.name.c_str(), r.ms, r.gemm ? "GEMM" : "");
    (r.gemm ? gemm : other) += r.ms;
  }
  std::printf("GEMM %.1f ms, non-GEMM %.1f ms: non-GEMM share %.1f%%\n", gemm, other,
              100.0 * other / (gemm + other));
  return 0;
}
