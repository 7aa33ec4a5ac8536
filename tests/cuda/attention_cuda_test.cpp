// CUDA attention (cuDNN graph and built-in kernels) matches the CPU op: causal, GQA, packed
// documents, batch > 1, head dims 64 and 128, T not a multiple of 64, q/k/v as slices of a fused
// projection; the deterministic backward is bitwise reproducible, also split into pieces under a
// small workspace limit; decode attention and RoPE too.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "ops/attention.h"

namespace hlm::test {
namespace {

struct AttnCase {
  const char* name;
  int64_t B, T, Hq, Hkv, E;
  std::vector<std::vector<int64_t>> doc_starts;  // per row; empty: no doc tensor
};

HostTensor bf16_normal(std::vector<int64_t> shape, uint64_t seed) {
  HostTensor h = random_normal(std::move(shape), seed);
  round_to_bf16(h);
  return h;
}

// Columns [col, col + H·E) of a [B,T,W] host tensor as a [B,T,H,E] F32 tensor.
HostTensor extract(const HostTensor& fused, int64_t col, int64_t H, int64_t E) {
  const int64_t B = fused.t.shape[0], T = fused.t.shape[1], W = fused.t.shape[2];
  HostTensor out(DType::F32, {B, T, H, E});
  for (int64_t bt = 0; bt < B * T; ++bt)
    for (int64_t i = 0; i < H * E; ++i) out.set(bt * H * E + i, fused.get(bt * W + col + i));
  return out;
}
void place(HostTensor& fused, const HostTensor& x, int64_t col) {
  const int64_t W = fused.t.shape[2], HE = x.t.shape[2] * x.t.shape[3];
  const int64_t BT = x.t.shape[0] * x.t.shape[1];
  for (int64_t bt = 0; bt < BT; ++bt)
    for (int64_t i = 0; i < HE; ++i) fused.set(bt * W + col + i, x.get(bt * HE + i));
}

HostTensor make_doc(const AttnCase& c) {
  HostTensor doc(DType::I32, {c.B, c.T});
  for (int64_t b = 0; b < c.B; ++b) {
    const auto& starts = c.doc_starts[static_cast<size_t>(b)];
    int32_t id = static_cast<int32_t>(100 * b);
    size_t k = 0;
    for (int64_t t = 0; t < c.T; ++t) {
      while (k < starts.size() && starts[k] == t) {
        ++id;
        ++k;
      }
      doc.set(b * c.T + t, id);
    }
  }
  return doc;
}

struct Reference {
  HostTensor q, k, v, dout, out, lse, dq, dk, dv, doc;
};

Reference cpu_reference(const AttnCase& c, uint64_t seed) {
  Reference r;
  r.q = bf16_normal({c.B, c.T, c.Hq, c.E}, seed + 1);
  r.k = bf16_normal({c.B, c.T, c.Hkv, c.E}, seed + 2);
  r.v = bf16_normal({c.B, c.T, c.Hkv, c.E}, seed + 3);
  r.dout = bf16_normal({c.B, c.T, c.Hq, c.E}, seed + 4);
  r.out = HostTensor(DType::F32, {c.B, c.T, c.Hq, c.E});
  r.lse = HostTensor(DType::F32, {c.B, c.Hq, c.T});
  r.dq = HostTensor(DType::F32, {c.B, c.T, c.Hq, c.E});
  r.dk = HostTensor(DType::F32, {c.B, c.T, c.Hkv, c.E});
  r.dv = HostTensor(DType::F32, {c.B, c.T, c.Hkv, c.E});
  AttentionParams p;
  p.q = r.q.t;
  p.k = r.k.t;
  p.v = r.v.t;
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.E));
  if (!c.doc_starts.empty()) {
    r.doc = make_doc(c);
    p.doc = r.doc.t;
  }
  attention_forward(p, r.out.t, r.lse.t);
  attention_backward(p, r.out.t, r.lse.t, r.dout.t, r.dq.t, r.dk.t, r.dv.t);
  return r;
}

