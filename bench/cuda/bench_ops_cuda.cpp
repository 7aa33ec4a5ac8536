// GPU benchmarks of the core CUDA ops at the model shapes: attention (forward, forward + backward,
// decode), the GEMMs of the 8B and 1.43B hybrids (forward, dgrad, wgrad), the decode GEMVs
// (M = 1 and 8, ours and cuBLASLt), cross-entropy, AdamW
// over 1.43B parameters, RMSNorm. CUDA-event timing, warm-up, medians; a table and --json FILE.
//
//   bench_ops_cuda [--json out.json] [--filter substring] [--iters 20] [--warmup 3]
#include <cuda_runtime.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/memory.h"
#include "core/rng.h"
#include "ops/adamw.h"
#include "ops/attention.h"
#include "ops/gemm.h"
#include "ops/loss.h"
#include "ops/norm.h"

using namespace hlm;

namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    fmt::print(stderr, "{}: {}\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

struct Options {
  std::string json, filter;
  int iters = 20, warmup = 3;
};

struct Result {
  std::string name, group, note;
  double ms = 0, tflops = 0, gbps = 0;
};

std::vector<Result> g_results;
Options g_opt;

bool selected(const std::string& name) {
  return g_opt.filter.empty() || name.find(g_opt.filter) != std::string::npos;
}

// Median milliseconds of fn over iters runs (each between its own pair of events), after warm-up.
double time_ms(const std::function<void()>& fn, int iters = -1) {
  if (iters < 0) iters = g_opt.iters;
  for (int i = 0; i < g_opt.warmup; ++i) fn();
  check(cudaDeviceSynchronize(), "warm-up");
  std::vector<cudaEvent_t> ev(static_cast<size_t>(2 * iters));
  for (auto& e : ev) check(cudaEventCreate(&e), "cudaEventCreate");
  for (int i = 0; i < iters; ++i) {
    check(cudaEventRecord(ev[static_cast<size_t>(2 * i)], nullptr), "cudaEventRecord");
    fn();
    check(cudaEventRecord(ev[static_cast<size_t>(2 * i + 1)], nullptr), "cudaEventRecord");
  }
  check(cudaDeviceSynchronize(), "timed runs");
  std::vector<double> ms(static_cast<size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    float m = 0;
    check(cudaEventElapsedTime(&m, ev[static_cast<size_t>(2 * i)], ev[static_cast<size_t>(2 * i + 1)]),
          "cudaEventElapsedTime");
    ms[static_cast<size_t>(i)] = m;
  }
  for (auto& e : ev) cudaEventDestroy(e);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void record(const std::string& name, const std::string& group, double ms, double flops, double bytes,
            const std::string& note = "") {
  Result r{name, group, note, ms, flops > 0 ? flops / (ms * 1e-3) / 1e12 : 0.0,
           bytes > 0 ? bytes / (ms * 1e-3) / 1e9 : 0.0};
  fmt::print("{:<34} {:>10.4f} ms {:>9.1f} TFLOP/s {:>9.1f} GB/s  {}\n", r.name, r.ms, r.tflops, r.gbps, note);
  std::fflush(stdout);
  g_results.push_back(r);
}

// Random (never zero) device contents: a 64 MiB random pattern uploaded once, tiled on the device.
class RandomSource {
 public:
  RandomSource() {
    // Every 16-bit half is a bf16 in [-2, 2): read as bf16 or as f32 (whose high half it is) the
    // values are moderate, never NaN or infinite.
    const size_t n = kBytes / 2;
    std::vector<uint16_t> host(n);
    Rng rng(1234, 0);
    for (size_t i = 0; i < n; ++i) host[i] = f32_to_bf16_bits(4.0f * rng.uniform() - 2.0f);
    buf_ = Buffer(Device::CUDA, kBytes);
    device_copy(buf_.data(), Device::CUDA, host.data(), Device::CPU, kBytes);
  }
  void fill(void* dst, size_t bytes) const {
    auto* d = static_cast<char*>(dst);
    for (size_t off = 0; off < bytes; off += kBytes)
      check(cudaMemcpy(d + off, buf_.data(), std::min(kBytes, bytes - off), cudaMemcpyDeviceToDevice),
            "fill");
  }
  // A fresh random tensor.
  Tensor make(std::vector<Buffer>& keep, DType dt, std::vector<int64_t> shape) const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    keep.emplace_back(Device::CUDA, static_cast<size_t>(n) * dtype_size(dt));
    fill(keep.back().data(), keep.back().size());
    return keep.back().as(dt, Shape(shape.data(), shape.size()));
  }

 private:
  static constexpr size_t kBytes = size_t{64} << 20;
  Buffer buf_;
};

// ---- attention -------------------------------------------------------------------------------

void bench_attention(const RandomSource& rnd) {
  const int64_t B = 1, Hq = 32, Hkv = 8, E = 128;
  for (int64_t L : {4096, 16384, 65536}) {
    const std::string sfx = fmt::format("_L{}", L);
    if (!selected("attn_fwd" + sfx) && !selected("attn_fwdbwd" + sfx)) continue;
    std::vector<Buffer> keep;
    AttentionParams p;
    p.q = rnd.make(keep, DType::BF16, {B, L, Hq, E});
    p.k = rnd.make(keep, DType::BF16, {B, L, Hkv, E});
    p.v = rnd.make(keep, DType::BF16, {B, L, Hkv, E});
    p.scale = 1.0f / std::sqrt(static_cast<float>(E));
    Tensor out = rnd.make(keep, DType::BF16, {B, L, Hq, E});
    Tensor lse = rnd.make(keep, DType::F32, {B, Hq, L});
    Tensor dout = rnd.make(keep, DType::BF16, {B, L, Hq, E});
    Tensor dq = rnd.make(keep, DType::BF16, {B, L, Hq, E});
    Tensor dk = rnd.make(keep, DType::BF16, {B, L, Hkv, E});
    Tensor dv = rnd.make(keep, DType::BF16, {B, L, Hkv, E});
    const double fwd_flops = 2.0 * B * Hq * static_cast<double>(L) * L * E;  // causal: half of 4·L²·E
    const int iters = L >= 65536 ? std::max(5, g_opt.iters / 4) : g_opt.iters;
    struct Variant {
      const char* suffix;
      const char* backend;
      const char* deterministic;
    };
    for (Variant v : {Variant{"", "auto", "1"}, Variant{"_fast", "cudnn", "0"}, Variant{"_own", "own", "1"}}) {
      setenv("HLM_ATTENTION", v.backend, 1);
      setenv("HLM_DETERMINISTIC", v.deterministic, 1);
      const std::string note = fmt::format("backend={} deterministic={}", v.backend, v.deterministic);
      try {
        const bool fast = std::strcmp(v.suffix, "_fast") == 0;  // its forward is the default one
        if (!fast && selected("attn_fwd" + sfx + v.suffix)) {
          double ms = time_ms([&] { attention_forward(p, out, lse); }, iters);
          record("attn_fwd" + sfx + v.suffix, "attention", ms, fwd_flops, 0, note);
        }
        if (selected("attn_fwdbwd" + sfx + v.suffix)) {
          double ms = time_ms([&] {
            attention_forward(p, out, lse);
            attention_backward(p, out, lse, dout, dq, dk, dv);
          }, iters);
          record("attn_fwdbwd" + sfx + v.suffix, "attention", ms, 3.5 * fwd_flops, 0, note);
        }
      } catch (const std::exception& e) {
        fmt::print("{:<34} failed: {}\n", "attn" + sfx + v.suffix, e.what());
      }
    }
    unsetenv("HLM_ATTENTION");
    unsetenv("HLM_DETERMINISTIC");
  }
}

void bench_decode(const RandomSource& rnd) {
  const int64_t B = 1, Hq = 32, Hkv = 8, E = 128;
  for (int64_t S : {2048, 32768, 131072}) {
    const std::string name = fmt::format("decode_S{}", S);
    if (!selected(name)) continue;
    std::vector<Buffer> keep;
    Tensor q = rnd.make(keep, DType::BF16, {B, Hq, E});
    Tensor kc = rnd.make(keep, DType::BF16, {B, S, Hkv, E});
    Tensor vc = rnd.make(keep, DType::BF16, {B, S, Hkv, E});
    Tensor out = rnd.make(keep, DType::BF16, {B, Hq, E});
    keep.emplace_back(Device::CUDA, 2 * sizeof(int32_t));
    Tensor start = keep.back().as(DType::I32, {B});
    keep.emplace_back(Device::CUDA, 2 * sizeof(int32_t));
    Tensor len = keep.back().as(DType::I32, {B});
    int32_t zero = 0, full = static_cast<int32_t>(S);
    device_copy(start.data, Device::CUDA, &zero, Device::CPU, sizeof(int32_t));
    device_copy(len.data, Device::CUDA, &full, Device::CPU, sizeof(int32_t));
    const double bytes = 2.0 * B * S * Hkv * E * 2;
    double ms = time_ms([&] { attention_decode(q, kc, vc, start, len, 0.0883883f, out); });
    record(name, "decode", ms, 4.0 * B * Hq * S * E, bytes);
  }
}

// ---- GEMMs -----------------------------------------------------------------------------------

struct Proj {
  const char* model;
  const char* name;
  int64_t in, out;
};

void bench_gemms(const RandomSource& rnd) {
  const int64_t M = 8192;
  const std::vector<Proj> projs = {
      {"8b", "in_proj", 4096, 18560},  {"8b", "out_proj", 8192, 4096}, {"8b", "q_proj", 4096, 4096},
      {"8b", "kv_proj", 4096, 1024},   {"8b", "o_proj", 4096, 4096},   {"8b", "mlp_up", 4096, 16384},
      {"8b", "mlp_down", 16384, 4096}, {"1p4b", "in_proj", 2048, 10304}, {"1p4b", "out_proj", 4096, 2048},
      {"1p4b", "q_proj", 2048, 2048},  {"1p4b", "kv_proj", 2048, 1024}, {"1p4b", "o_proj", 2048, 2048},
      {"1p4b", "mlp_up", 2048, 4096},  {"1p4b", "mlp_down", 4096, 2048}, {"1p4b", "lm_head", 2048, 50304},
  };
  for (const Proj& pr : projs) {
    const std::string base = fmt::format("gemm_{}_{}", pr.model, pr.name);
    if (!selected(base)) continue;
    std::vector<Buffer> keep;
    const int64_t K = pr.in, N = pr.out;
    Tensor x = rnd.make(keep, DType::BF16, {M, K});
    Tensor w = rnd.make(keep, DType::BF16, {N, K});
    Tensor y = rnd.make(keep, DType::BF16, {M, N});
    Tensor dx = rnd.make(keep, DType::BF16, {M, K});
    Tensor dw = rnd.make(keep, DType::F32, {N, K});
    const double flops = 2.0 * M * N * K;
    const std::string shape = fmt::format("M={} N={} K={}", M, N, K);
    if (selected(base + "_fwd"))
      record(base + "_fwd", "gemm", time_ms([&] { linear_forward(x, w, Tensor(), y); }), flops, 0, shape);
    if (selected(base + "_dgrad"))
      record(base + "_dgrad", "gemm",
             time_ms([&] { linear_backward(y, x, w, dx, Tensor(), Tensor(), false); }), flops, 0, shape);
    if (selected(base + "_wgrad"))
      record(base + "_wgrad", "gemm",
             time_ms([&] { linear_backward(y, x, w, Tensor(), dw, Tensor(), false); }), flops, 0,
             shape + " dW F32 +=");
  }
}

// Decode GEMV: y[M,N] = x[M,K] · Wᵀ at M = 1 and 8, the 8B model's projections; GB/s counts the
// weight bytes (the floor: W / 4.2 TB/s). Weights rotate over copies totalling ≥ 256 MB so no
// run finds W in L2. Plain rows: what linear_forward picks (M = 1: our streaming GEMV; M = 8:
// cuBLASLt for weights above 8M elements); `_cublaslt`: cuBLASLt always; `_mma`: our
// tensor-core GEMV (HLM_GEMM=gemv HLM_GEMV=mma).
void bench_gemv(const RandomSource& rnd) {
  const std::vector<Proj> projs = {
      {"8b", "in_proj", 4096, 18560}, {"8b", "out_proj", 8192, 4096}, {"8b", "q_proj", 4096, 4096},
      {"8b", "kv_proj", 4096, 1024},  {"8b", "mlp_up", 4096, 16384},  {"8b", "mlp_down", 16384, 4096},
      {"8b", "lm_head", 4096, 50304},
  };
  for (const Proj& pr : projs) {
    for (int64_t M : {1, 8}) {
      const std::string base = fmt::format("gemv_{}_{}_m{}", pr.model, pr.name, M);
      if (!selected(base)) continue;
      std::vector<Buffer> keep;
      const int64_t K = pr.in, N = pr.out;
      const double wbytes = 2.0 * static_cast<double>(N) * K;
      const int copies = static_cast<int>(std::max(1.0, std::ceil(256e6 / wbytes)));
      std::vector<Tensor> ws;
      for (int i = 0; i < copies; ++i) ws.push_back(rnd.make(keep, DType::BF16, {N, K}));
      Tensor x = rnd.make(keep, DType::BF16, {M, K});
      Tensor y = rnd.make(keep, DType::BF16, {M, N});
      const std::string shape = fmt::format("M={} N={} K={} floor {:.1f} us", M, N, K, wbytes / 4.2e6);
      for (const char* mode : {"auto", "cublaslt", "mma"}) {
        const std::string name = base + (std::strcmp(mode, "auto") == 0 ? "" : std::string("_") + mode);
        if (!selected(name)) continue;
        setenv("HLM_GEMM", std::strcmp(mode, "mma") == 0 ? "gemv" : mode, 1);
        if (std::strcmp(mode, "mma") == 0) setenv("HLM_GEMV", "mma", 1);
        int i = 0;
        const double ms = time_ms([&] { linear_forward(x, ws[static_cast<size_t>(i++ % copies)], Tensor(), y); },
                                  std::max(g_opt.iters, 50));
        record(name, "gemv", ms, 2.0 * M * N * K, wbytes, shape);
      }
      unsetenv("HLM_GEMM");
      unsetenv("HLM_GEMV");
    }
  }
}

// ---- cross-entropy, AdamW, RMSNorm -------------------------------------------------------------

void bench_ce(const RandomSource& rnd) {
  if (!selected("ce_")) return;
  const int64_t M = 8192, V = 50304;
  std::vector<Buffer> keep;
  Tensor logits = rnd.make(keep, DType::BF16, {M, V});
  Tensor work = rnd.make(keep, DType::BF16, {M, V});
  Tensor losses = rnd.make(keep, DType::F32, {M});
  Tensor lse = rnd.make(keep, DType::F32, {M});
  keep.emplace_back(Device::CUDA, static_cast<size_t>(M) * 4);
  Tensor targets = keep.back().as(DType::I32, {M});
  std::vector<int32_t> tg(static_cast<size_t>(M));
  Rng rng(7, 0);
  for (auto& t : tg) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(V)));
  device_copy(targets.data, Device::CUDA, tg.data(), Device::CPU, tg.size() * 4);
  const double bytes = static_cast<double>(M) * V * 2;
  if (selected("ce_fwd"))
    record("ce_fwd", "loss", time_ms([&] { cross_entropy_forward(logits, targets, kIgnoreIndex, losses, lse); }),
           0, bytes, "M=8192 V=50304 bf16");
  if (selected("ce_fwdbwd")) {
    // Backward in place into a copy of the logits (the copy is timed separately and subtracted).
    auto copy = [&] {
      check(cudaMemcpyAsync(work.data, logits.data, logits.nbytes(), cudaMemcpyDeviceToDevice, nullptr), "copy");
    };
    const double copy_ms = time_ms(copy);
    const double ms = time_ms([&] {
      copy();
      cross_entropy_forward(work, targets, kIgnoreIndex, losses, lse);
      cross_entropy_backward(work, targets, lse, kIgnoreIndex, 1.0f / M, work);
    });
    record("ce_fwdbwd", "loss", ms - copy_ms, 0, 3 * bytes, "in place; logits copy subtracted");
  }
}

