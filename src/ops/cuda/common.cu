// CUDA backend shared state: the current stream and the device properties.
#include "ops/cuda/common.cuh"

namespace hlm::cuda {

namespace {
cudaStream_t g_stream = nullptr;
}

cudaStream_t stream() { return g_stream; }
void set_stream(cudaStream_t s) { g_stream = s; }

const cudaDeviceProp& device_props() {
  static cudaDeviceProp props = [] {
    cudaDeviceProp p{};
    int dev = 0;
    HLM_CUDA_CHECK(cudaGetDevice(&dev));
    HLM_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
    return p;
  }();
  return props;
}

int num_sms() { return device_props().multiProcessorCount; }

}  // namespace hlm::cuda