// The device side: q, k, v inside one fused [B,T,(Hq+2Hkv)·E] buffer; out inside a wider buffer
// whose extra columns must stay untouched; dq, dk, dv inside one fused gradient buffer.
struct DeviceRun {
  DeviceTensor qkv, out_wide, lse, dout, dqkv, doc;
  int64_t W = 0, Wo = 0;
  AttentionParams p;
  Tensor out, dq, dk, dv;

  DeviceRun(const AttnCase& c, const Reference& r) {
    W = (c.Hq + 2 * c.Hkv) * c.E;
    Wo = c.Hq * c.E + 64;
    HostTensor fused(DType::F32, {c.B, c.T, W});
    place(fused, r.q, 0);
    place(fused, r.k, c.Hq * c.E);
    place(fused, r.v, (c.Hq + c.Hkv) * c.E);
    qkv = upload(fused, DType::BF16);
    out_wide = DeviceTensor(DType::BF16, {c.B, c.T, Wo});
    lse = DeviceTensor(DType::F32, {c.B, c.Hq, c.T});
    dout = upload(r.dout, DType::BF16);
    dqkv = DeviceTensor(DType::BF16, {c.B, c.T, W});
    p.q = head_view(qkv.t, 0, c.Hq, c.E);
    p.k = head_view(qkv.t, c.Hq * c.E, c.Hkv, c.E);
    p.v = head_view(qkv.t, (c.Hq + c.Hkv) * c.E, c.Hkv, c.E);
    p.scale = 1.0f / std::sqrt(static_cast<float>(c.E));
    if (!c.doc_starts.empty()) {
      doc = upload(r.doc, DType::I32);
      p.doc = doc.t;
    }
    out = head_view(out_wide.t, 0, c.Hq, c.E);
    dq = head_view(dqkv.t, 0, c.Hq, c.E);
    dk = head_view(dqkv.t, c.Hq * c.E, c.Hkv, c.E);
    dv = head_view(dqkv.t, (c.Hq + c.Hkv) * c.E, c.Hkv, c.E);
  }
  void forward() {
    poison(out_wide.t);
    poison(lse.t);
    attention_forward(p, out, lse.t);
  }
  void backward() {
    poison(dqkv.t);
    attention_backward(p, out, lse.t, dout.t, dq, dk, dv);
  }
};

void check_forward(const AttnCase& c, const Reference& r, DeviceRun& d, const std::string& what) {
  HostTensor wide = download(d.out_wide.t);
  EXPECT_LT(rel_error(extract(wide, 0, c.Hq, c.E), r.out), 1e-2) << what << ": out";
  for (int64_t bt = 0; bt < c.B * c.T; ++bt)
    for (int64_t i = c.Hq * c.E; i < d.Wo; ++i)
      ASSERT_TRUE(std::isnan(wide.get(bt * d.Wo + i))) << what << ": wrote outside out";
  EXPECT_LT(rel_error(download(d.lse.t), r.lse), 1e-4) << what << ": lse";
}

void check_backward(const AttnCase& c, const Reference& r, DeviceRun& d, const std::string& what) {
  HostTensor g = download(d.dqkv.t);
  EXPECT_LT(rel_error(extract(g, 0, c.Hq, c.E), r.dq), 2e-2) << what << ": dq";
  EXPECT_LT(rel_error(extract(g, c.Hq * c.E, c.Hkv, c.E), r.dk), 2e-2) << what << ": dk";
  EXPECT_LT(rel_error(extract(g, (c.Hq + c.Hkv) * c.E, c.Hkv, c.E), r.dv), 2e-2) << what << ": dv";
}

const std::vector<AttnCase>& cases() {
  static const std::vector<AttnCase> all = {
      {"gqa_e64_b2_t77", 2, 77, 4, 2, 64, {}},
      {"gqa_e128_docs_b2_t200", 2, 200, 8, 2, 128, {{31, 90, 150}, {5}}},
      {"mha_e128_onedoc_t130", 1, 130, 2, 2, 128, {{}}},
      {"gqa_e64_docs_t333", 1, 333, 6, 3, 64, {{1, 64, 65, 200, 332}}},
  };
  return all;
}

