// CUDA GEMMs through cuBLASLt: row-major products mapped onto cuBLASLt's column-major ones by
// swapping the operands, BF16 (or F16 / F32) operands with F32 accumulation, bias in the epilogue,
// and one cached algorithm per shape, layout and alignment (the fastest of the heuristic's top
// candidates that gives the first one's bits, timed once). Where cuBLASLt offers nothing
// (an epilogue it rejects, an odd layout) the product falls back: plain GEMM + bias kernel, then
// our own kernel (gemm_own.cu).
#include "ops/gemm.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>
#include <unordered_map>

#include "core/memory.h"
#include "ops/cuda/common.cuh"
#include "ops/cuda/gemm_own.cuh"
#include "ops/cuda/handles.cuh"
#include "ops/elementwise.h"

namespace hlm::cuda {

namespace {

constexpr size_t kGemmWorkspace = 32u << 20;
constexpr int kTuneCandidates = 8;  // heuristic results timed once per shape (tune_plan)

cudaDataType_t cuda_type(DType t, const char* op) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    default:
      fail(ErrorKind::Unsupported, "{}: dtype {} is not supported by the CUDA GEMM", op,
           dtype_name(t));
  }
}

using Mat = GemmMat;

Mat mat_of(const Tensor& t, const char* op, const char* name) {
  require_cuda(t, op, name);
  RowView r = as_rows(t, 1, name);
  return Mat{r.data, r.rows, r.cols, std::max<int64_t>(r.ld, r.cols), r.dtype};
}

struct GemmKey {
  int ta, tb;
  int dtype_ab, dtype_c, dtype_bias;
  int pad_;  // keeps the struct free of padding bytes: it is hashed and compared as bytes
  int64_t m, n, k, lda, ldb, ldc;
  int align_a, align_b, align_c, align_bias;
  int epilogue;
  int relaxed;  // 1: alignments declared as one element (the retry after a heuristic error)
  bool operator==(const GemmKey& o) const { return std::memcmp(this, &o, sizeof(GemmKey)) == 0; }
};
static_assert(std::has_unique_object_representations_v<GemmKey>, "GemmKey must have no padding");
struct GemmKeyHash {
  size_t operator()(const GemmKey& k) const {
    const auto* p = reinterpret_cast<const unsigned char*>(&k);
    size_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof(GemmKey); ++i) h = (h ^ p[i]) * 1099511628211ull;
    return h;
  }
};

// Owned cuBLASLt descriptors and the chosen algorithm for one GemmKey.
struct GemmPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool has_algo = false;
  std::string why;  // when !has_algo: what the heuristic said
  // The heuristic's top candidates (algo is the first until tuned); see tune_plan.
  cublasLtMatmulAlgo_t candidates[kTuneCandidates] = {};
  int ncandidates = 0;
  bool tuned = false;
};

std::mutex g_gemm_mutex;
std::unordered_map<GemmKey, GemmPlan, GemmKeyHash>& gemm_cache() {
  static auto* cache = new std::unordered_map<GemmKey, GemmPlan, GemmKeyHash>();
  return *cache;
}

int capped_alignment(const void* p) { return std::min(pointer_alignment(p), 16); }

// HLM_GEMM (read on every call): auto (default: our GEMV for M ≤ 8 and small weights, else
// cuBLASLt) | gemv (our GEMV for every M ≤ 8 product) | cublaslt
// (never our GEMV: the benchmark's comparison) | fallback (always our plain kernel: tests).
enum class GemmMode { Auto, Gemv, CublasLt, Fallback };
GemmMode gemm_mode() {
  const char* v = std::getenv("HLM_GEMM");
  if (!v || !*v || std::strcmp(v, "auto") == 0) return GemmMode::Auto;
  if (std::strcmp(v, "gemv") == 0) return GemmMode::Gemv;
  if (std::strcmp(v, "cublaslt") == 0) return GemmMode::CublasLt;
  if (std::strcmp(v, "fallback") == 0) return GemmMode::Fallback;
  fail(ErrorKind::InvalidArgument, "HLM_GEMM={}: expected auto, gemv, cublaslt or fallback", v);
}

