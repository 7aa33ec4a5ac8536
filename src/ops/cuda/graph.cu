// CUDA graph capture and replay on the op stream.
#include "ops/cuda/common.cuh"
#include "ops/graph.h"

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

}  // namespace hlm::cuda