// Runs every case through one backend; deterministic backward twice, compared bitwise.
void run_backend(const std::string& backend, const char* deterministic) {
  ScopedEnv be("HLM_ATTENTION", backend.c_str());
  ScopedEnv det("HLM_DETERMINISTIC", deterministic);
  uint64_t seed = 100;
  for (const AttnCase& c : cases()) {
    const std::string what = backend + "/" + c.name + (deterministic[0] == '1' ? "/det" : "/nondet");
    Reference r = cpu_reference(c, seed += 10);
    DeviceRun d(c, r);
    d.forward();
    check_forward(c, r, d, what);
    d.backward();
    check_backward(c, r, d, what);
    if (deterministic[0] == '1') {
      std::vector<uint8_t> first = raw_bytes(d.dqkv.t);
      d.backward();
      EXPECT_EQ(first, raw_bytes(d.dqkv.t)) << what << ": backward not bitwise reproducible";
    }
  }
}

TEST(AttentionCuda, BuiltinKernels) {
  HLM_REQUIRE_GPU();
  run_backend("own", "1");
}

TEST(AttentionCuda, CudnnDeterministic) {
  HLM_REQUIRE_GPU();
  run_backend("cudnn", "1");
}

TEST(AttentionCuda, CudnnFast) {
  HLM_REQUIRE_GPU();
  run_backend("cudnn", "0");
}

TEST(AttentionCuda, Auto) {
  HLM_REQUIRE_GPU();
  run_backend("auto", "1");
}

// The 8B model's attention shape (32 query / 8 KV heads × 128) at a moderate length with packed
// documents, through the default path.
TEST(AttentionCuda, Hybrid8BShape) {
  HLM_REQUIRE_GPU();
  AttnCase c{"8b_t1024", 1, 1024, 32, 8, 128, {{300, 301, 777}}};
  Reference r = cpu_reference(c, 7);
  for (const char* backend : {"auto", "own"}) {
    ScopedEnv be("HLM_ATTENTION", backend);
    DeviceRun d(c, r);
    d.forward();
    check_forward(c, r, d, std::string(backend) + "/8b");
    d.backward();
    check_backward(c, r, d, std::string(backend) + "/8b");
  }
}

// dP workspace of cuDNN's deterministic backward for one query head (one row, or every packed
// sequence of the batch when there are documents), as attention_cudnn.cu counts it: the split
// tests set the limit in multiples of it.
double det_head_bytes(const AttnCase& c, const Reference& r) {
  auto pow2 = [](int64_t v) {
    int64_t p = 1;
    while (p < v) p <<= 1;
    return p;
  };
  int64_t b = 1, s = c.T;
  if (!c.doc_starts.empty()) {
    int64_t n = 0, longest = 0;
    for (int64_t row = 0; row < c.B; ++row) {
      int64_t t0 = 0;
      for (int64_t t = 1; t <= c.T; ++t) {
        if (t == c.T || r.doc.get(row * c.T + t) != r.doc.get(row * c.T + t - 1)) {
          ++n;
          longest = std::max(longest, t - t0);
          t0 = t;
        }
      }
    }
    b = pow2(n);
    s = std::min(pow2(std::max<int64_t>(longest, 64)), c.T);
  }
  return static_cast<double>(b) * static_cast<double>((s + 63) / 64 * 64) *
         static_cast<double>((s + 127) / 128 * 128) * 2.0;
}

std::string mib_text(double bytes) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6f", bytes / 1048576.0);
  return buf;
}

