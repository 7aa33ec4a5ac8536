// CUDA token embedding: a row gather forward; a deterministic backward that stable-sorts the
// token positions by id (CUB radix sort) and lets one block own each id, adding its rows in
// position order, so no two threads ever add into the same table row.
#include "ops/embedding.h"

#include <cub/device/device_radix_sort.cuh>

#include "ops/cuda/common.cuh"

namespace hlm::cuda {

namespace {

template <typename TT, typename TO>
__global__ void embedding_forward_kernel(const int32_t* ids, const TT* table, int64_t ld_table,
                                         int64_t V, TO* out, int64_t ld_out, int64_t D,
                                         unsigned long long* flag) {
  const int64_t m = blockIdx.x;
  const int32_t id = ids[m];
  TO* dst = out + m * ld_out;
  if (id < 0 || id >= V) {
    if (threadIdx.x == 0) report_bad_index(flag, m, id);
    for (int64_t c = threadIdx.x; c < D; c += blockDim.x) dst[c] = from_f32<TO>(0.0f);
    return;
  }
  const TT* src = table + static_cast<int64_t>(id) * ld_table;
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) dst[c] = from_f32<TO>(to_f32(src[c]));
}

// Same-type gather with 16-byte copies (rows aligned, D a multiple of the vector width).
__global__ void embedding_forward_vec_kernel(const int32_t* ids, const uint4* table,
                                             int64_t ld_table_vec, int64_t V, uint4* out,
                                             int64_t ld_out_vec, int64_t D_vec,
                                             unsigned long long* flag) {
  const int64_t m = blockIdx.x;
  const int32_t id = ids[m];
  uint4* dst = out + m * ld_out_vec;
  if (id < 0 || id >= V) {
    if (threadIdx.x == 0) report_bad_index(flag, m, id);
    for (int64_t c = threadIdx.x; c < D_vec; c += blockDim.x) dst[c] = make_uint4(0, 0, 0, 0);
    return;
  }
  const uint4* src = table + static_cast<int64_t>(id) * ld_table_vec;
  for (int64_t c = threadIdx.x; c < D_vec; c += blockDim.x) dst[c] = src[c];
}

__global__ void embedding_keys_kernel(const int32_t* ids, int64_t M, int64_t V, int32_t* keys,
                                      int32_t* positions, unsigned long long* flag) {
  const int64_t m = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (m >= M) return;
  const int32_t id = ids[m];
  if (id < 0 || id >= V) report_bad_index(flag, m, id);
  keys[m] = (id < 0 || id >= V) ? 0 : id;
  positions[m] = static_cast<int32_t>(m);
}

// Block i owns sorted position i if it starts a run of equal ids: it sums the run's dout rows in
// position order (the sort is stable) and adds the sum to the table row.
template <typename TG, typename TT>
__global__ void embedding_backward_kernel(const int32_t* sorted_ids, const int32_t* sorted_pos,
                                          int64_t M, const TG* dout, int64_t ld_dout, TT* dtable,
                                          int64_t ld_table, int64_t D) {
  const int64_t i = blockIdx.x;
  const int32_t id = sorted_ids[i];
  if (i > 0 && sorted_ids[i - 1] == id) return;
  int64_t end = i + 1;
  while (end < M && sorted_ids[end] == id) ++end;
  TT* dst = dtable + static_cast<int64_t>(id) * ld_table;
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = i; j < end; ++j) acc += to_f32(dout[static_cast<int64_t>(sorted_pos[j]) * ld_dout + c]);
    dst[c] = from_f32<TT>(to_f32(dst[c]) + acc);
  }
}

size_t align256(size_t b) { return (b + 255) / 256 * 256; }

int key_bits(int64_t V) {
  int bits = 1;
  while (bits < 31 && (int64_t{1} << bits) < V) ++bits;
  return bits;
}

}  // namespace

