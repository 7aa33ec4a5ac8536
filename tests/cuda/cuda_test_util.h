// Helpers for the CUDA-vs-CPU op tests: device tensors built from host values in any dtype,
// downloads, poisoning (0xFF bytes = NaN in bf16 / f32), bf16 rounding of host references, and
// bitwise comparison for the determinism checks. Host code only: builds without CUDA too.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/memory.h"
#include "test_util.h"

namespace hlm::test {

// An owning CUDA tensor (contiguous unless `ld` widens its rows).
struct DeviceTensor {
  Buffer buf;
  Tensor t;
  DeviceTensor() = default;
  DeviceTensor(DType dtype, std::vector<int64_t> shape);
};

// A contiguous host tensor with h's values converted to dtype (float dtypes and I32).
HostTensor convert_host(const HostTensor& h, DType dtype);
// h's values rounded to bf16 and back (in place): the exact values a BF16 device copy holds.
void round_to_bf16(HostTensor& h);
// A CUDA tensor of dtype holding h's values.
DeviceTensor upload(const HostTensor& h, DType dtype);
// Writes h's values (converted to t's dtype) into the existing CUDA tensor t (row views allowed).
void upload_into(const Tensor& t, const HostTensor& h);
// t's values on the host, in t's dtype (row views gathered into a contiguous tensor).
HostTensor download(const Tensor& t);
// Every element of t set to 0xFF bytes (NaN for BF16 / F16 / F32).
void poison(const Tensor& t);
// The raw bytes of t (row views gathered), for bitwise comparisons.
std::vector<uint8_t> raw_bytes(const Tensor& t);
// A [rows, cols] view with row stride ld into a fresh [rows, ld] CUDA buffer (a column slice of a
// wider activation, as the model passes them).
DeviceTensor make_row_view(DType dtype, int64_t rows, int64_t cols, int64_t ld);
// A [B,T,H,E] view of columns [col, col + H·E) of a contiguous [B,T,W] tensor (q, k or v inside a
// fused qkv projection output).
Tensor head_view(const Tensor& fused, int64_t col, int64_t H, int64_t E);

// Random host values (normal, stddev) in dtype F32.
HostTensor random_normal(std::vector<int64_t> shape, uint64_t seed, double stddev = 1.0);
HostTensor random_uniform(std::vector<int64_t> shape, uint64_t seed, double lo, double hi);

// Relative error ‖a − b‖ / ‖b‖ with a message-friendly name; NaN → inf.
double rel_error(const HostTensor& a, const HostTensor& b);

}  // namespace hlm::test