// Builds descriptors and asks the heuristic for the best algorithm. Returns a plan without an
// algorithm (and the reason) when cuBLASLt offers none or rejects the request: cuBLASLt answers
// some epilogue / layout combinations with INVALID_VALUE rather than zero results (seen for
// bias + M=38 N=75 K=96), so an error here is a fallback, not a failure.
GemmPlan make_plan(const GemmKey& key, const char* op) {
  (void)op;
  GemmPlan plan;
  const cudaDataType_t tab = static_cast<cudaDataType_t>(key.dtype_ab);
  const cudaDataType_t tc = static_cast<cudaDataType_t>(key.dtype_c);
  const cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  HLM_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.op, compute, CUDA_R_32F));
  const cublasOperation_t opa = key.tb ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt A = our B
  const cublasOperation_t opb = key.ta ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt B = our A
  HLM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof(opa)));
  HLM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof(opb)));
  const cublasLtEpilogue_t epi = static_cast<cublasLtEpilogue_t>(key.epilogue);
  HLM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  if (epi == CUBLASLT_EPILOGUE_BIAS) {
    const cudaDataType_t tbias = static_cast<cudaDataType_t>(key.dtype_bias);
    HLM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                    &tbias, sizeof(tbias)));
  }
  // Column-major shapes: C' [N,M] = A' · B' with A' = op(our B)ᵀ-view [N,K], B' = [K,M].
  const uint64_t M = static_cast<uint64_t>(key.m), N = static_cast<uint64_t>(key.n),
                 K = static_cast<uint64_t>(key.k);
  HLM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.a, tab, key.tb ? K : N, key.tb ? N : K, key.ldb));
  HLM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.b, tab, key.ta ? M : K, key.ta ? K : M, key.lda));
  HLM_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.c, tc, N, M, key.ldc));

  cublasLtMatmulPreference_t pref = nullptr;
  HLM_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = kGemmWorkspace;
  HLM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  const uint32_t esz_ab = static_cast<uint32_t>(key.dtype_ab == CUDA_R_32F ? 4 : 2),
                 esz_c = static_cast<uint32_t>(key.dtype_c == CUDA_R_32F ? 4 : 2);
  const uint32_t al_a = key.relaxed ? esz_ab : static_cast<uint32_t>(key.align_b),
                 al_b = key.relaxed ? esz_ab : static_cast<uint32_t>(key.align_a),
                 al_c = key.relaxed ? esz_c : static_cast<uint32_t>(key.align_c);
  HLM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof(al_a)));
  HLM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof(al_b)));
  HLM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof(al_c)));
  HLM_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof(al_c)));

  cublasLtMatmulHeuristicResult_t results[kTuneCandidates] = {};
  int found = 0;
  cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(cublaslt_handle(), plan.op, plan.a, plan.b, plan.c,
                                                     plan.c, pref, kTuneCandidates, results, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st == CUBLAS_STATUS_SUCCESS)
    for (int i = 0; i < found; ++i)
      if (results[i].state == CUBLAS_STATUS_SUCCESS) plan.candidates[plan.ncandidates++] = results[i].algo;
  if (plan.ncandidates > 0) {
    plan.algo = plan.candidates[0];
    plan.has_algo = true;
    plan.tuned = plan.ncandidates == 1;
  } else {
    plan.why = st != CUBLAS_STATUS_SUCCESS ? std::string("cublasLtMatmulAlgoGetHeuristic: ") +
                                                 cublasGetStatusString(st)
                                           : std::string("no algorithm");
  }
  return plan;
}

