// CUDA AdamW over all parameters in one launch: flat F32 master weights, gradients and moments,
// a segment table (per-segment weight decay) in device memory, and the BF16 working copy written
// by the same kernel (16-byte accesses for whole aligned chunks). Element order and arithmetic
// follow the CPU twin.
#include "ops/adamw.h"

#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "ops/cuda/common.cuh"

namespace hlm::cuda {

namespace {

constexpr int kAdamThreads = 256;
constexpr int kAdamPerThread = 8;
constexpr int64_t kAdamChunk = kAdamThreads * kAdamPerThread;

struct DevSegment {
  int64_t offset;
  int64_t size;
  int64_t chunk_begin;  // first global chunk index of this segment
  float weight_decay;
  float pad;
};

struct AdamConsts {
  float lr, b1, b2, eps, step_size, bc2_sqrt, grad_scale;
};

__global__ void adamw_kernel(float* __restrict__ p, const float* __restrict__ g,
                             float* __restrict__ m, float* __restrict__ v,
                             __nv_bfloat16* __restrict__ lowp, const DevSegment* __restrict__ segs,
                             int nseg, int64_t total_chunks, AdamConsts k, bool vec_ok) {
  for (int64_t chunk = blockIdx.x; chunk < total_chunks; chunk += gridDim.x) {
    // The segment holding this chunk: the last one whose chunk_begin <= chunk.
    int lo = 0, hi = nseg - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (segs[mid].chunk_begin <= chunk) lo = mid; else hi = mid - 1;
    }
    const DevSegment s = segs[lo];
    const float decay = 1.0f - k.lr * s.weight_decay;
    const int64_t base = s.offset + (chunk - s.chunk_begin) * kAdamChunk;
    const int64_t end = s.offset + s.size;
    if (vec_ok && base % 4 == 0 && base + kAdamChunk <= end) {
      // A full chunk at a 16-byte aligned start: thread t owns elements 4t..4t+3 of each 1024-wide
      // piece (float4 accesses); the arithmetic per element is the scalar path's.
      constexpr int kVecs = kAdamPerThread / 4;
      float4 pv[kVecs], gv[kVecs], mv[kVecs], vv[kVecs];
#pragma unroll
      for (int j = 0; j < kVecs; ++j) {
        const int64_t i = base + (static_cast<int64_t>(j) * kAdamThreads + threadIdx.x) * 4;
        pv[j] = *reinterpret_cast<const float4*>(p + i);
        gv[j] = *reinterpret_cast<const float4*>(g + i);
        mv[j] = *reinterpret_cast<const float4*>(m + i);
        vv[j] = *reinterpret_cast<const float4*>(v + i);
      }
#pragma unroll
      for (int j = 0; j < kVecs; ++j) {
        const int64_t i = base + (static_cast<int64_t>(j) * kAdamThreads + threadIdx.x) * 4;
        float pe[4] = {pv[j].x, pv[j].y, pv[j].z, pv[j].w}, ge[4] = {gv[j].x, gv[j].y, gv[j].z, gv[j].w};
        float me[4] = {mv[j].x, mv[j].y, mv[j].z, mv[j].w}, ve[4] = {vv[j].x, vv[j].y, vv[j].z, vv[j].w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float gi = ge[e] * k.grad_scale;
          me[e] = k.b1 * me[e] + (1.0f - k.b1) * gi;
          ve[e] = k.b2 * ve[e] + (1.0f - k.b2) * gi * gi;
          pe[e] = pe[e] * decay - k.step_size * me[e] / (sqrtf(ve[e]) / k.bc2_sqrt + k.eps);
        }
        *reinterpret_cast<float4*>(m + i) = make_float4(me[0], me[1], me[2], me[3]);
        *reinterpret_cast<float4*>(v + i) = make_float4(ve[0], ve[1], ve[2], ve[3]);
        *reinterpret_cast<float4*>(p + i) = make_float4(pe[0], pe[1], pe[2], pe[3]);
        if (lowp) {
          const __nv_bfloat162 lo2 = __floats2bfloat162_rn(pe[0], pe[1]);
          const __nv_bfloat162 hi2 = __floats2bfloat162_rn(pe[2], pe[3]);
          uint2 packed;
          memcpy(&packed.x, &lo2, 4);
          memcpy(&packed.y, &hi2, 4);
          *reinterpret_cast<uint2*>(lowp + i) = packed;
        }
      }
      continue;
    }
    float pv[kAdamPerThread], gv[kAdamPerThread], mv[kAdamPerThread], vv[kAdamPerThread];
#pragma unroll
    for (int j = 0; j < kAdamPerThread; ++j) {
      const int64_t i = base + j * kAdamThreads + threadIdx.x;
      if (i < end) {
        pv[j] = p[i];
        gv[j] = g[i];
        mv[j] = m[i];
        vv[j] = v[i];
      }
    }
#pragma unroll
    for (int j = 0; j < kAdamPerThread; ++j) {
      const int64_t i = base + j * kAdamThreads + threadIdx.x;
      if (i < end) {
        const float gi = gv[j] * k.grad_scale;
        const float mi = k.b1 * mv[j] + (1.0f - k.b1) * gi;
        const float vi = k.b2 * vv[j] + (1.0f - k.b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        const float pi = pv[j] * decay - k.step_size * mi / (sqrtf(vi) / k.bc2_sqrt + k.eps);
        p[i] = pi;
        if (lowp) lowp[i] = __float2bfloat16_rn(pi);
      }
    }
  }
}

// The device copy of the last segment table (uploaded again only when it changes).
struct SegmentCache {
  std::vector<AdamWSegment> host;
  DevSegment* dev = nullptr;
  size_t capacity = 0;
  int64_t total_chunks = 0;
};
std::mutex g_adam_mutex;
SegmentCache g_cache;

bool same_segments(std::span<const AdamWSegment> a, const std::vector<AdamWSegment>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].offset != b[i].offset || a[i].size != b[i].size || a[i].weight_decay != b[i].weight_decay)
      return false;
  return true;
}

}  // namespace

