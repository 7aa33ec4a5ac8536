// CUDA backend shared state: the current stream and the device properties.
#include "ops/cuda/common.cuh"

namespace hlm::cuda {

namespace {
cudaStream_t g_stream = nullptr;
bool g_stream_set = false;
}  // namespace

// The op stream is a created, blocking stream: unlike the legacy default stream it can be captured
// into CUDA graphs, and being blocking it still orders against the synchronous cudaMemcpy /
// cudaMemset that core/memory uses for host transfers.
cudaStream_t stream() {
  if (!g_stream_set) {
    HLM_CUDA_CHECK(cudaStreamCreate(&g_stream));
    g_stream_set = true;
  }
  return g_stream;
}
void set_stream(cudaStream_t s) {
  g_stream = s;
  g_stream_set = true;
}

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

// ---- cuda-core additions: determinism switch, scratch buffers, pinned staging, index checks ----

#include <cudnn_graph.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <mutex>

namespace hlm::cuda {

namespace {
bool env_flag(const char* name, bool dflt) {
  const char* v = std::getenv(name);
  if (!v || !*v) return dflt;
  return !(v[0] == '0' || v[0] == 'n' || v[0] == 'N' || v[0] == 'f' || v[0] == 'F');
}
int g_deterministic = -1;  // -1: follow HLM_DETERMINISTIC (read on every call), else 0 / 1

struct ScratchBuf {
  void* p = nullptr;
  size_t bytes = 0;
};
std::array<ScratchBuf, static_cast<size_t>(Scratch::Count)> g_scratch;
std::array<ScratchBuf, 8> g_pinned;
std::mutex g_mutex;
unsigned long long* g_index_flag = nullptr;
}  // namespace

bool deterministic() {
  return g_deterministic < 0 ? env_flag("HLM_DETERMINISTIC", true) : g_deterministic != 0;
}
void set_deterministic(bool on) { g_deterministic = on ? 1 : 0; }

bool pdl_enabled() {
  static const bool on = device_props().major >= 9 && env_flag("HLM_PDL", true);
  return on;
}

namespace {
std::atomic<uint64_t> g_memory_generation{0};
}
uint64_t memory_generation() { return g_memory_generation.load(); }
void note_reallocation() { g_memory_generation.fetch_add(1); }

void* scratch(Scratch slot, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  ScratchBuf& b = g_scratch.at(static_cast<size_t>(slot));
  if (bytes == 0) bytes = 256;
  if (b.bytes < bytes) {
    note_reallocation();
    // The old buffer may still be read by queued work: cudaFree waits for the device.
    if (b.p) HLM_CUDA_CHECK(cudaFree(b.p));
    b.p = nullptr;
    b.bytes = 0;
    size_t want = bytes + bytes / 8;  // some headroom against slow growth
    want = (want + 255) / 256 * 256;
    cudaError_t e = cudaMalloc(&b.p, want);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      fail(ErrorKind::Cuda, "scratch buffer {}: cudaMalloc of {:.1f} MiB failed: {}",
           static_cast<int>(slot), static_cast<double>(want) / 1048576.0, cudaGetErrorString(e));
    }
    b.bytes = want;
  }
  return b.p;
}

void release_scratch() {
  std::lock_guard<std::mutex> lock(g_mutex);
  HLM_CUDA_CHECK(cudaDeviceSynchronize());
  for (ScratchBuf& b : g_scratch) {
    if (b.p) HLM_CUDA_CHECK(cudaFree(b.p));
    b = ScratchBuf{};
  }
  note_reallocation();
}

void* pinned_host(int slot, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mutex);
  ScratchBuf& b = g_pinned.at(static_cast<size_t>(slot));
  if (bytes == 0) bytes = 64;
  if (b.bytes < bytes) {
    if (b.p) HLM_CUDA_CHECK(cudaFreeHost(b.p));
    b.p = nullptr;
    b.bytes = 0;
    size_t want = (bytes + bytes / 4 + 255) / 256 * 256;
    HLM_CUDA_CHECK(cudaMallocHost(&b.p, want));
    b.bytes = want;
  }
  return b.p;
}

bool stream_capturing() {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  HLM_CUDA_CHECK(cudaStreamIsCapturing(stream(), &st));
  return st != cudaStreamCaptureStatusNone;
}

unsigned long long* index_flag() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_index_flag) {
    HLM_CUDA_CHECK(cudaMalloc(&g_index_flag, sizeof(unsigned long long)));
    HLM_CUDA_CHECK(cudaMemset(g_index_flag, 0, sizeof(unsigned long long)));
  }
  return g_index_flag;
}

void check_index_flag(const char* op, const char* what, int64_t bound) {
  if (stream_capturing()) return;  // cannot synchronise inside a capture; kernels clamp instead
  auto* host = static_cast<unsigned long long*>(pinned_host(7, sizeof(unsigned long long)));
  unsigned long long* dev = index_flag();
  HLM_CUDA_CHECK(cudaMemcpyAsync(host, dev, sizeof(unsigned long long), cudaMemcpyDeviceToHost,
                                 stream()));
  HLM_CUDA_CHECK(cudaStreamSynchronize(stream()));
  const unsigned long long code = *host;
  if (code == 0) return;
  HLM_CUDA_CHECK(cudaMemsetAsync(dev, 0, sizeof(unsigned long long), stream()));
  const int64_t pos = static_cast<int64_t>(code >> 32) - 1;
  const int32_t value = static_cast<int32_t>(static_cast<uint32_t>(code & 0xffffffffull));
  fail(ErrorKind::InvalidArgument, "{}: {} {} at position {} is outside [0, {})", op, what, value,
       pos, bound);
}

const char* cudnn_error_text(int status) {
  return cudnnGetErrorString(static_cast<cudnnStatus_t>(status));
}

void require_cuda(const Tensor& t, const char* op, const char* name) {
  HLM_REQUIRE(t.defined(), ErrorKind::Internal, "{}: {} is not set", op, name);
  HLM_REQUIRE(t.device == Device::CUDA, ErrorKind::Internal, "{}: {} {} is not on CUDA", op, name,
              t.describe());
}
void require_dtype(const Tensor& t, DType dtype, const char* op, const char* name) {
  HLM_REQUIRE(t.dtype == dtype, ErrorKind::Internal, "{}: {} {} must be {}", op, name,
              t.describe(), dtype_name(dtype));
}
void require_float(const Tensor& t, const char* op, const char* name) {
  HLM_REQUIRE(t.dtype == DType::F32 || t.dtype == DType::BF16 || t.dtype == DType::F16,
              ErrorKind::Unsupported, "{}: {} {}: CUDA kernels take F32, BF16 or F16", op, name,
              t.describe());
}
void require_index(const Tensor& t, int64_t n, const char* op, const char* name) {
  require_cuda(t, op, name);
  require_dtype(t, DType::I32, op, name);
  HLM_REQUIRE(t.is_contiguous() && t.numel() == n, ErrorKind::Internal,
              "{}: {} {} must be contiguous with {} entries", op, name, t.describe(), n);
}

}  // namespace hlm::cuda