// A position-weighted sum of c's bit patterns (mod 2^64): equal sums ⇔ (in practice) equal bits.
template <typename T>
__global__ void bits_checksum_kernel(const T* c, int64_t rows, int64_t cols, int64_t ld,
                                     unsigned long long* out) {
  unsigned long long acc = 0;
  const int64_t n = rows * cols, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    unsigned long long bits = 0;
    memcpy(&bits, c + (i / cols) * ld + i % cols, sizeof(T));
    acc += bits * (2ull * static_cast<unsigned long long>(i) + 1ull);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) atomicAdd(out, acc);  // integer sums: any order gives the same
}

unsigned long long output_checksum(const Mat& c) {
  auto* dev = scratch_as<unsigned long long>(Scratch::Misc, 1);
  HLM_CUDA_CHECK(cudaMemsetAsync(dev, 0, sizeof(unsigned long long), stream()));
  dispatch_float(c.dtype, "gemm tune", [&]<typename T>() {
    bits_checksum_kernel<T><<<static_cast<unsigned>(4 * num_sms()), 256, 0, stream()>>>(
        static_cast<const T*>(c.data), c.rows, c.cols, c.ld, dev);
    HLM_CUDA_CHECK_LAUNCH();
  });
  unsigned long long host = 0;
  HLM_CUDA_CHECK(cudaMemcpyAsync(&host, dev, sizeof(host), cudaMemcpyDeviceToHost, stream()));
  HLM_CUDA_CHECK(cudaStreamSynchronize(stream()));
  return host;
}

// One-time choice among the heuristic's candidates for a plan, on the first call of its shape
// that overwrites c (beta = 0, or C read from c_in, not c: c is scratch until the real product
// overwrites it): each candidate runs once,
// must give bit for bit the output of the heuristic's first choice (else the choice could change
// results from run to run), and is timed (median of 5); the fastest such one is kept. Skipped
// while a graph is being captured (tried again on a later call) and with HLM_GEMM_TUNE=0.
void tune_plan(GemmPlan& plan, const Mat& a, const Mat& b, const Mat& c, float beta, const void* c_in, void* ws,
               const char* op) {
  const char* env = std::getenv("HLM_GEMM_TUNE");
  if ((env && env[0] == '0') || stream_capturing()) return;
  const float one = 1.0f;
  const void* cread = c_in ? c_in : c.data;
  auto run = [&](const cublasLtMatmulAlgo_t& algo) {
    return cublasLtMatmul(cublaslt_handle(), plan.op, &one, b.data, plan.a, a.data, plan.b, &beta,
                          cread, plan.c, const_cast<void*>(c.data), plan.c, &algo, ws,
                          kGemmWorkspace, stream());
  };
  cudaEvent_t ev[2];
  HLM_CUDA_CHECK(cudaEventCreate(&ev[0]));
  HLM_CUDA_CHECK(cudaEventCreate(&ev[1]));
  unsigned long long reference = 0;
  float best_ms = 0.0f;
  int best = 0;
  for (int i = 0; i < plan.ncandidates; ++i) {
    if (run(plan.candidates[i]) != CUBLAS_STATUS_SUCCESS) continue;
    const unsigned long long sum = output_checksum(c);
    if (i == 0) reference = sum;
    if (sum != reference) continue;
    float ms[5];
    int timed = 0;
    for (int r = 0; r < 5; ++r) {
      HLM_CUDA_CHECK(cudaEventRecord(ev[0], stream()));
      if (run(plan.candidates[i]) != CUBLAS_STATUS_SUCCESS) break;
      HLM_CUDA_CHECK(cudaEventRecord(ev[1], stream()));
      HLM_CUDA_CHECK(cudaEventSynchronize(ev[1]));
      float t = 0.0f;
      HLM_CUDA_CHECK(cudaEventElapsedTime(&t, ev[0], ev[1]));
      ms[timed++] = t;
    }
    if (timed < 5) continue;
    std::sort(ms, ms + 5);
    if (i == 0 || ms[2] < best_ms) {
      best_ms = ms[2];
      best = i;
    }
  }
  cudaEventDestroy(ev[0]);
  cudaEventDestroy(ev[1]);
  (void)op;
  plan.algo = plan.candidates[best];
  plan.tuned = true;
}

