// Tensor view helpers.
#include "core/tensor.h"

namespace hlm {

const char* device_name(Device d) { return d == Device::CPU ? "CPU" : "CUDA"; }

Tensor::Tensor(void* data_, DType dtype_, Device device_, Shape s)
    : data(data_), dtype(dtype_), device(device_), ndim(static_cast<int>(s.size())) {
  HLM_ASSERT(s.size() <= static_cast<size_t>(kMaxDims));
  int64_t st = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    shape[static_cast<size_t>(d)] = s[static_cast<size_t>(d)];
    stride[static_cast<size_t>(d)] = st;
    st *= s[static_cast<size_t>(d)];
  }
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[static_cast<size_t>(d)];
  return n;
}

bool Tensor::is_contiguous() const {
  int64_t st = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    if (shape[static_cast<size_t>(d)] != 1 && stride[static_cast<size_t>(d)] != st) return false;
    st *= shape[static_cast<size_t>(d)];
  }
  return true;
}

Tensor Tensor::reshape(Shape s) const {
  HLM_REQUIRE(is_contiguous(), ErrorKind::Internal, "reshape of non-contiguous tensor {}", describe());
  std::array<int64_t, kMaxDims> out{};
  HLM_ASSERT(s.size() <= static_cast<size_t>(kMaxDims));
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      HLM_ASSERT(infer < 0);
      infer = static_cast<int>(i);
    } else {
      known *= s[i];
    }
    out[i] = s[i];
  }
  if (infer >= 0) out[static_cast<size_t>(infer)] = known == 0 ? 0 : numel() / known;
  Tensor t(data, dtype, device, Shape(out.data(), s.size()));
  HLM_REQUIRE(t.numel() == numel(), ErrorKind::Internal, "reshape {} to {} changes the size",
              shape_str(), t.shape_str());
  return t;
}

Tensor Tensor::slice(int dim, int64_t start, int64_t len) const {
  int d = dim < 0 ? dim + ndim : dim;
  HLM_ASSERT(d >= 0 && d < ndim);
  HLM_ASSERT(start >= 0 && len >= 0 && start + len <= shape[static_cast<size_t>(d)]);
  Tensor t = *this;
  t.data = static_cast<char*>(data) + start * stride[static_cast<size_t>(d)] *
                                          static_cast<int64_t>(dtype_size(dtype));
  t.shape[static_cast<size_t>(d)] = len;
  return t;
}

Tensor Tensor::select(int dim, int64_t i) const {
  int d = dim < 0 ? dim + ndim : dim;
  Tensor t = slice(d, i, 1);
  for (int k = d; k < ndim - 1; ++k) {
    t.shape[static_cast<size_t>(k)] = t.shape[static_cast<size_t>(k + 1)];
    t.stride[static_cast<size_t>(k)] = t.stride[static_cast<size_t>(k + 1)];
  }
  t.ndim = ndim - 1;
  t.shape[static_cast<size_t>(t.ndim)] = 0;
  t.stride[static_cast<size_t>(t.ndim)] = 0;
  return t;
}

Tensor Tensor::split_last(Shape inner) const {
  HLM_ASSERT(ndim >= 1 && stride[static_cast<size_t>(ndim - 1)] == 1);
  HLM_ASSERT(ndim - 1 + static_cast<int>(inner.size()) <= kMaxDims);
  int64_t n = 1;
  for (int64_t s : inner) n *= s;
  HLM_REQUIRE(n == shape[static_cast<size_t>(ndim - 1)], ErrorKind::Internal,
              "split_last: {} into {} elements", shape_str(), n);
  Tensor t = *this;
  t.ndim = ndim - 1 + static_cast<int>(inner.size());
  int64_t st = 1;
  for (int d = t.ndim - 1, k = static_cast<int>(inner.size()) - 1; k >= 0; --d, --k) {
    t.shape[static_cast<size_t>(d)] = inner[static_cast<size_t>(k)];
    t.stride[static_cast<size_t>(d)] = st;
    st *= inner[static_cast<size_t>(k)];
  }
  return t;
}

Tensor Tensor::rows2d() const {
  RowView r = as_rows(*this, 1, "rows2d");
  Tensor t = *this;
  t.ndim = 2;
  t.shape = {};
  t.stride = {};
  t.shape[0] = r.rows;
  t.shape[1] = r.cols;
  t.stride[0] = r.ld;
  t.stride[1] = 1;
  return t;
}

std::string Tensor::shape_str() const {
  std::string s = "[";
  for (int d = 0; d < ndim; ++d) {
    if (d) s += ",";
    s += std::to_string(shape[static_cast<size_t>(d)]);
  }
  return s + "]";
}

std::string Tensor::describe() const {
  return fmt::format("{}{} on {}", dtype_name(dtype), shape_str(), device_name(device));
}

bool same_shape(const Tensor& a, const Tensor& b) {
  if (a.ndim != b.ndim) return false;
  for (int d = 0; d < a.ndim; ++d)
    if (a.shape[static_cast<size_t>(d)] != b.shape[static_cast<size_t>(d)]) return false;
  return true;
}

RowView as_rows(const Tensor& t, int inner_dims, const char* what) {
  HLM_REQUIRE(t.defined(), ErrorKind::Internal, "{}: tensor is not set", what);
  HLM_REQUIRE(inner_dims >= 1 && inner_dims <= t.ndim, ErrorKind::Internal,
              "{}: {} has fewer than {} dims", what, t.describe(), inner_dims);
  int first_inner = t.ndim - inner_dims;
  int64_t cols = 1, st = 1;
  for (int d = t.ndim - 1; d >= first_inner; --d) {
    HLM_REQUIRE(t.shape[static_cast<size_t>(d)] == 1 || t.stride[static_cast<size_t>(d)] == st,
                ErrorKind::Internal, "{}: inner dims of {} are not packed", what, t.describe());
    st *= t.shape[static_cast<size_t>(d)];
  }
  cols = st;
  int64_t rows = 1, ld = cols;
  bool have_ld = false;
  for (int d = first_inner - 1; d >= 0; --d) {
    int64_t n = t.shape[static_cast<size_t>(d)];
    if (n == 1) continue;
    int64_t s = t.stride[static_cast<size_t>(d)];
    if (!have_ld) {
      ld = s;
      have_ld = true;
    } else {
      HLM_REQUIRE(s == ld * rows, ErrorKind::Internal,
                  "{}: leading dims of {} do not collapse to rows", what, t.describe());
    }
    rows *= n;
  }
  return RowView{t.data, rows, cols, ld, t.dtype, t.device};
}

}  // namespace hlm
