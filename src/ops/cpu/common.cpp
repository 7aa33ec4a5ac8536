// Shape, dtype and device checks shared by the CPU ops.
#include "ops/cpu/common.h"

#include <fmt/ranges.h>

namespace hlm::cpu::detail {

void require_cpu(const Tensor& t, const char* op, const char* name) {
  HLM_REQUIRE(t.defined(), ErrorKind::Internal, "{}: {} is not set", op, name);
  HLM_REQUIRE(t.device == Device::CPU, ErrorKind::Internal, "{}: {} is {}, expected a CPU tensor",
              op, name, t.describe());
}

void require_dtype(const Tensor& t, DType dtype, const char* op, const char* name) {
  HLM_REQUIRE(t.dtype == dtype, ErrorKind::Internal, "{}: {} is {}, expected dtype {}", op, name,
              t.describe(), dtype_name(dtype));
}

void require_shape(const Tensor& t, std::initializer_list<int64_t> dims, const char* op,
                   const char* name) {
  bool ok = t.ndim == static_cast<int>(dims.size());
  int d = 0;
  for (int64_t n : dims) {
    if (!ok) break;
    ok = t.shape[static_cast<size_t>(d++)] == n;
  }
  if (!ok) {
    fail(ErrorKind::Internal, "{}: {} is {}, expected shape [{}]", op, name, t.describe(),
         fmt::join(dims, ","));
  }
}

const int32_t* doc_row(const Tensor& doc, int64_t b) {
  if (!doc.defined()) return nullptr;
  HLM_REQUIRE(doc.ndim == 2 && (doc.shape[1] <= 1 || doc.stride[1] == 1), ErrorKind::Internal,
              "doc ids: {} must be [B,T] with T contiguous", doc.describe());
  return doc.ptr<int32_t>() + b * doc.stride[0];
}

}  // namespace hlm::cpu::detail