GemmPlan& get_plan(const GemmKey& key, const char* op) {
  std::lock_guard<std::mutex> lock(g_gemm_mutex);
  auto& cache = gemm_cache();
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, make_plan(key, op)).first;
  return it->second;
}

// dst[r, c] += bias[c] over a row-major matrix (the fallback when no epilogue algorithm exists).
template <typename TC, typename TB>
__global__ void add_bias_kernel(TC* c, int64_t rows, int64_t cols, int64_t ldc, const TB* bias) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, col = i % cols;
  TC* p = c + r * ldc + col;
  *p = from_f32<TC>(to_f32(*p) + to_f32(bias[col]));
}

void add_bias(const Mat& c, const void* bias, DType bias_dtype, const char* op) {
  dispatch_float(c.dtype, op, [&]<typename TC>() {
    dispatch_float(bias_dtype, op, [&]<typename TB>() {
      add_bias_kernel<TC, TB><<<grid_for(c.rows * c.cols, 256), 256, 0, stream()>>>(
          static_cast<TC*>(const_cast<void*>(c.data)), c.rows, c.cols, c.ld,
          static_cast<const TB*>(bias));
      HLM_CUDA_CHECK_LAUNCH();
    });
  });
}

// c = alpha · op(a) · op(b) + beta · C (+ bias[N] per column of the row-major result), C = c, or
// c_in when given: a matrix of c's layout (rows, cols, ld, dtype) that cuBLASLt reads as C (the
// residual add in the epilogue); the other paths copy it into c first.
void gemm_rowmajor(const Mat& a, bool ta, const Mat& b, bool tb, const Mat& c, float alpha,
                   float beta, const void* bias, DType bias_dtype, const char* op,
                   const void* c_in = nullptr, bool b_weight = false) {
  const int64_t M = c.rows, N = c.cols;
  if (c_in == c.data || beta == 0.0f) c_in = nullptr;
  auto stage_c_in = [&] {
    if (!c_in || M == 0 || N == 0) return;
    const size_t esz = dtype_size(c.dtype), pitch = static_cast<size_t>(c.ld) * esz;
    HLM_CUDA_CHECK(cudaMemcpy2DAsync(const_cast<void*>(c.data), pitch, c_in, pitch, static_cast<size_t>(N) * esz,
                                     static_cast<size_t>(M), cudaMemcpyDeviceToDevice, stream()));
    c_in = nullptr;
  };
  const int64_t K = ta ? a.rows : a.cols;
  HLM_REQUIRE((ta ? a.cols : a.rows) == M, ErrorKind::Internal,
              "{}: op(a) is [{},{}] but c has {} rows", op, ta ? a.cols : a.rows, K, M);
  HLM_REQUIRE((tb ? b.cols : b.rows) == K && (tb ? b.rows : b.cols) == N, ErrorKind::Internal,
              "{}: op(b) is [{},{}] but needs [{},{}]", op, tb ? b.cols : b.rows,
              tb ? b.rows : b.cols, K, N);
  HLM_REQUIRE(a.dtype == b.dtype, ErrorKind::Unsupported,
              "{}: operands must share a dtype, got {} and {}", op, dtype_name(a.dtype),
              dtype_name(b.dtype));
  if (M == 0 || N == 0) return;
  if (K == 0) {  // nothing to multiply: c = beta · c (+ bias)
    stage_c_in();
    Tensor ct(const_cast<void*>(c.data), c.dtype, Device::CUDA, {M, N});
    ct.stride[0] = c.ld;
    if (beta == 0.0f) {
      cuda::fill(ct, 0.0);
    } else if (beta != 1.0f) {
      cuda::scale_inplace(ct, beta);
    }
    if (bias) add_bias(c, bias, bias_dtype, op);
    return;
  }
  const GemmMode mode = gemm_mode();
  if (mode == GemmMode::Fallback) {
    stage_c_in();
    gemm_fallback(a, ta, b, tb, c, alpha, beta, bias, bias_dtype);
    return;
  }
  // Decode-sized products (M ≤ 8 rows against a weight in [N,K] layout). M = 1: our streaming
  // GEMV (gemm_own.cu). M > 1: the tensor-core GEMV streams large weights at only ~2.2 TB/s
  // against cuBLASLt's 3.5–4.2 (bench/RESULTS.md), so it keeps the small ones (k/v projections).
  constexpr int64_t kGemvMaxWeight = int64_t{8} << 20;
  if ((mode == GemmMode::Gemv || (mode == GemmMode::Auto && (gemv_streams(a) || b.rows * b.cols <= kGemvMaxWeight))) &&
      !ta && tb && gemv_applies(a, b, c)) {
    stage_c_in();
    gemv(a, b, c, alpha, beta, bias, bias_dtype, b_weight);
    return;
  }
  GemmKey key{};
  key.ta = ta;
  key.tb = tb;
  key.dtype_ab = cuda_type(a.dtype, op);
  key.dtype_c = cuda_type(c.dtype, op);
  key.dtype_bias = bias ? cuda_type(bias_dtype, op) : 0;
  key.m = M;
  key.n = N;
  key.k = K;
  key.lda = a.ld;
  key.ldb = b.ld;
  key.ldc = c.ld;
  key.align_a = capped_alignment(a.data);
  key.align_b = capped_alignment(b.data);
  key.align_c = c_in ? std::min(capped_alignment(c.data), capped_alignment(c_in)) : capped_alignment(c.data);
  key.align_bias = bias ? capped_alignment(bias) : 0;
  key.epilogue = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  // Candidates in order: with the bias epilogue, plain, plain with alignments declared as one
  // element; a plan whose heuristic or execution fails is skipped (its failure is cached).
  GemmKey keys[3] = {key, key, key};
  keys[1].epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  keys[1].dtype_bias = 0;
  keys[1].align_bias = 0;
  keys[2] = keys[1];
  keys[2].relaxed = 1;
  void* ws = scratch(Scratch::GemmWorkspace, kGemmWorkspace);
  std::string why;
  for (int i = bias ? 0 : 1; i < 3; ++i) {
    GemmPlan* plan = &get_plan(keys[i], op);
    if (!plan->has_algo) {
      why = plan->why;
      continue;
    }
    const bool with_epilogue = i == 0;
    if (with_epilogue) {
      HLM_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                      &bias, sizeof(bias)));
    }
    if (!plan->tuned && (beta == 0.0f || c_in) && alpha == 1.0f) tune_plan(*plan, a, b, c, beta, c_in, ws, op);
    const cublasStatus_t st =
        cublasLtMatmul(cublaslt_handle(), plan->op, &alpha, b.data, plan->a, a.data, plan->b, &beta,
                       c_in ? c_in : c.data, plan->c, const_cast<void*>(c.data), plan->c, &plan->algo, ws,
                       kGemmWorkspace, stream());
    if (st != CUBLAS_STATUS_SUCCESS) {
      // Parameter errors are raised before any work is queued: safe to try the next candidate.
      std::lock_guard<std::mutex> lock(g_gemm_mutex);
      plan->has_algo = false;
      plan->why = std::string("cublasLtMatmul: ") + cublasGetStatusString(st);
      why = plan->why;
      continue;
    }
    if (bias && !with_epilogue) add_bias(c, bias, bias_dtype, op);
    return;
  }
  // cuBLASLt offers nothing for this layout: our plain kernel (once-per-process note on stderr).
  static bool warned = false;
  if (!warned) {
    warned = true;
    std::fprintf(stderr,
                 "hybridlm: %s: cuBLASLt has no algorithm for %lldx%lldx%lld (%s operands, %s output, "
                 "ld %lld/%lld/%lld: %s); using the fallback kernel\n",
                 op, static_cast<long long>(M), static_cast<long long>(N), static_cast<long long>(K),
                 dtype_name(a.dtype), dtype_name(c.dtype), static_cast<long long>(a.ld),
                 static_cast<long long>(b.ld), static_cast<long long>(c.ld), why.c_str());
  }
  stage_c_in();
  gemm_fallback(a, ta, b, tb, c, alpha, beta, bias, bias_dtype);
}