// The deterministic cuDNN backward split to fit a small workspace limit: into batch rows (limit of
// one row's Hq heads), KV-head groups (one group's G heads), and query sub-groups of 2 and 1 heads
// inside a group (dK/dV partials summed). Every split matches the CPU; dQ is bitwise the unsplit
// cuDNN result (a query head's dQ needs only its own dS and K, whatever the piece); dK/dV are
// within bf16 rounding of it (a sub-group's partials are rounded to bf16 before the sum); reruns
// are bitwise equal. Below one head the call is refused (HLM_ATTENTION=cudnn: an error).
void run_split_cases(const std::vector<AttnCase>& all) {
  ScopedEnv be("HLM_ATTENTION", "cudnn");
  ScopedEnv det("HLM_DETERMINISTIC", "1");
  uint64_t seed = 500;
  for (const AttnCase& c : all) {
    Reference r = cpu_reference(c, seed += 10);
    DeviceRun d(c, r);
    d.forward();
    d.backward();
    check_backward(c, r, d, std::string(c.name) + "/unsplit");
    const std::vector<uint8_t> dq_whole = raw_bytes(d.dq);
    const HostTensor dk_whole = download(d.dk), dv_whole = download(d.dv);
    const double head = det_head_bytes(c, r);
    const int64_t G = c.Hq / c.Hkv;
    std::vector<std::pair<std::string, int64_t>> levels = {{"kv_groups", G}, {"sub_groups_2", 2},
                                                           {"sub_groups_1", 1}};
    if (c.doc_starts.empty()) levels.insert(levels.begin(), {"rows", c.Hq});
    for (const auto& [level, heads] : levels) {
      const std::string what = std::string(c.name) + "/" + level;
      ScopedEnv limit("HLM_CUDNN_DET_WORKSPACE_MIB", mib_text((static_cast<double>(heads) + 0.5) * head).c_str());
      d.backward();
      check_backward(c, r, d, what);
      EXPECT_EQ(raw_bytes(d.dq), dq_whole) << what << ": dq differs from the unsplit backward";
      EXPECT_LT(rel_error(download(d.dk), dk_whole), 1e-2) << what << ": dk vs unsplit";
      EXPECT_LT(rel_error(download(d.dv), dv_whole), 1e-2) << what << ": dv vs unsplit";
      const std::vector<uint8_t> first = raw_bytes(d.dqkv.t);
      d.backward();
      EXPECT_EQ(first, raw_bytes(d.dqkv.t)) << what << ": split backward not bitwise reproducible";
    }
    ScopedEnv limit("HLM_CUDNN_DET_WORKSPACE_MIB", mib_text(0.5 * head).c_str());
    EXPECT_THROW(d.backward(), Error) << c.name << ": below one head the cuDNN backward must refuse";
  }
}

TEST(AttentionCuda, CudnnDeterministicSplit) {
  HLM_REQUIRE_GPU();
  run_split_cases({{"split_e128_b2_t300", 2, 300, 8, 2, 128, {}},
                   {"split_e64_b2_t300", 2, 300, 8, 2, 64, {}},
                   {"split_e128_b2_t1024", 2, 1024, 8, 2, 128, {}},
                   {"split_e64_b2_t1024", 2, 1024, 8, 2, 64, {}}});
}

// Packed documents: split by KV heads and query sub-groups only, the whole packed batch per call.
TEST(AttentionCuda, CudnnDeterministicSplitDocs) {
  HLM_REQUIRE_GPU();
  run_split_cases({{"split_docs_e128_b2_t1024", 2, 1024, 8, 2, 128, {{100, 612}, {300}}},
                   {"split_docs_e64_b2_t300", 2, 300, 8, 2, 64, {{31, 90, 150}, {5}}}});
}

TEST(AttentionDecodeCuda, MatchesCpu) {
  HLM_REQUIRE_GPU();
  for (int64_t E : {64, 128}) {
    for (auto [Hq, Hkv] : {std::pair<int64_t, int64_t>{8, 2}, {12, 1}, {4, 4}}) {
      const int64_t B = 3, S = 300;
      HostTensor q = bf16_normal({B, Hq, E}, 1), kc = bf16_normal({B, S, Hkv, E}, 2),
                 vc = bf16_normal({B, S, Hkv, E}, 3);
      HostTensor start(DType::I32, {B}), len(DType::I32, {B});
      const int starts[3] = {0, 17, 5}, lens[3] = {300, 251, 6};
      for (int b = 0; b < 3; ++b) {
        start.set(b, starts[b]);
        len.set(b, lens[b]);
      }
      const float scale = 1.0f / std::sqrt(static_cast<float>(E));
      HostTensor ref(DType::F32, {B, Hq, E});
      attention_decode(q.t, kc.t, vc.t, start.t, len.t, scale, ref.t);
      DeviceTensor gq = upload(q, DType::BF16), gk = upload(kc, DType::BF16), gv = upload(vc, DType::BF16);
      DeviceTensor gs = upload(start, DType::I32), gl = upload(len, DType::I32), go(DType::BF16, {B, Hq, E});
      poison(go.t);
      attention_decode(gq.t, gk.t, gv.t, gs.t, gl.t, scale, go.t);
      EXPECT_LT(rel_error(download(go.t), ref), 1e-2) << "E=" << E << " Hq=" << Hq << " Hkv=" << Hkv;
    }
  }
}

