// Process-wide cuBLASLt and cuDNN handles.
#include "ops/cuda/handles.cuh"

#include <mutex>

namespace hlm::cuda {

namespace {
std::mutex g_handle_mutex;
}

cublasLtHandle_t cublaslt_handle() {
  static cublasLtHandle_t h = [] {
    cublasLtHandle_t created = nullptr;
    HLM_CUBLAS_CHECK(cublasLtCreate(&created));
    return created;
  }();
  return h;
}

int64_t cudnn_runtime_version() { return static_cast<int64_t>(cudnnGetVersion()); }

cudnnHandle_t cudnn_handle() {
  std::lock_guard<std::mutex> lock(g_handle_mutex);
  static cudnnHandle_t h = nullptr;
  if (!h) HLM_CUDNN_CHECK(cudnnCreate(&h));
  HLM_CUDNN_CHECK(cudnnSetStream(h, stream()));
  return h;
}

}  // namespace hlm::cuda
