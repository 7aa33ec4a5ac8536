// Library handles of the CUDA backend: one cuBLASLt handle and one cuDNN handle per process,
// created on first use; the cuDNN handle is bound to hlm::cuda::stream() on every fetch.
#pragma once

#include <cublasLt.h>
#include <cudnn_backend.h>
#include <cudnn_graph.h>

#include "ops/cuda/common.cuh"

namespace hlm::cuda {

cublasLtHandle_t cublaslt_handle();
// The cuDNN handle, its stream set to stream(). Throws Error(Cuda) when cuDNN cannot be loaded or
// initialised (e.g. no cuDNN 9 on the library path).
cudnnHandle_t cudnn_handle();
// Runtime cuDNN version (e.g. 91900), 0 when cuDNN cannot be used.
int64_t cudnn_runtime_version();

}  // namespace hlm::cuda
