// Float storage conversions, one loop per pair so the compiler vectorises each.
#include "io/convert.h"

#include <cstring>

#include "core/error.h"

namespace hlm {

namespace {

template <typename T>
inline T load(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Reads element i of a float type as float / double.
template <DType S>
inline double read_as_double(const unsigned char* s, int64_t i) {
  if constexpr (S == DType::F32) return load<float>(s + 4 * i);
  if constexpr (S == DType::F64) return load<double>(s + 8 * i);
  if constexpr (S == DType::BF16) return bf16_bits_to_f32(load<uint16_t>(s + 2 * i));
  if constexpr (S == DType::F16) return f16_bits_to_f32(load<uint16_t>(s + 2 * i));
}

template <DType S>
inline float read_as_float(const unsigned char* s, int64_t i) {
  if constexpr (S == DType::F32) return load<float>(s + 4 * i);
  if constexpr (S == DType::F64) return static_cast<float>(load<double>(s + 8 * i));
  if constexpr (S == DType::BF16) return bf16_bits_to_f32(load<uint16_t>(s + 2 * i));
  if constexpr (S == DType::F16) return f16_bits_to_f32(load<uint16_t>(s + 2 * i));
}

template <DType S, DType D>
void convert_range(unsigned char* d, const unsigned char* s, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    if constexpr (D == DType::F64) {
      double v = read_as_double<S>(s, i);
      std::memcpy(d + 8 * i, &v, 8);
    } else if constexpr (D == DType::F32) {
      float v = read_as_float<S>(s, i);
      std::memcpy(d + 4 * i, &v, 4);
    } else if constexpr (D == DType::BF16) {
      // f64 -> bf16 goes through f32: double rounding can differ from a direct rounding in the
      // last bf16 bit for values within 2^-24 relative of a tie; torch does the same.
      uint16_t h = f32_to_bf16_bits(read_as_float<S>(s, i));
      std::memcpy(d + 2 * i, &h, 2);
    } else {
      uint16_t h = f32_to_f16_bits(read_as_float<S>(s, i));
      std::memcpy(d + 2 * i, &h, 2);
    }
  }
}

template <DType S, DType D>
void convert_pair(void* dst, const void* src, int64_t n, bool threaded) {
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  constexpr int64_t kBlock = int64_t{1} << 16;
  if (!threaded || n < 4 * kBlock) {
    convert_range<S, D>(d, s, 0, n);
    return;
  }
  const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b)
    convert_range<S, D>(d, s, b * kBlock, b * kBlock + kBlock < n ? b * kBlock + kBlock : n);
}

template <DType S>
void convert_from(void* dst, DType dst_type, const void* src, int64_t n, bool threaded) {
  switch (dst_type) {
    case DType::F32: return convert_pair<S, DType::F32>(dst, src, n, threaded);
    case DType::F64: return convert_pair<S, DType::F64>(dst, src, n, threaded);
    case DType::BF16: return convert_pair<S, DType::BF16>(dst, src, n, threaded);
    case DType::F16: return convert_pair<S, DType::F16>(dst, src, n, threaded);
    default: break;
  }
}

void copy_bytes(void* dst, const void* src, size_t bytes, bool threaded) {
  constexpr size_t kBlock = size_t{1} << 20;
  if (!threaded || bytes < 8 * kBlock) {
    std::memcpy(dst, src, bytes);
    return;
  }
  const int64_t blocks = static_cast<int64_t>((bytes + kBlock - 1) / kBlock);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    size_t off = static_cast<size_t>(b) * kBlock;
    std::memcpy(static_cast<char*>(dst) + off, static_cast<const char*>(src) + off,
                bytes - off < kBlock ? bytes - off : kBlock);
  }
}

}  // namespace

bool can_convert(DType from, DType to) { return from == to || (is_float(from) && is_float(to)); }

void convert_elements(void* dst, DType dst_type, const void* src, DType src_type, int64_t n, bool threaded) {
  if (n <= 0) return;
  if (dst_type == src_type) {
    copy_bytes(dst, src, static_cast<size_t>(n) * dtype_size(src_type), threaded);
    return;
  }
  HLM_REQUIRE(can_convert(src_type, dst_type), ErrorKind::Unsupported, "cannot convert {} to {}",
              dtype_name(src_type), dtype_name(dst_type));
  switch (src_type) {
    case DType::F32: return convert_from<DType::F32>(dst, dst_type, src, n, threaded);
    case DType::F64: return convert_from<DType::F64>(dst, dst_type, src, n, threaded);
    case DType::BF16: return convert_from<DType::BF16>(dst, dst_type, src, n, threaded);
    case DType::F16: return convert_from<DType::F16>(dst, dst_type, src, n, threaded);
    default: break;
  }
}

}  // namespace hlm