void bench_adamw(const RandomSource& rnd) {
  if (!selected("adamw")) return;
  const int64_t n = 1430000000;
  std::vector<Buffer> keep;
  Tensor p = rnd.make(keep, DType::F32, {n});
  Tensor g = rnd.make(keep, DType::F32, {n});
  Tensor m = rnd.make(keep, DType::F32, {n});
  Tensor v = rnd.make(keep, DType::F32, {n});
  Tensor low = rnd.make(keep, DType::BF16, {n});
  // v must be non-negative: start from zero (the first step's state); it is random after one step.
  check(cudaMemset(v.data, 0, v.nbytes()), "memset v");
  std::vector<AdamWSegment> segs;
  for (int64_t off = 0; off < n;) {  // ~ a parameter table: matrices with decay, vectors without
    const int64_t sz = std::min<int64_t>(n - off, segs.size() % 4 == 3 ? 4096 : 8388608);
    segs.push_back({off, sz, segs.size() % 4 == 3 ? 0.0f : 0.1f});
    off += sz;
  }
  AdamWHyper hp;
  int64_t step = 1;
  const double bytes = static_cast<double>(n) * (16 + 12 + 2);
  record("adamw_1p43b", "optimizer", time_ms([&] {
           hp.step = step++;
           adamw_step(p, g, m, v, low, segs, hp, 1.0f);
         }), 0, bytes, fmt::format("{} params, {} segments, bf16 copy", n, segs.size()));
}