void embedding_forward(const Tensor& ids, const Tensor& table, const Tensor& out) {
  const char* op = "embedding_forward";
  require_cuda(table, op, "table");
  require_cuda(out, op, "out");
  require_float(table, op, "table");
  require_float(out, op, "out");
  HLM_REQUIRE(table.ndim == 2, ErrorKind::Internal, "{}: table {} must be [V,D]", op, table.describe());
  RowView TB = as_rows(table, 1, "embedding table"), O = as_rows(out, 1, "embedding out");
  const int64_t V = TB.rows, D = TB.cols, M = O.rows;
  HLM_REQUIRE(O.cols == D, ErrorKind::Internal, "{}: out {} must have width {}", op, out.describe(), D);
  require_index(ids, M, op, "ids");
  if (M == 0) return;
  unsigned long long* flag = index_flag();
  const int threads = 256;
  const size_t es = dtype_size(table.dtype);
  const bool vec = table.dtype == out.dtype && (D * static_cast<int64_t>(es)) % 16 == 0 &&
                   (TB.ld * static_cast<int64_t>(es)) % 16 == 0 &&
                   (O.ld * static_cast<int64_t>(es)) % 16 == 0 && pointer_alignment(TB.data) >= 16 &&
                   pointer_alignment(O.data) >= 16;
  if (vec) {
    const int64_t per = 16 / static_cast<int64_t>(es);
    embedding_forward_vec_kernel<<<static_cast<unsigned>(M), threads, 0, stream()>>>(
        ids.ptr<int32_t>(), static_cast<const uint4*>(TB.data), TB.ld / per, V,
        static_cast<uint4*>(O.data), O.ld / per, D / per, flag);
    HLM_CUDA_CHECK_LAUNCH();
  } else {
    dispatch_float(table.dtype, op, [&]<typename TT>() {
      dispatch_float(out.dtype, op, [&]<typename TO>() {
        embedding_forward_kernel<TT, TO><<<static_cast<unsigned>(M), threads, 0, stream()>>>(
            ids.ptr<int32_t>(), static_cast<const TT*>(TB.data), TB.ld, V,
            static_cast<TO*>(O.data), O.ld, D, flag);
        HLM_CUDA_CHECK_LAUNCH();
      });
    });
  }
  check_index_flag(op, "token id", V);
}

void embedding_backward(const Tensor& ids, const Tensor& dout, const Tensor& dtable) {
  const char* op = "embedding_backward";
  require_cuda(dout, op, "dout");
  require_cuda(dtable, op, "dtable");
  require_float(dout, op, "dout");
  require_float(dtable, op, "dtable");
  HLM_REQUIRE(dtable.ndim == 2, ErrorKind::Internal, "{}: dtable {} must be [V,D]", op,
              dtable.describe());
  RowView TB = as_rows(dtable, 1, "embedding dtable"), G = as_rows(dout, 1, "embedding dout");
  const int64_t V = TB.rows, D = TB.cols, M = G.rows;
  HLM_REQUIRE(G.cols == D, ErrorKind::Internal, "{}: dout {} must have width {}", op,
              dout.describe(), D);
  require_index(ids, M, op, "ids");
  if (M == 0 || D == 0) return;
  HLM_REQUIRE(M < (int64_t{1} << 31), ErrorKind::Unsupported, "{}: {} tokens exceed 2^31", op, M);
  const int n = static_cast<int>(M);

  // Scratch layout: keys in/out, positions in/out, then CUB's temporary storage.
  size_t cub_bytes = 0;
  HLM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, cub_bytes, static_cast<const int32_t*>(nullptr),
                                                 static_cast<int32_t*>(nullptr),
                                                 static_cast<const int32_t*>(nullptr),
                                                 static_cast<int32_t*>(nullptr), n, 0, key_bits(V),
                                                 stream()));
  const size_t arr = align256(static_cast<size_t>(M) * sizeof(int32_t));
  char* base = static_cast<char*>(scratch(Scratch::Sort, 4 * arr + cub_bytes));
  auto* keys_in = reinterpret_cast<int32_t*>(base);
  auto* keys_out = reinterpret_cast<int32_t*>(base + arr);
  auto* pos_in = reinterpret_cast<int32_t*>(base + 2 * arr);
  auto* pos_out = reinterpret_cast<int32_t*>(base + 3 * arr);
  void* cub_tmp = base + 4 * arr;

  unsigned long long* flag = index_flag();
  embedding_keys_kernel<<<grid_for(M, 256), 256, 0, stream()>>>(ids.ptr<int32_t>(), M, V, keys_in,
                                                                 pos_in, flag);
  HLM_CUDA_CHECK_LAUNCH();
  check_index_flag(op, "token id", V);
  HLM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(cub_tmp, cub_bytes, keys_in, keys_out, pos_in,
                                                 pos_out, n, 0, key_bits(V), stream()));
  dispatch_float(dout.dtype, op, [&]<typename TG>() {
    dispatch_float(dtable.dtype, op, [&]<typename TT>() {
      embedding_backward_kernel<TG, TT><<<static_cast<unsigned>(M), 256, 0, stream()>>>(
          keys_out, pos_out, M, static_cast<const TG*>(G.data), G.ld, static_cast<TT*>(TB.data),
          TB.ld, D);
      HLM_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace hlm::cuda
