// CUDA MLP activations (relu², GeLU, GeLU-tanh, SiLU, SwiGLU) match the CPU ops, forward and
// backward, in F32 and BF16, on row views.
#include <gtest/gtest.h>

#include <tuple>

#include "cuda/cuda_test_util.h"
#include "ops/activation.h"

namespace hlm::test {
namespace {

const char* act_name(Activation a) {
  switch (a) {
    case Activation::ReluSquared: return "relu2";
    case Activation::Gelu: return "gelu";
    case Activation::GeluTanh: return "gelu_tanh";
    case Activation::Silu: return "silu";
    case Activation::SwiGlu: return "swiglu";
  }
  return "?";
}

// Odd widths and unaligned row strides (the scalar kernels), whole 16-byte vectors (the vector
// kernels: many rows, a wide row).
TEST(ActivationCuda, ForwardBackwardMatchCpu) {
  HLM_REQUIRE_GPU();
  for (auto [M, F, pad] : {std::tuple<int64_t, int64_t, int64_t>{23, 301, 8}, {37, 256, 0}, {5, 4096, 16},
                           {3, 264, 3}, {700, 64, 8}})
  for (Activation act : {Activation::ReluSquared, Activation::Gelu, Activation::GeluTanh,
                         Activation::Silu, Activation::SwiGlu}) {
    const int64_t Fin = activation_input_width(act, F);
    for (DType dt : {DType::F32, DType::BF16}) {
      const double tol = dt == DType::F32 ? 1e-5 : 1e-2;
      HostTensor in = random_normal({M, Fin}, 1, 2.0), dout = random_normal({M, F}, 2);
      if (dt == DType::BF16) {
        round_to_bf16(in);
        round_to_bf16(dout);
      }
      HostTensor out(DType::F32, {M, F}), din(DType::F32, {M, Fin});
      activation_forward(act, in.t, out.t);
      activation_backward(act, in.t, dout.t, din.t);

      DeviceTensor gin = make_row_view(dt, M, Fin, Fin + pad);
      upload_into(gin.t, in);
      DeviceTensor gout(dt, {M, F}), gdo = upload(dout, dt), gdin(dt, {M, Fin});
      poison(gout.t);
      poison(gdin.t);
      activation_forward(act, gin.t, gout.t);
      activation_backward(act, gin.t, gdo.t, gdin.t);
      EXPECT_LT(rel_error(download(gout.t), out), tol) << act_name(act) << " " << dtype_name(dt) << " M=" << M << " F=" << F << " pad=" << pad;
      EXPECT_LT(rel_error(download(gdin.t), din), tol) << act_name(act) << " " << dtype_name(dt) << " M=" << M << " F=" << F << " pad=" << pad;
    }
  }
}

}  // namespace
}  // namespace hlm::test