void bench_rmsnorm(const RandomSource& rnd) {
  for (int64_t D : {2048, 4096}) {
    const std::string name = fmt::format("rmsnorm_D{}", D);
    if (!selected(name)) continue;
    const int64_t M = 8192;
    std::vector<Buffer> keep;
    Tensor x = rnd.make(keep, DType::BF16, {M, D});
    Tensor y = rnd.make(keep, DType::BF16, {M, D});
    Tensor dx = rnd.make(keep, DType::BF16, {M, D});
    Tensor w = rnd.make(keep, DType::F32, {D});
    Tensor dw = rnd.make(keep, DType::F32, {D});
    Tensor rstd = rnd.make(keep, DType::F32, {M});
    record(name + "_fwd", "norm", time_ms([&] { rmsnorm_forward(x, w, 1e-5f, y, rstd); }), 0,
           2.0 * M * D * 2);
    record(name + "_bwd", "norm", time_ms([&] { rmsnorm_backward(y, x, w, rstd, dx, dw); }), 0,
           3.0 * M * D * 2);
  }
}

// Gated RMSNorm: x [M, D], z and dz column slices of the [M, W] in_proj activation and its gradient
// (as the mixer passes them), groups of gs. With vpt_variants, the forward also under each
// HLM_GATED_VPT cap in the same run.
void bench_gated_case(const RandomSource& rnd, const std::string& name, int64_t M, int64_t D, int64_t gs, int64_t W,
                      DType w_dtype, bool vpt_variants) {
  std::vector<Buffer> keep;
  Tensor x = rnd.make(keep, DType::BF16, {M, D});
  Tensor zx = rnd.make(keep, DType::BF16, {M, W});
  Tensor dzx = rnd.make(keep, DType::BF16, {M, W});
  Tensor z = zx.slice(-1, 0, D), dz = dzx.slice(-1, 0, D);
  Tensor y = rnd.make(keep, DType::BF16, {M, D});
  Tensor dx = rnd.make(keep, DType::BF16, {M, D});
  Tensor w = rnd.make(keep, w_dtype, {D});
  Tensor dw = rnd.make(keep, DType::F32, {D});
  Tensor rstd = rnd.make(keep, DType::F32, {M, D / gs});
  const double tensor_bytes = 2.0 * M * D;  // one [M, D] bf16 tensor
  auto floor_note = [](double bytes, const char* what) {
    return fmt::format("{}; byte floor {:.1f} us at 4.0 TB/s", what, bytes / 4.0e12 * 1e6);
  };
  // Default (at most 2 vectors per thread), round 9's 4, and 1.
  for (const char* vpt : vpt_variants ? std::vector<const char*>{"", "4", "1"} : std::vector<const char*>{""}) {
    if (*vpt)
      setenv("HLM_GATED_VPT", vpt, 1);
    else
      unsetenv("HLM_GATED_VPT");
    record(name + "_fwd" + (*vpt ? std::string("_vpt") + vpt : std::string()), "norm",
           time_ms([&] { gated_rmsnorm_forward(x, z, w, gs, 1e-5f, y, rstd); }), 0, 3 * tensor_bytes,
           floor_note(3 * tensor_bytes, "x, z in, y out"));
  }
  unsetenv("HLM_GATED_VPT");
  record(name + "_bwd", "norm", time_ms([&] { gated_rmsnorm_backward(y, x, z, w, rstd, gs, dx, dz, dw); }), 0,
         5 * tensor_bytes, floor_note(5 * tensor_bytes, "dy, x, z in, dx, dz out"));
}