// Longer caches: many splits per KV head, GQA groups of 4 and 5 (padded to 8), a live range that
// starts inside the cache and ends before its end; reruns are bitwise equal.
TEST(AttentionDecodeCuda, LongCacheSplitsAndDeterminism) {
  HLM_REQUIRE_GPU();
  for (auto [Hq, Hkv, S, s0, s1] : {std::tuple<int64_t, int64_t, int64_t, int, int>{32, 8, 5000, 0, 5000},
                                    {10, 2, 3001, 123, 2999}, {16, 8, 20000, 0, 19999}}) {
    const int64_t B = 1, E = 128;
    HostTensor q = bf16_normal({B, Hq, E}, 11), kc = bf16_normal({B, S, Hkv, E}, 12),
               vc = bf16_normal({B, S, Hkv, E}, 13);
    HostTensor start(DType::I32, {B}), len(DType::I32, {B});
    start.set(0, s0);
    len.set(0, s1);
    const float scale = 1.0f / std::sqrt(static_cast<float>(E));
    HostTensor ref(DType::F32, {B, Hq, E});
    attention_decode(q.t, kc.t, vc.t, start.t, len.t, scale, ref.t);
    DeviceTensor gq = upload(q, DType::BF16), gk = upload(kc, DType::BF16), gv = upload(vc, DType::BF16);
    DeviceTensor gs = upload(start, DType::I32), gl = upload(len, DType::I32), go(DType::BF16, {B, Hq, E});
    poison(go.t);
    attention_decode(gq.t, gk.t, gv.t, gs.t, gl.t, scale, go.t);
    EXPECT_LT(rel_error(download(go.t), ref), 1e-2) << "Hq=" << Hq << " Hkv=" << Hkv << " S=" << S;
    const std::vector<uint8_t> first = raw_bytes(go.t);
    attention_decode(gq.t, gk.t, gv.t, gs.t, gl.t, scale, go.t);
    EXPECT_EQ(raw_bytes(go.t), first) << "rerun Hq=" << Hq << " S=" << S;
  }
}

TEST(RopeCuda, MatchesCpuAndInverts) {
  HLM_REQUIRE_GPU();
  const int64_t B = 2, T = 37, H = 3, E = 64;
  HostTensor pos(DType::I32, {B, T});
  Rng rng(5, 1);
  for (int64_t i = 0; i < B * T; ++i) pos.set(i, static_cast<double>(rng.below(4096)));
  DeviceTensor gpos = upload(pos, DType::I32);
  for (int64_t rot : {32, 64}) {
    for (DType dt : {DType::F32, DType::BF16}) {
      HostTensor x = random_normal({B, T, H, E}, 6);
      if (dt == DType::BF16) round_to_bf16(x);
      HostTensor ref = convert_host(x, DType::F32);
      rope_apply(ref.t, pos.t, 10000.0f, rot, false);
      DeviceTensor gx = upload(x, dt);
      rope_apply(gx.t, gpos.t, 10000.0f, rot, false);
      const double tol = dt == DType::F32 ? 1e-5 : 1e-2;
      EXPECT_LT(rel_error(download(gx.t), ref), tol) << "rot " << rot << " " << dtype_name(dt);
      rope_apply(gx.t, gpos.t, 10000.0f, rot, true);
      EXPECT_LT(rel_error(download(gx.t), x), tol) << "inverse, rot " << rot << " " << dtype_name(dt);
    }
  }
}

}  // namespace
}  // namespace hlm::test