void adamw_step(const Tensor& params, const Tensor& grads, const Tensor& m, const Tensor& v,
                const Tensor& params_lowp, std::span<const AdamWSegment> segments,
                const AdamWHyper& hyper, float grad_scale) {
  const char* op = "adamw_step";
  const int64_t n = params.numel();
  for (auto [t, name] : {std::pair{&params, "params"}, {&grads, "grads"}, {&m, "m"}, {&v, "v"}}) {
    require_cuda(*t, op, name);
    require_dtype(*t, DType::F32, op, name);
    HLM_REQUIRE(t->is_contiguous() && t->numel() == n, ErrorKind::Internal,
                "{}: {} {} must be contiguous with {} elements like params", op, name,
                t->describe(), n);
  }
  if (params_lowp.defined()) {
    require_cuda(params_lowp, op, "params_lowp");
    require_dtype(params_lowp, DType::BF16, op, "params_lowp");
    HLM_REQUIRE(params_lowp.is_contiguous() && params_lowp.numel() == n, ErrorKind::Internal,
                "{}: params_lowp {} must be contiguous with {} elements", op,
                params_lowp.describe(), n);
  }
  HLM_CHECK_ARG(hyper.step >= 1, "{}: step must be >= 1 (1-based), got {}", op, hyper.step);
  for (const AdamWSegment& s : segments)
    HLM_REQUIRE(s.offset >= 0 && s.size >= 0 && s.offset + s.size <= n, ErrorKind::Internal,
                "{}: segment [{}, +{}) outside the {} parameters", op, s.offset, s.size, n);
  if (segments.empty()) return;

  std::lock_guard<std::mutex> lock(g_adam_mutex);
  if (!g_cache.dev || !same_segments(segments, g_cache.host)) {
    std::vector<DevSegment> table(segments.size());
    int64_t chunks = 0;
    for (size_t i = 0; i < segments.size(); ++i) {
      table[i].offset = segments[i].offset;
      table[i].size = segments[i].size;
      table[i].chunk_begin = chunks;
      table[i].weight_decay = segments[i].weight_decay;
      table[i].pad = 0.0f;
      chunks += (segments[i].size + kAdamChunk - 1) / kAdamChunk;
    }
    // Empty segments share their chunk_begin with the next one; the search picks the last
    // segment starting at a chunk, so they are never chosen.
    if (g_cache.capacity < table.size()) {
      if (g_cache.dev) HLM_CUDA_CHECK(cudaFree(g_cache.dev));
      g_cache.dev = nullptr;
      g_cache.capacity = 0;
      HLM_CUDA_CHECK(cudaMalloc(&g_cache.dev, table.size() * sizeof(DevSegment)));
      g_cache.capacity = table.size();
    }
    // Synchronous copy: the table changes rarely, and a pending kernel may still read the old one.
    HLM_CUDA_CHECK(cudaStreamSynchronize(stream()));
    HLM_CUDA_CHECK(cudaMemcpy(g_cache.dev, table.data(), table.size() * sizeof(DevSegment),
                              cudaMemcpyHostToDevice));
    g_cache.host.assign(segments.begin(), segments.end());
    g_cache.total_chunks = chunks;
  }
  if (g_cache.total_chunks == 0) return;

  // Bias corrections in double (as torch computes them on the host), then in float.
  const double t = static_cast<double>(hyper.step);
  const double bc1 = 1.0 - std::pow(static_cast<double>(hyper.beta1), t);
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(static_cast<double>(hyper.beta2), t));
  AdamConsts k{};
  k.lr = hyper.lr;
  k.b1 = hyper.beta1;
  k.b2 = hyper.beta2;
  k.eps = hyper.eps;
  k.step_size = hyper.lr / static_cast<float>(bc1);
  k.bc2_sqrt = static_cast<float>(bc2_sqrt);
  k.grad_scale = grad_scale;
  const int64_t grid = std::min<int64_t>(g_cache.total_chunks, static_cast<int64_t>(num_sms()) * 16);
  const bool vec_ok = pointer_alignment(params.data) >= 16 && pointer_alignment(grads.data) >= 16 &&
                      pointer_alignment(m.data) >= 16 && pointer_alignment(v.data) >= 16 &&
                      (!params_lowp.defined() || pointer_alignment(params_lowp.data) >= 8);
  adamw_kernel<<<static_cast<unsigned>(grid), kAdamThreads, 0, stream()>>>(
      params.ptr<float>(), grads.ptr<float>(), m.ptr<float>(), v.ptr<float>(),
      params_lowp.defined() ? params_lowp.ptr<__nv_bfloat16>() : nullptr, g_cache.dev,
      static_cast<int>(segments.size()), g_cache.total_chunks, k, vec_ok);
  HLM_CUDA_CHECK_LAUNCH();
}

}  // namespace hlm::cuda