// The 1.43B training shape (T = 8192, d_inner 4096, 8 groups of 512, W 10304, fp32 w) and the 8B
// mixer shape (d_inner 8192, 8 groups of 1024, W 18560, the bf16 working copy of w) at T = 2K, 32K.
void bench_gated_rmsnorm(const RandomSource& rnd) {
  if (selected("gated_rmsnorm_1p4b")) bench_gated_case(rnd, "gated_rmsnorm_1p4b", 8192, 4096, 512, 10304, DType::F32, false);
  if (!selected("gated_rmsnorm_8b")) return;
  for (const int64_t M : {2048, 32768})
    bench_gated_case(rnd, fmt::format("gated_rmsnorm_8b_T{}K", M / 1024), M, 8192, 1024, 18560, DType::BF16, true);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        fmt::print(stderr, "{}: missing value\n", a);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--json") g_opt.json = next();
    else if (a == "--filter") g_opt.filter = next();
    else if (a == "--iters") g_opt.iters = std::max(3, std::atoi(next().c_str()));
    else if (a == "--warmup") g_opt.warmup = std::max(1, std::atoi(next().c_str()));
    else {
      fmt::print(stderr, "usage: {} [--json FILE] [--filter S] [--iters N] [--warmup N]\n", argv[0]);
      return 2;
    }
  }
  if (!cuda_available()) {
    fmt::print("skipped: no GPU\n");
    return 0;
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  fmt::print("device: {} ({} SMs), iters {} (median), warm-up {}\n", prop.name, prop.multiProcessorCount,
             g_opt.iters, g_opt.warmup);
  try {
    RandomSource rnd;
    bench_gemms(rnd);
    bench_gemv(rnd);
    bench_attention(rnd);
    bench_decode(rnd);
    bench_ce(rnd);
    bench_rmsnorm(rnd);
    bench_gated_rmsnorm(rnd);
    bench_adamw(rnd);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_ops_cuda: {}\n", e.what());
    return 1;
  }
  if (!g_opt.json.empty()) {
    nlohmann::json j;
    j["device"] = prop.name;
    j["source"] = "hybridlm";
    for (const Result& r : g_results)
      j["results"].push_back({{"name", r.name}, {"group", r.group}, {"ms", r.ms}, {"tflops", r.tflops},
                              {"gbps", r.gbps}, {"note", r.note}});
    std::ofstream f(g_opt.json + ".tmp");
    f << j.dump(2) << "\n";
    f.close();
    std::rename((g_opt.json + ".tmp").c_str(), g_opt.json.c_str());
    fmt::print("wrote {}\n", g_opt.json);
  }
  return 0;
}
