// Portability macros shared by host code and CUDA code.
#pragma once

#if defined(__CUDACC__)
#define HLM_HD __host__ __device__ __forceinline__
#else
#define HLM_HD inline
#endif