// dbias[n] += Σ_m dy[m, n], deterministic: fixed chunks of rows summed per column into partials,
// then the partials summed in chunk order.
constexpr int kBiasRowsPerChunk = 256;

template <typename T>
__global__ void column_partial_kernel(const T* dy, int64_t rows, int64_t cols, int64_t ld,
                                      float* partial) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kBiasRowsPerChunk;
  if (col >= cols) return;
  const int64_t r1 = min(rows, r0 + kBiasRowsPerChunk);
  float acc = 0.0f;
  for (int64_t r = r0; r < r1; ++r) acc += to_f32(dy[r * ld + col]);
  partial[static_cast<int64_t>(blockIdx.y) * cols + col] = acc;
}

template <typename TO>
__global__ void column_finish_kernel(const float* partial, int64_t chunks, int64_t cols, TO* out) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= cols) return;
  float acc = 0.0f;
  for (int64_t c = 0; c < chunks; ++c) acc += partial[c * cols + col];
  out[col] = from_f32<TO>(to_f32(out[col]) + acc);
}

void bias_grad_accumulate(const Mat& dy, const Tensor& dbias, const char* op) {
  require_cuda(dbias, op, "dbias");
  require_float(dbias, op, "dbias");
  HLM_REQUIRE(dbias.is_contiguous() && dbias.numel() == dy.cols, ErrorKind::Internal,
              "{}: dbias {} must be contiguous with {} entries", op, dbias.describe(), dy.cols);
  if (dy.cols == 0) return;
  const int64_t chunks = std::max<int64_t>(1, (dy.rows + kBiasRowsPerChunk - 1) / kBiasRowsPerChunk);
  float* partial = scratch_as<float>(Scratch::Reduce, static_cast<size_t>(chunks * dy.cols));
  dispatch_float(dy.dtype, op, [&]<typename T>() {
    dim3 grid(grid_for(dy.cols, 128), static_cast<unsigned>(chunks));
    column_partial_kernel<T><<<grid, 128, 0, stream()>>>(static_cast<const T*>(dy.data), dy.rows,
                                                         dy.cols, dy.ld, partial);
    HLM_CUDA_CHECK_LAUNCH();
  });
  dispatch_float(dbias.dtype, op, [&]<typename TO>() {
    column_finish_kernel<TO><<<grid_for(dy.cols, 128), 128, 0, stream()>>>(
        partial, chunks, dy.cols, dbias.ptr<TO>());
    HLM_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void matmul(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c,
            float alpha, float beta) {
  const char* op = "matmul";
  gemm_rowmajor(mat_of(a, op, "a"), trans_a, mat_of(b, op, "b"), trans_b, mat_of(c, op, "c"),
                alpha, beta, nullptr, DType::F32, op);
}

namespace {

// The bias of a projection with n outputs (checked), or null when there is none.
const void* bias_data(const Tensor& bias, int64_t n, const char* op) {
  if (!bias.defined()) return nullptr;
  require_cuda(bias, op, "bias");
  require_float(bias, op, "bias");
  HLM_REQUIRE(bias.is_contiguous() && bias.numel() == n, ErrorKind::Internal,
              "{}: bias {} must be contiguous with {} entries", op, bias.describe(), n);
  return bias.data;
}

}  // namespace

void linear_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y) {
  const char* op = "linear_forward";
  Mat X = mat_of(x, op, "x"), W = mat_of(w, op, "w"), Y = mat_of(y, op, "y");
  HLM_REQUIRE(w.ndim == 2, ErrorKind::Internal, "{}: w {} must be [N,K]", op, w.describe());
  const void* bias_ptr = bias_data(bias, W.rows, op);
  gemm_rowmajor(X, false, W, true, Y, 1.0f, 0.0f, bias_ptr, bias.defined() ? bias.dtype : DType::F32, op,
                nullptr, /*b_weight=*/true);
}

void linear_act_forward(const Tensor& x, const Tensor& w, const Tensor& bias, Activation act, const Tensor& y) {
  const char* op = "linear_act_forward";
  HLM_REQUIRE(act != Activation::SwiGlu, ErrorKind::Internal, "{}: SwiGlu is not elementwise", op);
  Mat X = mat_of(x, op, "x"), W = mat_of(w, op, "w"), Y = mat_of(y, op, "y");
  HLM_REQUIRE(w.ndim == 2 && X.cols == W.cols && Y.rows == X.rows && Y.cols == W.rows, ErrorKind::Internal,
              "{}: x {} w {} y {} do not fit", op, x.describe(), w.describe(), y.describe());
  const GemmMode mode = gemm_mode();
  if ((mode == GemmMode::Auto || mode == GemmMode::Gemv) && gemv_epilogue_act_applies(X, W, Y)) {
    // One row (decode): the activation in the streaming GEMV's epilogue, one launch fewer.
    gemv(X, W, Y, 1.0f, 0.0f, bias_data(bias, W.rows, op), bias.defined() ? bias.dtype : DType::F32,
         /*w_is_weight=*/true, static_cast<int>(act));
    return;
  }
  cuda::linear_forward(x, w, bias, y);
  cuda::activation_forward(act, y, y);
}

void linear_residual_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& residual,
                             const Tensor& y) {
  const char* op = "linear_residual_forward";
  Mat X = mat_of(x, op, "x"), W = mat_of(w, op, "w"), Y = mat_of(y, op, "y"), R = mat_of(residual, op, "residual");
  HLM_REQUIRE(w.ndim == 2, ErrorKind::Internal, "{}: w {} must be [N,K]", op, w.describe());
  HLM_REQUIRE(R.rows == Y.rows && R.cols == Y.cols, ErrorKind::Internal, "{}: residual {} must match y {}", op,
              residual.describe(), y.describe());
  const void* bias_ptr = bias_data(bias, W.rows, op);
  const void* c_in = R.data;
  if (R.data == Y.data) {  // in place: the residual stream is the output
    HLM_REQUIRE(R.ld == Y.ld && R.dtype == Y.dtype, ErrorKind::Internal, "{}: residual {} and y {} overlap differently",
                op, residual.describe(), y.describe());
  } else if (R.ld != Y.ld || R.dtype != Y.dtype) {  // another layout: into y first, then in place
    copy_tensor(y, residual);
    c_in = Y.data;
  }
  gemm_rowmajor(X, false, W, true, Y, 1.0f, 1.0f, bias_ptr, bias.defined() ? bias.dtype : DType::F32, op, c_in,
                /*b_weight=*/true);
}

void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& dx,
                     const Tensor& dw, const Tensor& dbias, bool accumulate_dx) {
  const char* op = "linear_backward";
  Mat DY = mat_of(dy, op, "dy");
  if (dx.defined()) {
    gemm_rowmajor(DY, false, mat_of(w, op, "w"), false, mat_of(dx, op, "dx"), 1.0f,
                  accumulate_dx ? 1.0f : 0.0f, nullptr, DType::F32, op);
  }
  if (dw.defined()) {
    gemm_rowmajor(DY, true, mat_of(x, op, "x"), false, mat_of(dw, op, "dw"), 1.0f, 1.0f, nullptr,
                  DType::F32, op);
  }
  if (dbias.defined()) bias_grad_accumulate(DY, dbias, op);
}

}  // namespace hlm::cuda
