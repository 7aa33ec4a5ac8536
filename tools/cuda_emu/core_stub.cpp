// Emulation stand-ins for the parts of src/ops/cuda/common.cu that the core ops' own kernels use:
// scratch buffers (host memory, grow-only per slot, as on the device) and the tensor checks.
#include <array>
#include <cstdlib>
#include <cstring>

#include "ops/cuda/common.cuh"

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
}  // namespace hlm::cuda
