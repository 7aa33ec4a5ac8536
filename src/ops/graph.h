// Recorded op sequences: on CUDA a CUDA graph captured from the op stream and replayed with one
// launch (decode runs one per token); on the CPU the recorded function simply runs again. The ops
// inside must use fixed addresses and read anything that changes per replay from device memory.
#pragma once

#include <functional>

#include "core/tensor.h"

namespace hlm {

class OpGraph {
 public:
  OpGraph() = default;
  ~OpGraph();
  OpGraph(const OpGraph&) = delete;
  OpGraph& operator=(const OpGraph&) = delete;
  OpGraph(OpGraph&& o) noexcept;
  OpGraph& operator=(OpGraph&& o) noexcept;

  // Runs `work` once while recording it (the ops' effects happen, as in a plain call).
  void record(Device device, std::function<void()> work);
  // Replays the recorded ops.
  void replay();
  // Recorded, and (on CUDA) no memory the recording points into has been reallocated since.
  bool recorded() const;
  void reset();

 private:
  Device device_ = Device::CPU;
  std::function<void()> work_;
  void* exec_ = nullptr;  // cudaGraphExec_t on CUDA
  bool recorded_ = false;
  uint64_t generation_ = 0;  // CUDA memory generation at recording time
};

// Copies `bytes` of host memory to device memory in stream order with the ops, without waiting
// for the device: src is staged at once (page-locked memory on CUDA), so the caller may reuse it
// on return. For the few per-step values of a decode step (ids, lengths). On the CPU, a memcpy.
void upload(void* dst, Device device, const void* src, size_t bytes);

namespace cuda {
// CUDA graph capture of `work` on the op stream; returns a cudaGraphExec_t. Replay / destroy it.
void* graph_capture(const std::function<void()>& work);
void graph_replay(void* exec);
void graph_destroy(void* exec) noexcept;
// upload() on CUDA: one staging buffer; waits only for the previous upload's copy to be done.
void upload_async(void* dst, const void* src, size_t bytes);
// See ops/cuda/common.cuh: bumps whenever memory a recording may point into was reallocated.
uint64_t memory_generation();
// Frees the memory ops keep between calls (grow-only scratch and workspaces such as cuDNN's
// deterministic attention backward's), waiting for the device first; later calls reallocate.
void release_scratch();
}  // namespace cuda

}  // namespace hlm
