// CUDA RMSNorm, the fused residual + RMSNorm and gated RMSNorm (forward and backward) match the CPU
// ops on odd shapes, row views, decode and training sizes; the weight gradients accumulate and are
// bitwise reproducible.
#include <gtest/gtest.h>

#include "cuda/cuda_test_util.h"
#include "ops/elementwise.h"
#include "ops/norm.h"

namespace hlm::test {
namespace {

HostTensor bf16_normal(std::vector<int64_t> shape, uint64_t seed, double stddev = 1.0) {
  HostTensor h = random_normal(std::move(shape), seed, stddev);
  round_to_bf16(h);
  return h;
}

class RmsNormCuda : public ::testing::TestWithParam<DType> {};

TEST_P(RmsNormCuda, ForwardBackwardMatchCpu) {
  HLM_REQUIRE_GPU();
  const DType dt = GetParam();
  const double tol = dt == DType::F32 ? 1e-5 : 1e-2;
  const int64_t M = 37, D = 1000;
  const float eps = 1e-5f;
  HostTensor x = bf16_normal({M, D}, 1, 2.0), w = bf16_normal({D}, 2, 0.5), dy = bf16_normal({M, D}, 3);
  HostTensor dw0 = random_normal({D}, 4);
  HostTensor y(DType::F32, {M, D}), rstd(DType::F32, {M});
  rmsnorm_forward(x.t, w.t, eps, y.t, rstd.t);
  HostTensor dx(DType::F32, {M, D}), dw = convert_host(dw0, DType::F32);
  rmsnorm_backward(dy.t, x.t, w.t, rstd.t, dx.t, dw.t);

  DeviceTensor gx = make_row_view(dt, M, D, D + 24);
  upload_into(gx.t, x);
  DeviceTensor gw = upload(w, DType::F32), gy(dt, {M, D}), gr(DType::F32, {M});
  poison(gy.t);
  poison(gr.t);
  rmsnorm_forward(gx.t, gw.t, eps, gy.t, gr.t);
  EXPECT_LT(rel_error(download(gy.t), y), tol);
  EXPECT_LT(rel_error(download(gr.t), rstd), 1e-5);

  DeviceTensor gdy = upload(dy, dt), gdx(dt, {M, D});
  DeviceTensor gdw = upload(dw0, DType::F32), gdw2 = upload(dw0, DType::F32);
  poison(gdx.t);
  rmsnorm_backward(gdy.t, gx.t, gw.t, gr.t, gdx.t, gdw.t);
  EXPECT_LT(rel_error(download(gdx.t), dx), tol);
  EXPECT_LT(rel_error(download(gdw.t), dw), 1e-5);
  rmsnorm_backward(gdy.t, gx.t, gw.t, gr.t, gdx.t, gdw2.t);
  EXPECT_EQ(raw_bytes(gdw.t), raw_bytes(gdw2.t));
}

// The vectorised kernels (rows of whole aligned 16-byte vectors: one warp or several per row)
// and the plain ones (odd D, unaligned row stride), bf16 or f32 weights.
TEST_P(RmsNormCuda, VectorAndPlainPathsMatchCpu) {
  HLM_REQUIRE_GPU();
  const DType dt = GetParam();
  const double tol = dt == DType::F32 ? 1e-5 : 1e-2;
  const float eps = 1e-5f;
  struct Case {
    int64_t M, D, ld;
    DType wdt;
  };
  for (Case c : {Case{33, 2048, 2048, DType::F32}, Case{9, 4096, 4104, DType::BF16}, Case{5, 8192, 8192, DType::F32},
                 Case{7, 1001, 1001, DType::F32}, Case{6, 512, 515, DType::BF16}}) {
    HostTensor x = bf16_normal({c.M, c.D}, 21, 2.0), w = bf16_normal({c.D}, 22, 0.5), dy = bf16_normal({c.M, c.D}, 23);
    HostTensor dw0 = random_normal({c.D}, 24);
    HostTensor y(DType::F32, {c.M, c.D}), rstd(DType::F32, {c.M});
    rmsnorm_forward(x.t, w.t, eps, y.t, rstd.t);
    HostTensor dx(DType::F32, {c.M, c.D}), dw = convert_host(dw0, DType::F32);
    rmsnorm_backward(dy.t, x.t, w.t, rstd.t, dx.t, dw.t);

    DeviceTensor gx = make_row_view(dt, c.M, c.D, c.ld);
    upload_into(gx.t, x);
    DeviceTensor gw = upload(w, c.wdt), gy(dt, {c.M, c.D}), gr(DType::F32, {c.M});
    poison(gy.t);
    poison(gr.t);
    rmsnorm_forward(gx.t, gw.t, eps, gy.t, gr.t);
    const std::string what = "D=" + std::to_string(c.D) + " ld=" + std::to_string(c.ld);
    EXPECT_LT(rel_error(download(gy.t), y), tol) << what;
    EXPECT_LT(rel_error(download(gr.t), rstd), 1e-5) << what;

    DeviceTensor gdy = upload(dy, dt), gdx(dt, {c.M, c.D});
    DeviceTensor gdw = upload(dw0, DType::F32), gdw2 = upload(dw0, DType::F32);
    poison(gdx.t);
    rmsnorm_backward(gdy.t, gx.t, gw.t, gr.t, gdx.t, gdw.t);
    EXPECT_LT(rel_error(download(gdx.t), dx), tol) << what;
    EXPECT_LT(rel_error(download(gdw.t), dw), 1e-5) << what;
    rmsnorm_backward(gdy.t, gx.t, gw.t, gr.t, gdx.t, gdw2.t);
    EXPECT_EQ(raw_bytes(gdw.t), raw_bytes(gdw2.t)) << what;
  }
}

// residual_rmsnorm_backward: dres += d(norm input), vector and plain paths; the training shape
// (8192 rows of 2048: 512 dw partials) included; dw bitwise reproducible.
TEST_P(RmsNormCuda, ResidualBackwardMatchesCpu) {
  HLM_REQUIRE_GPU();
  const DType dt = GetParam();
  const double tol = dt == DType::F32 ? 1e-5 : 1e-2;
  const float eps = 1e-5f;
  struct Case {
    int64_t M, D, ld;
  };
  for (Case c : {Case{8192, 2048, 2048}, Case{33, 2048, 2048}, Case{9, 4096, 4104}, Case{7, 1001, 1001},
                 Case{6, 512, 515}}) {
    HostTensor x = bf16_normal({c.M, c.D}, 51, 2.0), w = bf16_normal({c.D}, 52, 0.5), dy = bf16_normal({c.M, c.D}, 53);
    HostTensor res = bf16_normal({c.M, c.D}, 54), dw0 = random_normal({c.D}, 55);
    HostTensor y(DType::F32, {c.M, c.D}), rstd(DType::F32, {c.M});
    rmsnorm_forward(x.t, w.t, eps, y.t, rstd.t);
    HostTensor dres = convert_host(res, DType::F32), dw = convert_host(dw0, DType::F32);
    residual_rmsnorm_backward(dy.t, x.t, w.t, rstd.t, dres.t, dw.t);
    // The CPU op is its definition: rmsnorm_backward, then added.
    HostTensor dx(DType::F32, {c.M, c.D}), dw_two = convert_host(dw0, DType::F32);
    rmsnorm_backward(dy.t, x.t, w.t, rstd.t, dx.t, dw_two.t);
    for (int64_t i = 0; i < c.M * c.D; i += 997) ASSERT_EQ(dres.get(i), static_cast<float>(res.get(i) + dx.get(i)));

    DeviceTensor gx = make_row_view(dt, c.M, c.D, c.ld);
    upload_into(gx.t, x);
    DeviceTensor gw = upload(w, DType::BF16), gr = upload(rstd, DType::F32), gdy = upload(dy, dt);
    DeviceTensor gres = make_row_view(dt, c.M, c.D, c.ld);
    upload_into(gres.t, res);
    DeviceTensor gdw = upload(dw0, DType::F32), gdw2 = upload(dw0, DType::F32);
    residual_rmsnorm_backward(gdy.t, gx.t, gw.t, gr.t, gres.t, gdw.t);
    const std::string what = "M=" + std::to_string(c.M) + " D=" + std::to_string(c.D) + " ld=" + std::to_string(c.ld);
    EXPECT_LT(rel_error(download(gres.t), dres), tol) << what;
    EXPECT_LT(rel_error(download(gdw.t), dw), 1e-4) << what;
    upload_into(gres.t, res);
    residual_rmsnorm_backward(gdy.t, gx.t, gw.t, gr.t, gres.t, gdw2.t);
    EXPECT_EQ(raw_bytes(gdw.t), raw_bytes(gdw2.t)) << what;
  }
}

TEST_P(RmsNormCuda, GatedForwardBackwardMatchCpu) {
  HLM_REQUIRE_GPU();
  const DType dt = GetParam();
  const double tol = dt == DType::F32 ? 1e-5 : 1e-2;
  const float eps = 1e-5f;
  for (auto [M, D, gs] : {std::tuple<int64_t, int64_t, int64_t>{29, 384, 64}, {17, 1000, 1000}, {9, 520, 40}}) {
    HostTensor x = bf16_normal({M, D}, 11), z = bf16_normal({M, D}, 12), w = bf16_normal({D}, 13);
    HostTensor dy = bf16_normal({M, D}, 14), dw0 = random_normal({D}, 15);
    const int64_t ng = D / gs;
    HostTensor y(DType::F32, {M, D}), rstd(DType::F32, {M, ng});
    gated_rmsnorm_forward(x.t, z.t, w.t, gs, eps, y.t, rstd.t);
    HostTensor dx(DType::F32, {M, D}), dz(DType::F32, {M, D}), dw = convert_host(dw0, DType::F32);
    gated_rmsnorm_backward(dy.t, x.t, z.t, w.t, rstd.t, gs, dx.t, dz.t, dw.t);

    DeviceTensor gx = upload(x, dt), gz = upload(z, dt), gw = upload(w, DType::F32);
    DeviceTensor gy(dt, {M, D}), gr(DType::F32, {M, ng});
    poison(gy.t);
    poison(gr.t);
    gated_rmsnorm_forward(gx.t, gz.t, gw.t, gs, eps, gy.t, gr.t);
    EXPECT_LT(rel_error(download(gy.t), y), tol) << "group " << gs;
    EXPECT_LT(rel_error(download(gr.t), rstd), 1e-5) << "group " << gs;

    DeviceTensor gdy = upload(dy, dt), gdx(dt, {M, D}), gdz(dt, {M, D});
    DeviceTensor gdw = upload(dw0, DType::F32), gdw2 = upload(dw0, DType::F32);
    poison(gdx.t);
    poison(gdz.t);
    gated_rmsnorm_backward(gdy.t, gx.t, gz.t, gw.t, gr.t, gs, gdx.t, gdz.t, gdw.t);
    EXPECT_LT(rel_error(download(gdx.t), dx), tol) << "group " << gs;
    EXPECT_LT(rel_error(download(gdz.t), dz), tol) << "group " << gs;
    EXPECT_LT(rel_error(download(gdw.t), dw), 1e-5) << "group " << gs;
    gated_rmsnorm_backward(gdy.t, gx.t, gz.t, gw.t, gr.t, gs, gdx.t, gdz.t, gdw2.t);
    EXPECT_EQ(raw_bytes(gdw.t), raw_bytes(gdw2.t)) << "group " << gs;
  }
}

// Decode sizes (a few rows spread over whole blocks, w loaded before the reduction) and the
// many-row layout, z a column slice of in_proj's output as the Mamba mixer passes it.
TEST_P(RmsNormCuda, GatedDecodeShapesMatchCpu) {
  HLM_REQUIRE_GPU();
  const DType dt = GetParam();
  const double tol = dt == DType::F32 ? 1e-5 : 1e-2;
  const float eps = 1e-5f;
  struct Case {
    int64_t M, D, gs, ldz;
    DType wdt;
  };
  for (Case c : {Case{1, 8192, 1024, 18560, DType::BF16}, Case{3, 8192, 1024, 18560, DType::F32},
                 Case{32, 8192, 1024, 18560, DType::BF16}, Case{64, 4096, 512, 4104, DType::BF16},
                 Case{300, 4096, 1024, 4096, DType::F32}, Case{2, 520, 40, 528, DType::BF16},
                 Case{3, 500, 100, 500, DType::BF16}}) {
    const int64_t ng = c.D / c.gs;
    HostTensor x = bf16_normal({c.M, c.D}, 31), z = bf16_normal({c.M, c.D}, 32, 1.5), w = bf16_normal({c.D}, 33);
    HostTensor y(DType::F32, {c.M, c.D}), rstd(DType::F32, {c.M, ng});
    gated_rmsnorm_forward(x.t, z.t, w.t, c.gs, eps, y.t, rstd.t);
    DeviceTensor gx = upload(x, dt), gz = make_row_view(dt, c.M, c.D, c.ldz), gw = upload(w, c.wdt);
    upload_into(gz.t, z);
    DeviceTensor gy(dt, {c.M, c.D}), gr(DType::F32, {c.M, ng});
    poison(gy.t);
    poison(gr.t);
    gated_rmsnorm_forward(gx.t, gz.t, gw.t, c.gs, eps, gy.t, gr.t);
    const std::string what = "M=" + std::to_string(c.M) + " D=" + std::to_string(c.D) + " gs=" + std::to_string(c.gs);
    EXPECT_LT(rel_error(download(gy.t), y), tol) << what;
    EXPECT_LT(rel_error(download(gr.t), rstd), 1e-5) << what;
  }
}

// The gated backward's vector kernel (segments of whole aligned 16-byte vectors) in each of its
// layouts, and the per-element kernel it falls back to: the 1.43B training shape's segments (8
// groups of 512; z and dz column slices of the 10304-wide in_proj activation, as the mixer passes
// them), one row, one group (several rows per pass), more groups than a block has slots, 4 vectors
// per thread, bf16 weights, and gradients of another dtype than x (per-element kernel). M in the
// hundreds or more gives a block several rows (one wave is ~3 blocks per SM).
TEST_P(RmsNormCuda, GatedBackwardVectorAndPlainPathsMatchCpu) {
  HLM_REQUIRE_GPU();
  const DType dt = GetParam();
  const double tol = dt == DType::F32 ? 1e-5 : 1e-2;
  const float eps = 1e-5f;
  struct Case {
    int64_t M, D, gs, ldz;
    DType wdt, gdt;  // gdt: dtype of dy, dx and dz; F64 stands for "as x"
  };
  const DType same = DType::F64;
  for (Case c : {Case{256, 4096, 512, 10304, DType::F32, same}, Case{1, 4096, 512, 10304, DType::BF16, same},
                 Case{1333, 4096, 512, 10304, DType::BF16, same}, Case{29, 256, 256, 264, DType::F32, same},
                 Case{1000, 256, 256, 264, DType::F32, same}, Case{13, 1536, 32, 1544, DType::BF16, same},
                 Case{900, 1536, 32, 1544, DType::F32, same}, Case{7, 8192, 8192, 8200, DType::F32, same},
                 Case{6, 1024, 512, 1032, DType::F32, DType::F32}, Case{5, 1000, 100, 1003, DType::F32, same}}) {
    const DType gdt = c.gdt == same ? dt : c.gdt;
    const int64_t ng = c.D / c.gs;
    HostTensor x = bf16_normal({c.M, c.D}, 51), z = bf16_normal({c.M, c.D}, 52, 1.5), w = bf16_normal({c.D}, 53);
    HostTensor dy = bf16_normal({c.M, c.D}, 54), dw0 = random_normal({c.D}, 55);
    HostTensor y(DType::F32, {c.M, c.D}), rstd(DType::F32, {c.M, ng});
    gated_rmsnorm_forward(x.t, z.t, w.t, c.gs, eps, y.t, rstd.t);
    HostTensor dx(DType::F32, {c.M, c.D}), dz(DType::F32, {c.M, c.D}), dw = convert_host(dw0, DType::F32);
    gated_rmsnorm_backward(dy.t, x.t, z.t, w.t, rstd.t, c.gs, dx.t, dz.t, dw.t);

    DeviceTensor gx = upload(x, dt), gz = make_row_view(dt, c.M, c.D, c.ldz), gw = upload(w, c.wdt);
    upload_into(gz.t, z);
    DeviceTensor gr(DType::F32, {c.M, ng}), gy(dt, {c.M, c.D});
    gated_rmsnorm_forward(gx.t, gz.t, gw.t, c.gs, eps, gy.t, gr.t);
    DeviceTensor gdy = upload(dy, gdt), gdx(gdt, {c.M, c.D}), gdz = make_row_view(gdt, c.M, c.D, c.ldz);
    DeviceTensor gdw = upload(dw0, DType::F32), gdw2 = upload(dw0, DType::F32);
    poison(gdx.t);
    poison(gdz.t);
    gated_rmsnorm_backward(gdy.t, gx.t, gz.t, gw.t, gr.t, c.gs, gdx.t, gdz.t, gdw.t);
    const std::string what = "M=" + std::to_string(c.M) + " D=" + std::to_string(c.D) + " gs=" + std::to_string(c.gs) +
                             " grads " + dtype_name(gdt);
    const double gtol = gdt == DType::F32 ? 1e-5 : 1e-2;
    EXPECT_LT(rel_error(download(gdx.t), dx), std::max(tol, gtol)) << what;
    EXPECT_LT(rel_error(download(gdz.t), dz), std::max(tol, gtol)) << what;
    EXPECT_LT(rel_error(download(gdw.t), dw), 1e-5) << what;
    gated_rmsnorm_backward(gdy.t, gx.t, gz.t, gw.t, gr.t, c.gs, gdx.t, gdz.t, gdw2.t);
    EXPECT_EQ(raw_bytes(gdw.t), raw_bytes(gdw2.t)) << what;
  }
}

// residual_rmsnorm_forward: x (a row view) += d exactly as the two CUDA ops store it, y and rstd as
// the CPU op; decode rows, many rows, and the fallback layouts (odd D, unaligned stride).
TEST_P(RmsNormCuda, ResidualFusedMatchesCpuAndTwoOps) {
  HLM_REQUIRE_GPU();
  const DType dt = GetParam();
  const double tol = dt == DType::F32 ? 1e-5 : 1e-2;
  const float eps = 1e-5f;
  struct Case {
    int64_t M, D, ld;
    DType wdt;
  };
  for (Case c : {Case{1, 4096, 4096, DType::BF16}, Case{5, 4096, 4104, DType::F32}, Case{64, 2048, 2048, DType::BF16},
                 Case{1100, 2048, 2048, DType::BF16}, Case{3, 1001, 1001, DType::F32}, Case{4, 512, 515, DType::BF16}}) {
    HostTensor x = bf16_normal({c.M, c.D}, 41, 2.0), d = bf16_normal({c.M, c.D}, 42), w = bf16_normal({c.D}, 43, 0.5);
    HostTensor sum(DType::F32, {c.M, c.D});
    for (int64_t i = 0; i < c.M * c.D; ++i) sum.set(i, x.get(i) + d.get(i));

    DeviceTensor gx = make_row_view(dt, c.M, c.D, c.ld), gx2 = make_row_view(dt, c.M, c.D, c.ld);
    upload_into(gx.t, x);
    upload_into(gx2.t, x);
    DeviceTensor gd = upload(d, dt), gw = upload(w, c.wdt), gy(dt, {c.M, c.D}), gr(DType::F32, {c.M});
    DeviceTensor gy2(dt, {c.M, c.D}), gr2(DType::F32, {c.M});
    poison(gy.t);
    poison(gr.t);
    residual_rmsnorm_forward(gx.t, gd.t, gw.t, eps, gy.t, gr.t);
    add_scaled(gd.t, 1.0f, gx2.t);
    rmsnorm_forward(gx2.t, gw.t, eps, gy2.t, gr2.t);
    const std::string what = "M=" + std::to_string(c.M) + " D=" + std::to_string(c.D) + " ld=" + std::to_string(c.ld);
    EXPECT_EQ(raw_bytes(gx.t), raw_bytes(gx2.t)) << what;
    // The stored residual is the sum rounded to dt; y and rstd are the CPU op's over that stored
    // residual (the one backward sees), not over the unrounded sum.
    const HostTensor stored = convert_host(download(gx.t), DType::F32);
    EXPECT_LT(rel_error(stored, sum), dt == DType::F32 ? 1e-6 : 5e-3) << what;
    HostTensor y(DType::F32, {c.M, c.D}), rstd(DType::F32, {c.M});
    rmsnorm_forward(stored.t, w.t, eps, y.t, rstd.t);
    EXPECT_LT(rel_error(download(gy.t), y), tol) << what;
    EXPECT_LT(rel_error(download(gr.t), rstd), 1e-5) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, RmsNormCuda, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace hlm::test
