// Emulation stand-in for the parts of src/ops/cuda/common.cu the emulated ops use (the real file
// needs cuDNN and the CUDA runtime).
#include "ops/cuda/common.cuh"

namespace hlm::cuda {
namespace {
cudaStream_t g_stream = nullptr;
}
cudaStream_t stream() { return g_stream; }
void set_stream(cudaStream_t s) { g_stream = s; }
const cudaDeviceProp& device_props() {
  static cudaDeviceProp p = [] {
    cudaDeviceProp q;
    cudaGetDeviceProperties(&q, 0);
    return q;
  }();
  return p;
}
int num_sms() { return device_props().multiProcessorCount; }
void note_reallocation() {}
bool pdl_enabled() { return false; }
}  // namespace hlm::cuda
