// CUDA graph capture and replay on the op stream, and the per-step host-to-device upload.
#include "ops/cuda/common.cuh"
#include "ops/graph.h"

#include <cstring>
#include <mutex>

namespace hlm::cuda {

void* graph_capture(const std::function<void()>& work) {
  cudaStream_t s = stream();
  HLM_REQUIRE(s != nullptr, ErrorKind::Internal, "graph capture needs a non-default op stream");
  // Relaxed: ops may still query device properties etc. while the capture is open.
  HLM_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
  try {
    work();
  } catch (...) {
    cudaGraph_t g = nullptr;
    cudaStreamEndCapture(s, &g);
    if (g) cudaGraphDestroy(g);
    (void)cudaGetLastError();
    throw;
  }
  cudaGraph_t graph = nullptr;
  HLM_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
  cudaGraphExec_t exec = nullptr;
  cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  HLM_CUDA_CHECK(e);
  return exec;
}

void graph_replay(void* exec) { HLM_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec), stream())); }

void graph_destroy(void* exec) noexcept { cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec)); }

void upload_async(void* dst, const void* src, size_t bytes) {
  constexpr int kUploadSlot = 2;  // pinned_host slot of the uploads (0, 1: attention; 6, 7: checks)
  static std::mutex mutex;
  static cudaEvent_t copied = nullptr;  // recorded after the last copy out of the staging buffer
  std::lock_guard<std::mutex> lock(mutex);
  if (!copied) {
    HLM_CUDA_CHECK(cudaEventCreateWithFlags(&copied, cudaEventDisableTiming));
  } else {
    HLM_CUDA_CHECK(cudaEventSynchronize(copied));  // the previous upload has left the buffer
  }
  void* stage = pinned_host(kUploadSlot, bytes);
  std::memcpy(stage, src, bytes);
  HLM_CUDA_CHECK(cudaMemcpyAsync(dst, stage, bytes, cudaMemcpyHostToDevice, stream()));
  HLM_CUDA_CHECK(cudaEventRecord(copied, stream()));
}

}  // namespace hlm::cuda
