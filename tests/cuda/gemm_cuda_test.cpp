// CUDA GEMMs (cuBLASLt, our decode GEMV and fallback kernel) match the CPU BLAS GEMMs on random
// inputs: odd shapes, transposes, row views, BF16 / F32 outputs, accumulation, bias, the backward.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include "cuda/cuda_test_util.h"
#include "ops/activation.h"
#include "ops/gemm.h"

namespace hlm::test {
namespace {

// Random host values already rounded to what a BF16 device copy holds.
HostTensor bf16_values(std::vector<int64_t> shape, uint64_t seed, double stddev = 1.0) {
  HostTensor h = random_normal(std::move(shape), seed, stddev);
  round_to_bf16(h);
  return h;
}

struct MatmulCase {
  int64_t M, N, K;
  bool ta, tb;
  DType out;
  float alpha, beta;
};

class MatmulCuda : public ::testing::TestWithParam<MatmulCase> {};

TEST_P(MatmulCuda, MatchesCpu) {
  HLM_REQUIRE_GPU();
  const MatmulCase c = GetParam();
  const std::vector<int64_t> ashape = c.ta ? std::vector<int64_t>{c.K, c.M} : std::vector<int64_t>{c.M, c.K};
  const std::vector<int64_t> bshape = c.tb ? std::vector<int64_t>{c.N, c.K} : std::vector<int64_t>{c.K, c.N};
  for (uint64_t seed : {1u, 2u}) {
    HostTensor a = bf16_values(ashape, seed * 10 + 1), b = bf16_values(bshape, seed * 10 + 2);
    HostTensor c0 = bf16_values({c.M, c.N}, seed * 10 + 3);
    // CPU reference in F32 on the exact device inputs.
    HostTensor ref = convert_host(c0, DType::F32);
    matmul(a.t, c.ta, b.t, c.tb, ref.t, c.alpha, c.beta);

    DeviceTensor da = upload(a, DType::BF16), db = upload(b, DType::BF16);
    // c as a row view of a wider buffer (ld = N + 5).
    DeviceTensor dc = make_row_view(c.out, c.M, c.N, c.N + 5);
    poison(dc.t);
    if (c.beta != 0.0f) upload_into(dc.t, c0);
    matmul(da.t, c.ta, db.t, c.tb, dc.t, c.alpha, c.beta);
    HostTensor got = download(dc.t);
    const double tol = c.out == DType::F32 ? 1e-5 : 1e-2;
    EXPECT_LT(rel_error(got, ref), tol) << "M=" << c.M << " N=" << c.N << " K=" << c.K
                                        << " ta=" << c.ta << " tb=" << c.tb;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MatmulCuda,
    ::testing::Values(MatmulCase{37, 53, 71, false, false, DType::BF16, 1.0f, 0.0f},
                      MatmulCase{37, 53, 71, false, true, DType::BF16, 1.0f, 0.0f},
                      MatmulCase{37, 53, 71, true, false, DType::F32, 1.0f, 0.0f},
                      MatmulCase{64, 48, 200, true, true, DType::F32, 0.5f, 1.0f},
                      MatmulCase{129, 257, 96, false, true, DType::F32, 1.0f, 1.0f},
                      MatmulCase{1, 300, 64, false, true, DType::BF16, 1.0f, 0.0f},
                      MatmulCase{300, 1, 64, false, false, DType::F32, 2.0f, 0.5f},
                      // M ≤ 8 with b in [N,K] layout: the GEMV path (alpha, beta, odd N, split-K)
                      MatmulCase{5, 77, 136, false, true, DType::F32, 0.5f, 1.0f},
                      MatmulCase{8, 19, 4096, false, true, DType::BF16, 1.0f, 0.0f}));

TEST(MatmulCuda, F32Operands) {
  HLM_REQUIRE_GPU();
  HostTensor a = random_normal({33, 45}, 5), b = random_normal({45, 29}, 6);
  HostTensor ref(DType::F32, {33, 29});
  matmul(a.t, false, b.t, false, ref.t, 1.0f, 0.0f);
  DeviceTensor da = upload(a, DType::F32), db = upload(b, DType::F32), dc(DType::F32, {33, 29});
  poison(dc.t);
  matmul(da.t, false, db.t, false, dc.t, 1.0f, 0.0f);
  EXPECT_LT(rel_error(download(dc.t), ref), 1e-5);
}

TEST(LinearCuda, ForwardWithBias) {
  HLM_REQUIRE_GPU();
  const int64_t B = 2, T = 19, K = 96, N = 75;
  HostTensor x = bf16_values({B, T, K}, 11), w = bf16_values({N, K}, 12), bias = bf16_values({N}, 13);
  HostTensor ref(DType::F32, {B, T, N});
  linear_forward(x.t, w.t, bias.t, ref.t);
  DeviceTensor dx = upload(x, DType::BF16), dw = upload(w, DType::BF16), db = upload(bias, DType::BF16);
  for (DType out : {DType::BF16, DType::F32}) {
    DeviceTensor dy(out, {B, T, N});
    poison(dy.t);
    linear_forward(dx.t, dw.t, db.t, dy.t);
    EXPECT_LT(rel_error(download(dy.t), ref), out == DType::F32 ? 1e-5 : 1e-2) << dtype_name(out);
    poison(dy.t);
    HostTensor ref_nb(DType::F32, {B, T, N});
    linear_forward(x.t, w.t, Tensor(), ref_nb.t);
    linear_forward(dx.t, dw.t, Tensor(), dy.t);
    EXPECT_LT(rel_error(download(dy.t), ref_nb), out == DType::F32 ? 1e-5 : 1e-2) << dtype_name(out);
  }
}

// Any shape and layout works: odd M / N / K, leading dimensions that break 16-byte alignment,
// bias in BF16 or F32, through cuBLASLt (with its fallbacks) and through our plain kernel.
TEST(LinearCuda, OddShapesAndLayouts) {
  HLM_REQUIRE_GPU();
  struct Case {
    int64_t M, N, K, ldx, ldy;
  };
  for (Case c : {Case{38, 75, 96, 96, 75}, Case{37, 53, 71, 71, 53}, Case{19, 33, 40, 43, 35},
                 Case{5, 129, 64, 67, 131}, Case{64, 7, 24, 24, 7}}) {
    HostTensor x = bf16_values({c.M, c.K}, 31), w = bf16_values({c.N, c.K}, 32);
    HostTensor bias = bf16_values({c.N}, 33);
    DeviceTensor dx = make_row_view(DType::BF16, c.M, c.K, c.ldx);
    upload_into(dx.t, x);
    DeviceTensor dw = upload(w, DType::BF16);
    for (const char* mode : {"auto", "fallback"}) {
      setenv("HLM_GEMM", mode, 1);
      for (int bias_kind : {0, 1, 2}) {  // none, BF16, F32
        const bool has_bias = bias_kind != 0;
        const DType bias_dtype = bias_kind == 1 ? DType::BF16 : DType::F32;
        HostTensor ref(DType::F32, {c.M, c.N});
        linear_forward(x.t, w.t, has_bias ? bias.t : Tensor(), ref.t);
        DeviceTensor db = has_bias ? upload(bias, bias_dtype) : DeviceTensor();
        for (DType out : {DType::BF16, DType::F32}) {
          DeviceTensor dy = make_row_view(out, c.M, c.N, c.ldy);
          poison(dy.t);
          linear_forward(dx.t, dw.t, has_bias ? db.t : Tensor(), dy.t);
          EXPECT_LT(rel_error(download(dy.t), ref), out == DType::F32 ? 1e-5 : 1e-2)
              << mode << " M=" << c.M << " N=" << c.N << " K=" << c.K << " ldx=" << c.ldx
              << " ldy=" << c.ldy << " out=" << dtype_name(out) << " bias=" << has_bias;
        }
      }
    }
    unsetenv("HLM_GEMM");
  }
}

// linear_residual_forward: y = residual + x·wᵀ + bias with the residual read as cuBLASLt's C
// (residual a separate buffer of y's layout), in place (residual = y), from another layout
// (copied first), through the GEMV (M ≤ 8) and the plain kernel; bf16 and f32 outputs.
TEST(LinearCuda, ResidualForwardMatchesCpu) {
  HLM_REQUIRE_GPU();
  struct Case {
    int64_t M, N, K, ldy, ldr;
  };
  for (Case c : {Case{300, 256, 512, 256, 256}, Case{37, 75, 96, 75, 75}, Case{64, 128, 64, 136, 128},
                 Case{3, 256, 512, 256, 256}, Case{19, 33, 40, 35, 35}}) {
    HostTensor x = bf16_values({c.M, c.K}, 41), w = bf16_values({c.N, c.K}, 42), bias = bf16_values({c.N}, 43);
    HostTensor res = bf16_values({c.M, c.N}, 44);
    DeviceTensor dx = upload(x, DType::BF16), dw = upload(w, DType::BF16), db = upload(bias, DType::F32);
    for (const char* mode : {"auto", "fallback"}) {
      setenv("HLM_GEMM", mode, 1);
      for (bool has_bias : {false, true}) {
        HostTensor ref(DType::F32, {c.M, c.N});
        linear_residual_forward(x.t, w.t, has_bias ? bias.t : Tensor(), res.t, ref.t);
        for (DType out : {DType::BF16, DType::F32}) {
          const double tol = out == DType::F32 ? 1e-5 : 1e-2;
          const std::string what = std::string(mode) + " M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) +
                                   " ldy=" + std::to_string(c.ldy) + " ldr=" + std::to_string(c.ldr) +
                                   " out=" + dtype_name(out) + " bias=" + std::to_string(has_bias);
          DeviceTensor dr = make_row_view(out, c.M, c.N, c.ldr);
          upload_into(dr.t, res);
          const std::vector<uint8_t> res_before = raw_bytes(dr.t);
          DeviceTensor dy = make_row_view(out, c.M, c.N, c.ldy);
          poison(dy.t);
          linear_residual_forward(dx.t, dw.t, has_bias ? db.t : Tensor(), dr.t, dy.t);
          EXPECT_LT(rel_error(download(dy.t), ref), tol) << what;
          EXPECT_EQ(raw_bytes(dr.t), res_before) << what << ": residual changed";
          // In place: the residual stream is the output.
          linear_residual_forward(dx.t, dw.t, has_bias ? db.t : Tensor(), dr.t, dr.t);
          EXPECT_LT(rel_error(download(dr.t), ref), tol) << what << " in place";
        }
      }
    }
    unsetenv("HLM_GEMM");
  }
}

// The decode GEMV (M ≤ 8, our kernel) and cuBLASLt give the CPU result for odd M and N, K a
// multiple of 8 (one or many 128-wide steps, split over blocks when N is small) or not (then
// cuBLASLt), bias in BF16 / F32, x and y as row views; reruns are bitwise equal.
TEST(LinearCuda, DecodeGemvMatchesCpu) {
  HLM_REQUIRE_GPU();
  struct Case {
    int64_t M, N, K, ldx, ldy;
  };
  for (Case c : {Case{1, 75, 96, 96, 75}, Case{3, 1033, 1000, 1008, 1040}, Case{5, 40, 4096, 4104, 45},
                 Case{8, 300, 2048, 2048, 300}, Case{7, 129, 136, 139, 129}, Case{2, 33, 100, 100, 33},
                 Case{1, 4097, 512, 512, 4097}, Case{1, 3001, 2056, 2064, 3001},
                 Case{1, 37, 16392, 16400, 37}}) {  // M = 1 streaming: ragged chunk; one row per block (K ≥ 16384)
    HostTensor x = bf16_values({c.M, c.K}, 51), w = bf16_values({c.N, c.K}, 52, 0.05);
    HostTensor bias = bf16_values({c.N}, 53);
    DeviceTensor dx = make_row_view(DType::BF16, c.M, c.K, c.ldx);
    upload_into(dx.t, x);
    DeviceTensor dw = upload(w, DType::BF16);
    for (const char* mode : {"gemv", "auto", "cublaslt"}) {
      setenv("HLM_GEMM", mode, 1);
      for (int bias_kind : {0, 1, 2}) {  // none, BF16, F32
        const bool has_bias = bias_kind != 0;
        HostTensor ref(DType::F32, {c.M, c.N});
        linear_forward(x.t, w.t, has_bias ? bias.t : Tensor(), ref.t);
        DeviceTensor db = has_bias ? upload(bias, bias_kind == 1 ? DType::BF16 : DType::F32) : DeviceTensor();
        for (DType out : {DType::BF16, DType::F32}) {
          DeviceTensor dy = make_row_view(out, c.M, c.N, c.ldy);
          poison(dy.t);
          linear_forward(dx.t, dw.t, has_bias ? db.t : Tensor(), dy.t);
          const std::vector<uint8_t> first = raw_bytes(dy.t);
          EXPECT_LT(rel_error(download(dy.t), ref), out == DType::F32 ? 1e-5 : 1e-2)
              << mode << " M=" << c.M << " N=" << c.N << " K=" << c.K << " ldx=" << c.ldx
              << " out=" << dtype_name(out) << " bias=" << bias_kind;
          poison(dy.t);
          linear_forward(dx.t, dw.t, has_bias ? db.t : Tensor(), dy.t);
          EXPECT_EQ(raw_bytes(dy.t), first) << mode << " rerun M=" << c.M << " N=" << c.N;
        }
      }
    }
    unsetenv("HLM_GEMM");
  }
}

// Every variant of the one-row streaming GEMV (the default: 2 rows per block sharing x; one row
// per thread; one row per block; 4 rows × 1024; 6 stages) gives the CPU result.
TEST(LinearCuda, DecodeGemvVariantsMatchCpu) {
  HLM_REQUIRE_GPU();
  struct Case {
    int64_t N, K;
  };
  for (Case c : {Case{3001, 2056}, Case{37, 16392}, Case{4097, 512}}) {
    HostTensor x = bf16_values({1, c.K}, 91), w = bf16_values({c.N, c.K}, 92, 0.05), bias = bf16_values({c.N}, 93);
    HostTensor ref(DType::F32, {1, c.N});
    linear_forward(x.t, w.t, bias.t, ref.t);
    DeviceTensor dx = upload(x, DType::BF16), dw = upload(w, DType::BF16), db = upload(bias, DType::F32);
    for (const char* v : {"default", "sharex0", "7", "0", "5"}) {
      if (std::strcmp(v, "sharex0") == 0)
        setenv("HLM_GEMV_SHAREX", "0", 1);
      else if (std::strcmp(v, "default") != 0)
        setenv("HLM_GEMV_CFG", v, 1);
      DeviceTensor dy(DType::F32, {1, c.N});
      poison(dy.t);
      linear_forward(dx.t, dw.t, db.t, dy.t);
      EXPECT_LT(rel_error(download(dy.t), ref), 1e-5) << "variant " << v << " N=" << c.N << " K=" << c.K;
      unsetenv("HLM_GEMV_SHAREX");
      unsetenv("HLM_GEMV_CFG");
    }
  }
}

// linear_act_forward: the activation in the one-row GEMV's epilogue (M = 1) or after the product
// (M > 1) — against the CPU definition and against the two-op path on the GPU.
TEST(LinearCuda, ActivationEpilogueMatchesCpuAndTwoOps) {
  HLM_REQUIRE_GPU();
  struct Case {
    int64_t M, N, K, ldx, ldy;
  };
  for (Case c : {Case{1, 1001, 2056, 2064, 1001}, Case{1, 37, 16392, 16392, 40}, Case{3, 129, 520, 528, 131}}) {
    HostTensor x = bf16_values({c.M, c.K}, 61), w = bf16_values({c.N, c.K}, 62, 0.05);
    HostTensor bias = bf16_values({c.N}, 63);
    DeviceTensor dx = make_row_view(DType::BF16, c.M, c.K, c.ldx);
    upload_into(dx.t, x);
    DeviceTensor dw = upload(w, DType::BF16), db = upload(bias, DType::BF16);
    for (Activation act : {Activation::ReluSquared, Activation::Gelu, Activation::GeluTanh, Activation::Silu}) {
      for (DType out : {DType::BF16, DType::F32}) {
        // The CPU definition on the values the device holds (F32 throughout: the GPU's bf16 output
        // rounds once before and once after the activation, hence the looser bound there).
        HostTensor ref(DType::F32, {c.M, c.N});
        linear_act_forward(x.t, w.t, bias.t, act, ref.t);
        DeviceTensor dy = make_row_view(out, c.M, c.N, c.ldy), two = make_row_view(out, c.M, c.N, c.ldy);
        poison(dy.t);
        linear_act_forward(dx.t, dw.t, db.t, act, dy.t);
        const std::string what = fmt::format("act {} M={} N={} K={} out={}", static_cast<int>(act), c.M, c.N,
                                             c.K, dtype_name(out));
        EXPECT_LT(rel_error(download(dy.t), ref), out == DType::F32 ? 1e-5 : 2e-2) << what;
        poison(two.t);
        linear_forward(dx.t, dw.t, db.t, two.t);
        activation_forward(act, two.t, two.t);
        // Same sums, same rounding, same activation expression: expected bitwise equal; allow one
        // output ulp should the compiler contract the activation differently in the two kernels.
        EXPECT_LT(rel_error(download(dy.t), download(two.t)), out == DType::F32 ? 1e-6 : 8e-3) << what;
      }
    }
  }
}

TEST(MatmulCuda, FallbackKernelAllLayouts) {
  HLM_REQUIRE_GPU();
  setenv("HLM_GEMM", "fallback", 1);
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int64_t M = 29, N = 41, K = 35;
      HostTensor a = bf16_values(ta ? std::vector<int64_t>{K, M} : std::vector<int64_t>{M, K}, 41);
      HostTensor b = bf16_values(tb ? std::vector<int64_t>{N, K} : std::vector<int64_t>{K, N}, 42);
      HostTensor c0 = bf16_values({M, N}, 43);
      HostTensor ref = convert_host(c0, DType::F32);
      matmul(a.t, ta, b.t, tb, ref.t, 0.5f, 1.0f);
      DeviceTensor da = upload(a, DType::BF16), db = upload(b, DType::BF16);
      DeviceTensor dc = upload(c0, DType::F32);
      matmul(da.t, ta, db.t, tb, dc.t, 0.5f, 1.0f);
      EXPECT_LT(rel_error(download(dc.t), ref), 1e-5) << "ta=" << ta << " tb=" << tb;
    }
  unsetenv("HLM_GEMM");
}

TEST(LinearCuda, Backward) {
  HLM_REQUIRE_GPU();
  const int64_t M = 45, K = 72, N = 61;
  HostTensor x = bf16_values({M, K}, 21), w = bf16_values({N, K}, 22), dy = bf16_values({M, N}, 23);
  HostTensor dx0 = bf16_values({M, K}, 24), dw0 = random_normal({N, K}, 25), db0 = random_normal({N}, 26);
  for (bool acc : {false, true}) {
    HostTensor rdx = convert_host(dx0, DType::F32), rdw = convert_host(dw0, DType::F32),
               rdb = convert_host(db0, DType::F32);
    linear_backward(dy.t, x.t, w.t, rdx.t, rdw.t, rdb.t, acc);

    DeviceTensor ddy = upload(dy, DType::BF16), dx_ = upload(x, DType::BF16), dw_ = upload(w, DType::BF16);
    DeviceTensor gdx = upload(dx0, DType::BF16), gdw = upload(dw0, DType::F32), gdb = upload(db0, DType::F32);
    if (!acc) poison(gdx.t);
    linear_backward(ddy.t, dx_.t, dw_.t, gdx.t, gdw.t, gdb.t, acc);
    EXPECT_LT(rel_error(download(gdx.t), rdx), 1e-2) << "dx, accumulate=" << acc;
    EXPECT_LT(rel_error(download(gdw.t), rdw), 1e-5) << "dw";
    EXPECT_LT(rel_error(download(gdb.t), rdb), 1e-5) << "dbias";

    // Determinism: the same inputs give the same bits.
    DeviceTensor gdw2 = upload(dw0, DType::F32), gdb2 = upload(db0, DType::F32);
    linear_backward(ddy.t, dx_.t, dw_.t, Tensor(), gdw2.t, gdb2.t, acc);
    EXPECT_EQ(raw_bytes(gdw.t), raw_bytes(gdw2.t));
    EXPECT_EQ(raw_bytes(gdb.t), raw_bytes(gdb2.t));
  }
}

}  // namespace
}  // namespace hlm::test
