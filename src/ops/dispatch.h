// One dispatch point: a device-neutral op calls cpu::<op> or cuda::<op> by the device of its
// tensors. Each op header declares the same signature in hlm::cpu, hlm::cuda and hlm (the neutral
// entry point, defined in ops/dispatch.cpp). hlm::cuda functions exist only in builds with HLM_CUDA.
#pragma once

#include "core/error.h"
#include "core/profile.h"
#include "core/tensor.h"

#define HLM_DECLARE_OP(ret, fn, params) \
  namespace cpu {                       \
  ret fn params;                        \
  }                                     \
  namespace cuda {                      \
  ret fn params;                        \
  }                                     \
  ret fn params;

namespace hlm {
// Throws a clear error when a CUDA tensor reaches a build without the CUDA backend.
[[noreturn]] void no_cuda_backend(const char* op);
}  // namespace hlm

// Every dispatched call is a profile scope (see core/profile.h; off by default).
#ifdef HLM_CUDA
#define HLM_DISPATCH(device, fn, ...)                                          \
  ::hlm::ProfileScope hlm_scope_(#fn, (device) == ::hlm::Device::CUDA);        \
  return (device) == ::hlm::Device::CPU ? ::hlm::cpu::fn(__VA_ARGS__) : ::hlm::cuda::fn(__VA_ARGS__)
#else
#define HLM_DISPATCH(device, fn, ...)                              \
  ::hlm::ProfileScope hlm_scope_(#fn);                             \
  if ((device) != ::hlm::Device::CPU) ::hlm::no_cuda_backend(#fn); \
  return ::hlm::cpu::fn(__VA_ARGS__)
#endif
