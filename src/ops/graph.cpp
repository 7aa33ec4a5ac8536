// OpGraph: CUDA graphs on CUDA, re-running the function on the CPU.
#include "ops/graph.h"

#include <cstring>

#include "ops/dispatch.h"

namespace hlm {

OpGraph::~OpGraph() { reset(); }
OpGraph::OpGraph(OpGraph&& o) noexcept
    : device_(o.device_),
      work_(std::move(o.work_)),
      exec_(o.exec_),
      recorded_(o.recorded_),
      generation_(o.generation_) {
  o.exec_ = nullptr;
  o.recorded_ = false;
}
OpGraph& OpGraph::operator=(OpGraph&& o) noexcept {
  if (this != &o) {
    reset();
    device_ = o.device_;
    work_ = std::move(o.work_);
    exec_ = o.exec_;
    recorded_ = o.recorded_;
    generation_ = o.generation_;
    o.exec_ = nullptr;
    o.recorded_ = false;
  }
  return *this;
}

void OpGraph::reset() {
#ifdef HLM_CUDA
  if (exec_) cuda::graph_destroy(exec_);
#endif
  exec_ = nullptr;
  work_ = nullptr;
  recorded_ = false;
}

void OpGraph::record(Device device, std::function<void()> work) {
  reset();
  device_ = device;
  if (device == Device::CPU) {
    work_ = std::move(work);
    work_();
  } else {
#ifdef HLM_CUDA
    // Capture records without running: run the captured graph once for the effects.
    exec_ = cuda::graph_capture(work);
    generation_ = cuda::memory_generation();
    cuda::graph_replay(exec_);
#else
    no_cuda_backend("OpGraph::record");
#endif
  }
  recorded_ = true;
}

void upload(void* dst, Device device, const void* src, size_t bytes) {
  if (bytes == 0) return;
  if (device == Device::CPU) {
    std::memcpy(dst, src, bytes);
    return;
  }
#ifdef HLM_CUDA
  cuda::upload_async(dst, src, bytes);
#else
  no_cuda_backend("upload");
#endif
}

bool OpGraph::recorded() const {
#ifdef HLM_CUDA
  if (recorded_ && device_ == Device::CUDA && generation_ != cuda::memory_generation()) return false;
#endif
  return recorded_;
}

void OpGraph::replay() {
  HLM_ASSERT(recorded_);
  if (device_ == Device::CPU) {
    work_();
    return;
  }
#ifdef HLM_CUDA
  cuda::graph_replay(exec_);
#endif
}

}  // namespace hlm
