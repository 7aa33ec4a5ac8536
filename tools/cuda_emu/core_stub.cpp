// Emulation stand-ins for the parts of src/ops/cuda/common.cu that the core ops' own kernels use:
// scratch buffers (host memory, grow-only per slot, as on the device) and the tensor checks.
#include <array>
#include <cstdlib>
#include <cstring>

#include "core/dtype.h"
#include "ops/cuda/common.cuh"
#include "ops/elementwise.h"

namespace hlm::cuda {
void* scratch(Scratch slot, size_t bytes) {
  struct Buf {
    void* p = nullptr;
    size_t n = 0;
  };
  static std::array<Buf, static_cast<size_t>(Scratch::Count)> bufs;
  Buf& b = bufs.at(static_cast<size_t>(slot));
  if (b.n < bytes) {
    std::free(b.p);
    b.n = (bytes + 255) / 256 * 256;
    b.p = std::aligned_alloc(256, b.n);
    std::memset(b.p, 0xFF, b.n);  // NaN: unwritten partials show up
  }
  return b.p;
}
void require_cuda(const Tensor& t, const char* op, const char* name) {
  HLM_REQUIRE(t.defined() && t.device == Device::CUDA, ErrorKind::Internal, "{}: {} is not on CUDA", op, name);
}
void require_dtype(const Tensor& t, DType dtype, const char* op, const char* name) {
  HLM_REQUIRE(t.dtype == dtype, ErrorKind::Internal, "{}: {} must be {}", op, name, dtype_name(dtype));
}
void require_float(const Tensor& t, const char* op, const char* name) {
  HLM_REQUIRE(t.dtype == DType::F32 || t.dtype == DType::BF16 || t.dtype == DType::F16,
              ErrorKind::Unsupported, "{}: {}: CUDA kernels take F32, BF16 or F16", op, name);
}
// y += alpha · x for F32 / BF16 row views (residual_rmsnorm_forward's fallback), rounded as the
// device kernel rounds: through fp32 to y's dtype.
void add_scaled(const Tensor& x, float alpha, const Tensor& y) {
  RowView X = as_rows(x, 1, "add_scaled"), Y = as_rows(y, 1, "add_scaled");
  auto get = [](const RowView& v, int64_t r, int64_t c) -> float {
    const unsigned char* p = static_cast<const unsigned char*>(v.data) + size_t(r * v.ld + c) * dtype_size(v.dtype);
    if (v.dtype == DType::F32) { float f; std::memcpy(&f, p, 4); return f; }
    uint16_t h;
    std::memcpy(&h, p, 2);
    return bf16_bits_to_f32(h);
  };
  for (int64_t r = 0; r < Y.rows; ++r)
    for (int64_t c = 0; c < Y.cols; ++c) {
      const float v = get(Y, r, c) + alpha * get(X, r, c);
      unsigned char* p = static_cast<unsigned char*>(Y.data) + size_t(r * Y.ld + c) * dtype_size(Y.dtype);
      if (Y.dtype == DType::F32) {
        std::memcpy(p, &v, 4);
      } else {
        const uint16_t h = f32_to_bf16_bits(v);
        std::memcpy(p, &h, 2);
      }
    }
}
}  // namespace hlm::cuda
