// cuDNN fused flash attention through the backend (graph) API: the operation graph cuDNN's
// runtime-fusion engines recognise as scaled dot-product attention (matmul → scale → masks →
// softmax with stats → matmul, and its backward), built from backend descriptors, with execution
// plans cached per shape and layout.
//
// Document masking: packed documents become cuDNN's variable-length (THD, "ragged") sequences.
// The host reads the [B,T] doc ids once per call (one stream synchronisation), turns every run of
// equal ids into one sequence (its start as ragged element offsets into q/k/v/o, its length as
// seq_len_q = seq_len_kv), and the padding mask + top-left causal mask then apply per sequence.
// The number of sequences and the longest one are rounded up to powers of two (empty sequences
// pad the rest) so that a handful of plans serve every batch.
//
// The deterministic backward's dP workspace grows as B·Hq·T²: past the caller's limit it runs as
// several calls on views of the tensors — batch rows, KV-head groups, or query sub-groups of one
// KV head whose dK/dV partials are summed in a fixed order (choose_split).
#include "ops/cuda/attention_cudnn.cuh"

#include <algorithm>
#include <array>
#include <limits>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

#include "ops/cuda/common.cuh"
#include "ops/cuda/handles.cuh"
#include "ops/elementwise.h"

namespace hlm::cuda::cudnn_attention {

namespace {

// A failure while building a graph or plan: the case is not supported (fall back), as opposed to
// an execution failure (an error).
struct BuildFailure {
  std::string what;
};

[[noreturn]] void build_fail(const char* what, cudnnStatus_t st) {
  char detail[256] = {0};
  cudnnGetLastErrorString(detail, sizeof(detail));
  throw BuildFailure{fmt::format("{}: {}{}{}", what, cudnnGetErrorString(st), detail[0] ? ": " : "",
                                 detail)};
}

using Dims = std::array<int64_t, 4>;

// Tensor uids of the graphs' non-virtual tensors (virtual ones are numbered from kVirtualBase).
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV, kScale, kNegInf, kOne, kSeqQ, kSeqKV,
  kOffQ, kOffK, kOffV, kOffO, kOffStats, kOffDO, kOffDQ, kOffDK, kOffDV, kSoftmaxSum, kDQAccum,
  kVirtualBase = 1000
};

// All descriptors of one graph and its execution plan, destroyed together.
class Graph {
 public:
  Graph() = default;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  ~Graph() {
    for (auto it = owned_.rbegin(); it != owned_.rend(); ++it) cudnnBackendDestroyDescriptor(*it);
  }

  cudnnBackendDescriptor_t create(cudnnBackendDescriptorType_t type, const char* what) {
    cudnnBackendDescriptor_t d = nullptr;
    cudnnStatus_t st = cudnnBackendCreateDescriptor(type, &d);
    if (st != CUDNN_STATUS_SUCCESS) build_fail(what, st);
    owned_.push_back(d);
    return d;
  }
  void set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
           cudnnBackendAttributeType_t type, int64_t count, const void* values, const char* what) {
    cudnnStatus_t st = cudnnBackendSetAttribute(d, name, type, count, values);
    if (st != CUDNN_STATUS_SUCCESS) build_fail(what, st);
  }
  void link(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
            cudnnBackendDescriptor_t value, const char* what) {
    set(d, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &value, what);
  }
  void finalize(cudnnBackendDescriptor_t d, const char* what) {
    cudnnStatus_t st = cudnnBackendFinalize(d);
    if (st != CUDNN_STATUS_SUCCESS) build_fail(what, st);
  }

  // A finalized 4-D tensor descriptor.
  cudnnBackendDescriptor_t tensor(int64_t uid, cudnnDataType_t dtype, Dims dims, Dims strides,
                                  bool is_virtual, bool by_value = false,
                                  cudnnBackendDescriptor_t ragged = nullptr) {
    cudnnBackendDescriptor_t d = create(CUDNN_BACKEND_TENSOR_DESCRIPTOR, "tensor descriptor");
    const int64_t alignment = 16;
    set(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor uid");
    set(d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dtype, "tensor data type");
    set(d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data(), "tensor dims");
    set(d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data(), "tensor strides");
    set(d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment, "tensor alignment");
    set(d, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual, "tensor is_virtual");
    if (by_value) set(d, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value, "tensor by_value");
    if (ragged) link(d, CUDNN_ATTR_TENSOR_RAGGED_OFFSET_DESC, ragged, "tensor ragged offset");
    finalize(d, fmt::format("tensor {}", uid).c_str());
    return d;
  }
  // A virtual intermediate (uids numbered automatically).
  cudnnBackendDescriptor_t virt(cudnnDataType_t dtype, Dims dims, Dims strides) {
    return tensor(next_virtual_++, dtype, dims, strides, true);
  }
  cudnnBackendDescriptor_t virt_ragged(cudnnDataType_t dtype, Dims dims, Dims strides,
                                       cudnnBackendDescriptor_t ragged) {
    return tensor(next_virtual_++, dtype, dims, strides, true, false, ragged);
  }
  cudnnBackendDescriptor_t scalar(int64_t uid, cudnnDataType_t dtype) {
    return tensor(uid, dtype, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true);
  }
  // [n, 1, 1, 1] INT32 device tensor (sequence lengths, ragged offsets).
  cudnnBackendDescriptor_t index_vector(int64_t uid, int64_t n) {
    return tensor(uid, CUDNN_DATA_INT32, {n, 1, 1, 1}, {1, 1, 1, 1}, false);
  }

  // y = op(x [, b [, t]]). prec: the pointwise math precision; axis only for GEN_INDEX.
  void pointwise(cudnnPointwiseMode_t mode, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b,
                 cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y, cudnnDataType_t prec,
                 int64_t axis = -1) {
    cudnnBackendDescriptor_t pw = create(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, "pointwise descriptor");
    set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise mode");
    set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec, "pointwise precision");
    if (mode == CUDNN_POINTWISE_GEN_INDEX)
      set(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, "pointwise axis");
    finalize(pw, "pointwise descriptor");
    cudnnBackendDescriptor_t op = create(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, "pointwise op");
    link(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw, "pointwise op descriptor");
    link(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x, "pointwise x");
    if (b) link(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b, "pointwise b");
    if (t) link(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t, "pointwise t");
    link(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y, "pointwise y");
    finalize(op, fmt::format("pointwise op (mode {})", static_cast<int>(mode)).c_str());
    ops_.push_back(op);
  }
  void matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c,
              cudnnBackendDescriptor_t m_override = nullptr,
              cudnnBackendDescriptor_t n_override = nullptr,
              cudnnBackendDescriptor_t k_override = nullptr) {
    cudnnBackendDescriptor_t mm = create(CUDNN_BACKEND_MATMUL_DESCRIPTOR, "matmul descriptor");
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    set(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "matmul compute type");
    finalize(mm, "matmul descriptor");
    cudnnBackendDescriptor_t op = create(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, "matmul op");
    link(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, a, "matmul a");
    link(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, b, "matmul b");
    link(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, c, "matmul c");
    link(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, mm, "matmul desc");
    if (m_override) link(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_M_OVERRIDE_DESC, m_override, "matmul M override");
    if (n_override) link(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_N_OVERRIDE_DESC, n_override, "matmul N override");
    if (k_override) link(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_K_OVERRIDE_DESC, k_override, "matmul K override");
    finalize(op, "matmul op");
    ops_.push_back(op);
  }
  void reduction(cudnnReduceTensorOp_t mode, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t rd = create(CUDNN_BACKEND_REDUCTION_DESCRIPTOR, "reduction descriptor");
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    set(rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode, "reduction operator");
    set(rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "reduction compute type");
    finalize(rd, "reduction descriptor");
    cudnnBackendDescriptor_t op = create(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, "reduction op");
    link(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x, "reduction x");
    link(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y, "reduction y");
    link(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, rd, "reduction desc");
    finalize(op, "reduction op");
    ops_.push_back(op);
  }
  void reshape(cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t op = create(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, "reshape op");
    link(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x, "reshape x");
    link(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y, "reshape y");
    finalize(op, "reshape op");
    ops_.push_back(op);
  }

  // Operation graph → heuristics (mode A, then the fallback list) → the first engine config that
  // finalizes into an execution plan.
  void build_plan(cudnnHandle_t handle) {
    cudnnBackendDescriptor_t graph = create(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "operation graph");
    set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
        static_cast<int64_t>(ops_.size()), ops_.data(), "graph ops");
    // The handle attributes are deprecated in cuDNN 9 but still read: set them, ignore refusals.
    (void)cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    finalize(graph, "operation graph");
    std::string tried;
    for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
      cudnnBackendDescriptor_t heur = create(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "heuristics");
      link(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph, "heuristics graph");
      set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heuristics mode");
      if (cudnnStatus_t st = cudnnBackendFinalize(heur); st != CUDNN_STATUS_SUCCESS) {
        char detail[256] = {0};
        cudnnGetLastErrorString(detail, sizeof(detail));
        tried += fmt::format("{}heuristics mode {}: {} {}", tried.empty() ? "" : "; ",
                             static_cast<int>(mode), cudnnGetErrorString(st), detail);
        continue;
      }
      int64_t count = 0;
      if (cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                   0, &count, nullptr) != CUDNN_STATUS_SUCCESS || count <= 0)
        continue;
      std::vector<cudnnBackendDescriptor_t> cfgs(static_cast<size_t>(count));
      for (auto& c : cfgs) c = create(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine config");
      int64_t got = 0;
      if (cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                   count, &got, cfgs.data()) != CUDNN_STATUS_SUCCESS)
        continue;
      for (int64_t i = 0; i < got; ++i) {
        cudnnBackendDescriptor_t plan = create(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, "execution plan");
        (void)cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
        link(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, cfgs[static_cast<size_t>(i)], "plan engine config");
        cudnnStatus_t st = cudnnBackendFinalize(plan);
        if (st == CUDNN_STATUS_SUCCESS) {
          int64_t ws = 0, n = 0;
          if (cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64,
                                       1, &n, &ws) != CUDNN_STATUS_SUCCESS)
            continue;
          plan_ = plan;
          workspace_ = static_cast<size_t>(ws);
          return;
        }
        char detail[256] = {0};
        cudnnGetLastErrorString(detail, sizeof(detail));
        if (tried.size() < 600)
          tried += fmt::format("{}plan: {} {}", tried.empty() ? "" : "; ", cudnnGetErrorString(st), detail);
      }
    }
    throw BuildFailure{fmt::format("no engine finalizes for this graph ({} ops){}{}", ops_.size(),
                                   tried.empty() ? "" : ": ", tried)};
  }

  cudnnBackendDescriptor_t plan() const { return plan_; }
  size_t workspace() const { return workspace_; }

 private:
  std::vector<cudnnBackendDescriptor_t> owned_;
  std::vector<cudnnBackendDescriptor_t> ops_;
  int64_t next_virtual_ = kVirtualBase;
  cudnnBackendDescriptor_t plan_ = nullptr;
  size_t workspace_ = 0;
};

// ---- shapes, layouts and cache keys ----------------------------------------------------------

// The sequences cuDNN sees: dense rows (b = B, s = T) or packed documents (b = N, s = S).
struct Layout {
  bool ragged = false;  // packed documents: ragged offsets (implies padded)
  bool padded = false;  // per-sequence lengths + padding mask
  int64_t b = 0, s = 0;
  int64_t Hq = 0, Hkv = 0, E = 0;
  // token strides of q, k, v, o, dO, dQ, dK, dV (elements)
  int64_t ldq = 0, ldk = 0, ldv = 0, ldo = 0, lddo = 0, lddq = 0, lddk = 0, lddv = 0;
  int64_t T = 0, B = 0;
  bool operator<(const Layout& o) const {
    return std::tie(ragged, padded, b, s, Hq, Hkv, E, ldq, ldk, ldv, ldo, lddo, lddq, lddk, lddv, T, B) <
           std::tie(o.ragged, o.padded, o.b, o.s, o.Hq, o.Hkv, o.E, o.ldq, o.ldk, o.ldv, o.ldo,
                    o.lddo, o.lddq, o.lddk, o.lddv, o.T, o.B);
  }
};

struct PlanKey {
  int kind;  // 0 forward, 1 backward with dQ atomics, 2 deterministic backward
  Layout L;
  bool operator<(const PlanKey& o) const { return std::tie(kind, L) < std::tie(o.kind, o.L); }
};

struct Plan {
  std::unique_ptr<Graph> graph;
  std::string error;  // set when building failed: remembered, not retried
};

std::mutex g_plan_mutex;
// The first failure to build a ragged (document-masked) plan, per kind: later calls with documents
// fall back at once instead of reading the doc ids to the host first.
std::string g_ragged_failure[3];

std::map<PlanKey, std::unique_ptr<Plan>>& plan_cache() {
  static auto* cache = new std::map<PlanKey, std::unique_ptr<Plan>>();
  return *cache;
}

// [b, H, s, E] with token stride ld (d contiguous, heads E apart, tokens ld apart).
Dims bhsd_dims(const Layout& L, int64_t H) { return {L.b, H, L.s, L.E}; }
Dims bhsd_strides(const Layout& L, int64_t ld) { return {L.s * ld, L.E, ld, 1}; }
// Kᵀ / Vᵀ views: [b, H, E, s].
Dims bhds_dims(const Layout& L, int64_t H) { return {L.b, H, L.E, L.s}; }
Dims bhds_strides(const Layout& L, int64_t ld) { return {L.s * ld, L.E, 1, ld}; }
// Stats and softmax sums: dense [B, Hq, T] (BHS1) or token-major [tokens, Hq] (ragged).
Dims stats_dims(const Layout& L) { return {L.b, L.Hq, L.s, 1}; }
Dims stats_strides(const Layout& L) {
  return L.ragged ? Dims{L.s * L.Hq, 1, L.Hq, 1} : Dims{L.Hq * L.s, L.s, 1, 1};
}
Dims score_dims(const Layout& L) { return {L.b, L.Hq, L.s, L.s}; }
Dims score_strides(const Layout& L) { return {L.Hq * L.s * L.s, L.s * L.s, L.s, 1}; }

// The masks on a score tensor: the padding mask of variable-length sequences (ragged only), then
// the top-left causal mask (row ≥ column), both as -inf through BINARY_SELECT.
cudnnBackendDescriptor_t apply_masks(Graph& g, const Layout& L, cudnnBackendDescriptor_t s,
                                     cudnnBackendDescriptor_t neg_inf, cudnnBackendDescriptor_t seq_q,
                                     cudnnBackendDescriptor_t seq_kv) {
  const Dims sd = score_dims(L), ss = score_strides(L);
  if (L.padded) {
    auto row = g.virt(CUDNN_DATA_INT32, sd, ss);
    g.pointwise(CUDNN_POINTWISE_GEN_INDEX, s, nullptr, nullptr, row, CUDNN_DATA_INT32, 2);
    auto col = g.virt(CUDNN_DATA_INT32, sd, ss);
    g.pointwise(CUDNN_POINTWISE_GEN_INDEX, s, nullptr, nullptr, col, CUDNN_DATA_INT32, 3);
    auto row_ok = g.virt(CUDNN_DATA_BOOLEAN, sd, ss);
    g.pointwise(CUDNN_POINTWISE_CMP_LT, row, seq_q, nullptr, row_ok, CUDNN_DATA_BOOLEAN);
    auto col_ok = g.virt(CUDNN_DATA_BOOLEAN, sd, ss);
    g.pointwise(CUDNN_POINTWISE_CMP_LT, col, seq_kv, nullptr, col_ok, CUDNN_DATA_BOOLEAN);
    auto both = g.virt(CUDNN_DATA_BOOLEAN, sd, ss);
    g.pointwise(CUDNN_POINTWISE_LOGICAL_AND, row_ok, col_ok, nullptr, both, CUDNN_DATA_BOOLEAN);
    auto padded = g.virt(CUDNN_DATA_FLOAT, sd, ss);
    g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, s, neg_inf, both, padded, CUDNN_DATA_FLOAT);
    s = padded;
  }
  auto row = g.virt(CUDNN_DATA_INT32, sd, ss);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, s, nullptr, nullptr, row, CUDNN_DATA_FLOAT, 2);
  auto col = g.virt(CUDNN_DATA_INT32, sd, ss);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, s, nullptr, nullptr, col, CUDNN_DATA_FLOAT, 3);
  auto causal = g.virt(CUDNN_DATA_BOOLEAN, sd, ss);
  g.pointwise(CUDNN_POINTWISE_CMP_GE, row, col, nullptr, causal, CUDNN_DATA_BOOLEAN);
  auto masked = g.virt(CUDNN_DATA_FLOAT, sd, ss);
  g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, s, neg_inf, causal, masked, CUDNN_DATA_FLOAT);
  return masked;
}

// Forward: S = Q·Kᵀ; S·scale; masks; softmax (max, sub, exp, sum, log, stats = max + log, div);
// O = P·V. Mirrors the graph cudnn-frontend's SDPA node lowers to for cuDNN < 9.21.
std::unique_ptr<Graph> build_forward(const Layout& L, cudnnHandle_t handle) {
  auto g = std::make_unique<Graph>();
  const cudnnDataType_t io = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
  cudnnBackendDescriptor_t off_q = nullptr, off_k = nullptr, off_v = nullptr, off_o = nullptr,
                           off_s = nullptr, seq_q = nullptr, seq_kv = nullptr;
  if (L.ragged) {
    off_q = g->index_vector(kOffQ, L.b + 1);
    off_k = g->index_vector(kOffK, L.b + 1);
    off_v = g->index_vector(kOffV, L.b + 1);
    off_o = g->index_vector(kOffO, L.b + 1);
    off_s = g->index_vector(kOffStats, L.b + 1);
  }
  if (L.padded) {
    seq_q = g->index_vector(kSeqQ, L.b);
    seq_kv = g->index_vector(kSeqKV, L.b);
  }
  auto q = g->tensor(kQ, io, bhsd_dims(L, L.Hq), bhsd_strides(L, L.ldq), false, false, off_q);
  auto kt = g->tensor(kK, io, bhds_dims(L, L.Hkv), bhds_strides(L, L.ldk), false, false, off_k);
  auto v = g->tensor(kV, io, bhsd_dims(L, L.Hkv), bhsd_strides(L, L.ldv), false, false, off_v);
  auto o = g->tensor(kO, io, bhsd_dims(L, L.Hq), bhsd_strides(L, L.ldo), false, false, off_o);
  auto stats = g->tensor(kStats, f32, stats_dims(L), stats_strides(L), false, false, off_s);
  auto scale = g->scalar(kScale, f32);
  auto neg_inf = g->scalar(kNegInf, f32);

  const Dims sd = score_dims(L), ss = score_strides(L);
  const Dims rd = stats_dims(L), rs = {L.Hq * L.s, L.s, 1, 1};
  auto s = g->virt(f32, sd, ss);
  g->matmul(q, kt, s, seq_q, seq_kv);
  auto scaled = g->virt(f32, sd, ss);
  g->pointwise(CUDNN_POINTWISE_MUL, s, scale, nullptr, scaled, f32);
  auto masked = apply_masks(*g, L, scaled, neg_inf, seq_q, seq_kv);
  auto mx = g->virt(f32, rd, rs);
  g->reduction(CUDNN_REDUCE_TENSOR_MAX, masked, mx);
  auto sub = g->virt(f32, sd, ss);
  g->pointwise(CUDNN_POINTWISE_SUB, masked, mx, nullptr, sub, f32);
  auto ex = g->virt(f32, sd, ss);
  g->pointwise(CUDNN_POINTWISE_EXP, sub, nullptr, nullptr, ex, f32);
  auto sum = g->virt(f32, rd, rs);
  g->reduction(CUDNN_REDUCE_TENSOR_ADD, ex, sum);
  auto lg = g->virt(f32, rd, rs);
  g->pointwise(CUDNN_POINTWISE_LOG, sum, nullptr, nullptr, lg, f32);
  g->pointwise(CUDNN_POINTWISE_ADD, mx, lg, nullptr, stats, f32);
  auto p = g->virt(io, sd, ss);
  g->pointwise(CUDNN_POINTWISE_DIV, ex, sum, nullptr, p, f32);
  g->matmul(p, v, o, seq_q, nullptr, seq_kv);
  g->build_plan(handle);
  return g;
}

// Backward (FA2 form): softmax_sum = Σ dO∘O; P = exp(masked(scale·QKᵀ) − stats); dV = Pᵀ dO;
// dS = P ∘ (dO Vᵀ − softmax_sum) · scale; dK = dSᵀ Q; dQ = dS K — into an fp32 accumulator
// (atomics) or, deterministic, straight into dQ from cuDNN's dP workspace.
std::unique_ptr<Graph> build_backward(const Layout& L, bool deterministic, cudnnHandle_t handle) {
  auto g = std::make_unique<Graph>();
  const cudnnDataType_t io = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
  cudnnBackendDescriptor_t off_q = nullptr, off_k = nullptr, off_v = nullptr, off_o = nullptr,
                           off_s = nullptr, off_do = nullptr, off_dq = nullptr, off_dk = nullptr,
                           off_dv = nullptr, seq_q = nullptr, seq_kv = nullptr;
  if (L.ragged) {
    off_q = g->index_vector(kOffQ, L.b + 1);
    off_k = g->index_vector(kOffK, L.b + 1);
    off_v = g->index_vector(kOffV, L.b + 1);
    off_o = g->index_vector(kOffO, L.b + 1);
    off_s = g->index_vector(kOffStats, L.b + 1);
    off_do = g->index_vector(kOffDO, L.b + 1);
    off_dq = g->index_vector(kOffDQ, L.b + 1);
    off_dk = g->index_vector(kOffDK, L.b + 1);
    off_dv = g->index_vector(kOffDV, L.b + 1);
  }
  if (L.padded) {
    seq_q = g->index_vector(kSeqQ, L.b);
    seq_kv = g->index_vector(kSeqKV, L.b);
  }
  auto q = g->tensor(kQ, io, bhsd_dims(L, L.Hq), bhsd_strides(L, L.ldq), false, false, off_q);
  auto kt = g->tensor(kK, io, bhds_dims(L, L.Hkv), bhds_strides(L, L.ldk), false, false, off_k);
  auto vt = g->tensor(kV, io, bhds_dims(L, L.Hkv), bhds_strides(L, L.ldv), false, false, off_v);
  auto o = g->tensor(kO, io, bhsd_dims(L, L.Hq), bhsd_strides(L, L.ldo), false, false, off_o);
  auto dO = g->tensor(kDO, io, bhsd_dims(L, L.Hq), bhsd_strides(L, L.lddo), false, false, off_do);
  auto stats = g->tensor(kStats, f32, stats_dims(L), stats_strides(L), false, false, off_s);
  auto dQ = g->tensor(kDQ, io, bhsd_dims(L, L.Hq), bhsd_strides(L, L.lddq), false, false, off_dq);
  auto dK = g->tensor(kDK, io, bhsd_dims(L, L.Hkv), bhsd_strides(L, L.lddk), false, false, off_dk);
  auto dV = g->tensor(kDV, io, bhsd_dims(L, L.Hkv), bhsd_strides(L, L.lddv), false, false, off_dv);
  auto scale = g->scalar(kScale, f32);
  auto neg_inf = g->scalar(kNegInf, f32);
  auto one = g->scalar(kOne, f32);

  const Dims sd = score_dims(L), ss = score_strides(L);
  const Dims rd = stats_dims(L), rs = {L.Hq * L.s, L.s, 1, 1};
  const Dims st_dims = {L.b, L.Hq, L.s, L.s}, st_strides = {L.Hq * L.s * L.s, L.s * L.s, 1, L.s};

  // softmax_sum = Σ_d dO ∘ O (kept in memory: cuDNN reads it per key tile).
  auto dOo = g->virt(f32, {L.b, L.Hq, L.s, L.E}, {L.Hq * L.s * L.E, L.s * L.E, L.Hq * L.E, 1});
  g->pointwise(CUDNN_POINTWISE_MUL, dO, o, nullptr, dOo, f32);
  auto red = g->virt(f32, rd, rs);
  g->reduction(CUDNN_REDUCE_TENSOR_ADD, dOo, red);
  auto softmax_sum = g->tensor(kSoftmaxSum, f32, stats_dims(L), stats_strides(L), false, false, off_s);
  g->pointwise(CUDNN_POINTWISE_MUL, red, one, nullptr, softmax_sum, f32);

  // P = exp(mask(scale · Q Kᵀ) − stats)
  auto s = g->virt(f32, sd, ss);
  g->matmul(q, kt, s, seq_q, seq_kv);
  auto scaled = g->virt(f32, sd, ss);
  g->pointwise(CUDNN_POINTWISE_MUL, s, scale, nullptr, scaled, f32);
  auto shifted = g->virt(f32, sd, ss);
  g->pointwise(CUDNN_POINTWISE_SUB, scaled, stats, nullptr, shifted, f32);
  auto masked = apply_masks(*g, L, shifted, neg_inf, seq_q, seq_kv);
  auto p = g->virt(f32, sd, ss);
  g->pointwise(CUDNN_POINTWISE_EXP, masked, nullptr, nullptr, p, f32);

  // dV = Pᵀ dO (summed over the query heads of a group for GQA)
  auto pt = g->virt(io, st_dims, st_strides);
  g->reshape(p, pt);
  if (L.Hq == L.Hkv) {
    g->matmul(pt, dO, dV, seq_kv, nullptr, seq_q);
  } else {
    auto dv_full = g->virt(io, {L.b, L.Hq, L.s, L.E}, {L.Hq * L.s * L.E, L.s * L.E, L.E, 1});
    g->matmul(pt, dO, dv_full, seq_kv, nullptr, seq_q);
    g->reduction(CUDNN_REDUCE_TENSOR_ADD, dv_full, dV);
  }

  // dS = P ∘ (dO Vᵀ − softmax_sum) · scale
  auto dp = g->virt(f32, sd, ss);
  g->matmul(dO, vt, dp, seq_q, seq_kv);
  auto dp_sub = g->virt(f32, sd, ss);
  g->pointwise(CUDNN_POINTWISE_SUB, dp, softmax_sum, nullptr, dp_sub, f32);
  auto dp_p = g->virt(f32, sd, ss);
  g->pointwise(CUDNN_POINTWISE_MUL, dp_sub, p, nullptr, dp_p, f32);
  auto ds = g->virt(f32, sd, ss);
  g->pointwise(CUDNN_POINTWISE_MUL, dp_p, scale, nullptr, ds, f32);

  // dK = dSᵀ Q
  auto dst = g->virt(io, st_dims, st_strides);
  g->reshape(ds, dst);
  if (L.Hq == L.Hkv) {
    g->matmul(dst, q, dK, seq_kv, nullptr, seq_q);
  } else {
    auto dk_full = g->virt(io, {L.b, L.Hq, L.s, L.E}, {L.Hq * L.s * L.E, L.s * L.E, L.E, 1});
    g->matmul(dst, q, dk_full, seq_kv, nullptr, seq_q);
    g->reduction(CUDNN_REDUCE_TENSOR_ADD, dk_full, dK);
  }

  // dQ = dS K, K read back through a reshape of the Kᵀ view.
  auto k = g->virt_ragged(io, bhsd_dims(L, L.Hkv), bhsd_strides(L, L.ldk), off_k);
  g->reshape(kt, k);
  if (deterministic) {
    g->matmul(ds, k, dQ, seq_q, nullptr, seq_kv);
  } else {
    const Dims acc_strides = L.ragged ? bhsd_strides(L, L.lddq)
                                      : Dims{L.Hq * L.s * L.E, L.s * L.E, L.E, 1};
    auto dq_accum = g->tensor(kDQAccum, f32, bhsd_dims(L, L.Hq), acc_strides, false, false, off_dq);
    g->matmul(ds, k, dq_accum, seq_q, nullptr, seq_kv);
    g->pointwise(CUDNN_POINTWISE_IDENTITY, dq_accum, nullptr, nullptr, dQ, f32);
  }
  g->build_plan(handle);
  return g;
}

// ---- documents → variable-length sequences -----------------------------------------------------

struct Segments {
  int64_t n = 0, max_len = 0;
  std::vector<int64_t> start;  // global token index b·T + t0 of each sequence
  std::vector<int32_t> len;
};

// Reads the doc ids to the host (one stream synchronisation) and splits every row into runs.
Segments segments_from_doc(const Tensor& doc, int64_t B, int64_t T) {
  const size_t bytes = static_cast<size_t>(B * T) * sizeof(int32_t);
  auto* host = static_cast<int32_t*>(pinned_host(0, bytes));
  HLM_CUDA_CHECK(cudaMemcpyAsync(host, doc.data, bytes, cudaMemcpyDeviceToHost, stream()));
  HLM_CUDA_CHECK(cudaStreamSynchronize(stream()));
  Segments s;
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* d = host + b * T;
    int64_t t0 = 0;
    for (int64_t t = 1; t <= T; ++t) {
      if (t == T || d[t] != d[t - 1]) {
        s.start.push_back(b * T + t0);
        s.len.push_back(static_cast<int32_t>(t - t0));
        s.max_len = std::max(s.max_len, t - t0);
        t0 = t;
      }
    }
  }
  s.n = static_cast<int64_t>(s.start.size());
  return s;
}

int64_t next_pow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

// Device copies of the sequence lengths and the ragged offsets of each tensor (element units).
struct RaggedArrays {
  int32_t* seq = nullptr;
  std::map<int64_t, int32_t*> offsets;  // uid → device array of b + 1 entries
};

RaggedArrays upload_ragged(const Segments& sg, const Layout& L,
                           const std::vector<std::pair<int64_t, int64_t>>& uid_ld) {
  const int64_t n_arr = static_cast<int64_t>(uid_ld.size());
  const int64_t seq_words = (L.b + 3) / 4 * 4, off_words = (L.b + 1 + 3) / 4 * 4;
  const int64_t words = seq_words + n_arr * off_words;
  auto* host = static_cast<int32_t*>(pinned_host(1, static_cast<size_t>(words) * sizeof(int32_t)));
  auto* dev = scratch_as<int32_t>(Scratch::Misc, static_cast<size_t>(words));
  const int64_t tokens = L.B * L.T;
  for (int64_t i = 0; i < L.b; ++i) host[i] = i < sg.n ? sg.len[static_cast<size_t>(i)] : 0;
  RaggedArrays r;
  r.seq = dev;
  for (int64_t a = 0; a < n_arr; ++a) {
    int32_t* h = host + seq_words + a * off_words;
    const int64_t ld = uid_ld[static_cast<size_t>(a)].second;
    for (int64_t i = 0; i <= L.b; ++i)
      h[i] = static_cast<int32_t>((i < sg.n ? sg.start[static_cast<size_t>(i)] : tokens) * ld);
    r.offsets[uid_ld[static_cast<size_t>(a)].first] = dev + seq_words + a * off_words;
  }
  // The pinned buffer is rewritten only after the next call's synchronisation: safe to go async.
  HLM_CUDA_CHECK(cudaMemcpyAsync(dev, host, static_cast<size_t>(words) * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, stream()));
  return r;
}

// lse [B, Hq, T] ⇄ token-major stats [B·T, Hq] (the ragged Stats layout); the backward reads the
// heads [h0, h0 + hq) of lse into token-major [B·T, hq].
__global__ void stats_to_lse_kernel(const float* th, float* lse, int64_t BT, int64_t T, int64_t Hq) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= BT * Hq) return;
  const int64_t tok = i / Hq, h = i % Hq, b = tok / T, t = tok % T;
  lse[(b * Hq + h) * T + t] = th[i];
}
__global__ void lse_to_stats_kernel(const float* lse, float* th, int64_t BT, int64_t T, int64_t Hq,
                                    int64_t h0, int64_t hq) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= BT * hq) return;
  const int64_t tok = i / hq, h = h0 + i % hq, b = tok / T, t = tok % T;
  th[i] = lse[(b * Hq + h) * T + t];
}

// dK or dV of one KV head from the partials of its query-head sub-groups: parts holds n partials
// of [rows, E] one after another, summed in fp32 in sub-group order (fixed: deterministic) and
// rounded once into out (rows ld apart).
__global__ void sum_partials_kernel(const __nv_bfloat16* parts, int64_t n, int64_t rows, int64_t E,
                                    __nv_bfloat16* out, int64_t ld) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * E) return;
  float acc = 0.0f;
  for (int64_t j = 0; j < n; ++j) acc += __bfloat162float(parts[j * rows * E + i]);
  out[i / E * ld + i % E] = __float2bfloat16_rn(acc);
}

// ---- splitting the deterministic backward ------------------------------------------------------

// The dP workspace of cuDNN's deterministic backward for b sequences of length s and hq query
// heads: dP for every (query, key) pair, the tile-rounded B·Hq·T²·2 bytes.
double det_workspace_bytes(int64_t b, int64_t hq, int64_t s) {
  return static_cast<double>(b) * static_cast<double>(hq) * static_cast<double>((s + 63) / 64 * 64) *
         static_cast<double>((s + 127) / 128 * 128) * 2.0;
}

int64_t largest_divisor_at_most(int64_t n, int64_t cap) {
  for (int64_t d = std::min(n, cap); d > 1; --d)
    if (n % d == 0) return d;
  return 1;
}

// The cuDNN calls one deterministic backward is cut into, so that each one's workspace fits the
// limit. KV head h with its G = Hq/Hkv query heads is an independent problem (its dK/dV come from
// those heads only; their dQ reads only K/V of head h), and so is every batch row. Every piece has
// the same shape, so one plan serves them all: `rows` batch rows × `kv_heads` KV heads with all
// their query heads — whole rows first, then ranges of KV heads within one row — or, where even
// one KV group does not fit, one KV head with `sub_heads` of its query heads (sub_heads > 0), whose
// dK/dV partials are summed afterwards. Packed documents (ragged) are split by heads only: the
// sequences of the whole batch stay in every call, as their offsets and lengths describe them.
struct Split {
  int64_t rows = 0, kv_heads = 0, sub_heads = 0;
};

// False when not even one query head (of one row, or of the whole packed batch) fits.
bool choose_split(const Layout& L, double limit, Split* sp) {
  const int64_t G = L.Hq / L.Hkv;
  const int64_t unit = L.ragged ? L.b : 1;  // the smallest number of rows a piece holds
  auto bytes = [&](int64_t rows, int64_t hq) { return det_workspace_bytes(rows, hq, L.s); };
  // Once the problem is split, pieces aim at 4 GiB of workspace (still ≥ G·T/128 query tiles of
  // work each: the GPU stays busy) rather than the limit: the grow-only workspace stays allocated,
  // and at T = 32K on the 1.43B model that is 4 GiB instead of 16 (measured: no slower).
  const double target = std::min(limit, 4.0 * 1073741824.0);
  auto fitting = [&](double piece) { return std::max<int64_t>(1, static_cast<int64_t>(target / piece)); };
  if (bytes(L.b, L.Hq) <= limit) {
    *sp = {L.b, L.Hkv, 0};
  } else if (!L.ragged && bytes(1, L.Hq) <= limit) {
    *sp = {largest_divisor_at_most(L.b, fitting(bytes(1, L.Hq))), L.Hkv, 0};
  } else if (bytes(unit, G) <= limit) {
    *sp = {unit, largest_divisor_at_most(L.Hkv, fitting(bytes(unit, G))), 0};
  } else {
    int64_t g = G - 1;
    while (g >= 1 && (G % g != 0 || bytes(unit, g) > limit)) --g;
    if (g < 1) return false;
    *sp = {unit, 1, g};
  }
  return true;
}

// ---- plans and execution -----------------------------------------------------------------------

// Fetches (building on first use) the plan for key; returns nullptr with *why when it cannot be
// built. Build failures are remembered so a failing shape costs one attempt only.
Graph* get_plan(const PlanKey& key, std::string* why) {
  std::lock_guard<std::mutex> lock(g_plan_mutex);
  auto& cache = plan_cache();
  auto it = cache.find(key);
  if (it == cache.end()) {
    auto plan = std::make_unique<Plan>();
    try {
      cudnnHandle_t h = cudnn_handle();
      plan->graph = key.kind == 0 ? build_forward(key.L, h) : build_backward(key.L, key.kind == 2, h);
    } catch (const BuildFailure& f) {
      plan->error = f.what;
    } catch (const Error& e) {
      plan->error = e.what();
    }
    it = cache.emplace(key, std::move(plan)).first;
  }
  if (!it->second->error.empty()) {
    *why = it->second->error;
    if (key.L.ragged && g_ragged_failure[key.kind].empty()) g_ragged_failure[key.kind] = *why;
    return nullptr;
  }
  return it->second->graph.get();
}

void execute(Graph* g, const std::vector<int64_t>& uids, const std::vector<void*>& ptrs) {
  void* ws = g->workspace() > 0 ? scratch(Scratch::CudnnWorkspace, g->workspace()) : nullptr;
  cudnnBackendDescriptor_t pack = nullptr;
  HLM_CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack));
  struct Guard {
    cudnnBackendDescriptor_t d;
    ~Guard() { cudnnBackendDestroyDescriptor(d); }
  } guard{pack};
  HLM_CUDNN_CHECK(cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64,
                                           static_cast<int64_t>(uids.size()), uids.data()));
  HLM_CUDNN_CHECK(cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
                                           CUDNN_TYPE_VOID_PTR, static_cast<int64_t>(ptrs.size()),
                                           ptrs.data()));
  HLM_CUDNN_CHECK(cudnnBackendSetAttribute(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR,
                                           1, &ws));
  HLM_CUDNN_CHECK(cudnnBackendFinalize(pack));
  HLM_CUDNN_CHECK(cudnnBackendExecute(cudnn_handle(), g->plan(), pack));
}

struct Common {
  Layout L;
  Segments sg;
  float neg_inf = -INFINITY;
};

// Checks what cuDNN needs and fills the layout; false with *why when cuDNN cannot take it.
bool prepare(const AttentionParams& p, const Tensor& out, Common* c, std::string* why) {
  const int64_t version = cudnn_runtime_version();
  if (version < 90000) {
    *why = fmt::format("cuDNN runtime {} is older than 9.0", version);
    return false;
  }
  c->neg_inf = version < 91000 ? -std::numeric_limits<float>::max() : -INFINITY;
  Layout& L = c->L;
  L.B = p.q.shape[0];
  L.T = p.q.shape[1];
  L.Hq = p.q.shape[2];
  L.Hkv = p.k.shape[2];
  L.E = p.q.shape[3];
  L.ldq = as_rows(p.q, 2, "q").ld;
  L.ldk = as_rows(p.k, 2, "k").ld;
  L.ldv = as_rows(p.v, 2, "v").ld;
  L.ldo = as_rows(out, 2, "out").ld;
  for (auto [ptr, ld] : {std::pair{p.q.data, L.ldq}, {p.k.data, L.ldk}, {p.v.data, L.ldv}, {out.data, L.ldo}}) {
    if (pointer_alignment(ptr) < 16 || ld % 8 != 0) {
      *why = "q/k/v/o rows are not 16-byte aligned";
      return false;
    }
  }
  if (L.B * L.T * std::max({L.ldq, L.ldk, L.ldv, L.ldo}) >= (int64_t{1} << 31)) {
    *why = "tensors exceed 2^31 elements (int32 offsets)";
    return false;
  }
  if (p.doc.defined()) {
    c->sg = segments_from_doc(p.doc, L.B, L.T);
    L.ragged = true;
    L.padded = true;
    L.b = next_pow2(std::max<int64_t>(c->sg.n, 1));
    L.s = std::min(next_pow2(std::max<int64_t>(c->sg.max_len, 64)), L.T);
  } else {
    L.b = L.B;
    L.s = L.T;
  }
  return true;
}

}  // namespace

// True (with *why) when documents are present and a ragged plan of this kind already failed.
bool ragged_known_broken(const AttentionParams& p, int kind, std::string* why) {
  if (!p.doc.defined()) return false;
  std::lock_guard<std::mutex> lock(g_plan_mutex);
  if (g_ragged_failure[kind].empty()) return false;
  *why = "document-masked (ragged) graph failed before: " + g_ragged_failure[kind];
  return true;
}

bool forward(const AttentionParams& p, const Tensor& out, const Tensor& lse, std::string* why) {
  if (ragged_known_broken(p, 0, why)) return false;
  Common c;
  if (!prepare(p, out, &c, why)) return false;
  const Layout& L = c.L;
  Graph* g = get_plan(PlanKey{0, L}, why);
  if (!g) return false;
  float scale = p.scale, neg_inf = c.neg_inf;
  float* stats = lse.ptr<float>();
  std::vector<int64_t> uids = {kQ, kK, kV, kO, kStats, kScale, kNegInf};
  std::vector<void*> ptrs = {p.q.data, p.k.data, p.v.data, out.data, nullptr, &scale, &neg_inf};
  if (L.ragged) {
    stats = scratch_as<float>(Scratch::Attn0, static_cast<size_t>(L.B * L.T * L.Hq));
    RaggedArrays r = upload_ragged(c.sg, L, {{kOffQ, L.ldq}, {kOffK, L.ldk}, {kOffV, L.ldv},
                                             {kOffO, L.ldo}, {kOffStats, L.Hq}});
    for (auto& [uid, ptr] : r.offsets) {
      uids.push_back(uid);
      ptrs.push_back(ptr);
    }
    uids.push_back(kSeqQ);
    ptrs.push_back(r.seq);
    uids.push_back(kSeqKV);
    ptrs.push_back(r.seq);
  }
  ptrs[4] = stats;
  execute(g, uids, ptrs);
  if (L.ragged) {
    const int64_t n = L.B * L.T * L.Hq;
    stats_to_lse_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(stats, lse.ptr<float>(), L.B * L.T, L.T, L.Hq);
    HLM_CUDA_CHECK_LAUNCH();
  }
  return true;
}

bool backward(const AttentionParams& p, const Tensor& out, const Tensor& lse, const Tensor& dout,
              const Tensor& dq, const Tensor& dk, const Tensor& dv, bool deterministic,
              size_t max_workspace, std::string* why) {
  if (ragged_known_broken(p, deterministic ? 2 : 1, why)) return false;
  Common c;
  if (!prepare(p, out, &c, why)) return false;
  Layout& L = c.L;
  L.lddo = as_rows(dout, 2, "dout").ld;
  L.lddq = as_rows(dq, 2, "dq").ld;
  L.lddk = as_rows(dk, 2, "dk").ld;
  L.lddv = as_rows(dv, 2, "dv").ld;
  for (auto [ptr, ld] : {std::pair{dout.data, L.lddo}, {dq.data, L.lddq}, {dk.data, L.lddk}, {dv.data, L.lddv}}) {
    if (pointer_alignment(ptr) < 16 || ld % 8 != 0) {
      *why = "dO/dQ/dK/dV rows are not 16-byte aligned";
      return false;
    }
  }
  if (L.B * L.T * std::max({L.lddo, L.lddq, L.lddk, L.lddv}) >= (int64_t{1} << 31)) {
    *why = "gradients exceed 2^31 elements (int32 offsets)";
    return false;
  }
  // cuDNN up to 9.15 needs an explicit padding mask in the backward when T is not a multiple of
  // 128 (what cudnn-frontend adds as its "workaround padding mask"): lengths T for every row.
  int32_t* full_lengths = nullptr;
  if (!L.ragged && L.T % 128 != 0 && cudnn_runtime_version() <= 91500) {
    L.padded = true;
    full_lengths = scratch_as<int32_t>(Scratch::Misc, static_cast<size_t>(L.B));
    Tensor lens(full_lengths, DType::I32, Device::CUDA, {L.B});
    cuda::fill(lens, static_cast<double>(L.T));
  }
  // The deterministic backward runs as pieces whose dP workspace fits (choose_split); the one
  // with dQ atomics needs no such workspace and runs whole.
  const int64_t G = L.Hq / L.Hkv;
  Split sp{L.b, L.Hkv, 0};
  if (deterministic && !choose_split(L, static_cast<double>(max_workspace), &sp)) {
    *why = fmt::format("the deterministic cuDNN backward needs {:.1f} GiB of dP workspace even for one "
                       "query head (limit {:.1f} GiB)",
                       det_workspace_bytes(L.ragged ? L.b : 1, 1, L.s) / 1073741824.0,
                       static_cast<double>(max_workspace) / 1073741824.0);
    return false;
  }
  Layout P = L;  // one piece: sp.rows rows, sp.kv_heads KV heads, P.Hq query heads
  P.b = sp.rows;
  if (!L.ragged) P.B = sp.rows;
  P.Hkv = sp.kv_heads;
  P.Hq = sp.sub_heads > 0 ? sp.sub_heads : sp.kv_heads * G;
  if (sp.sub_heads > 0) P.lddk = P.lddv = L.E;  // dK/dV partials: dense [tokens, E]
  const bool whole = P.b == L.b && P.Hq == L.Hq;
  Graph* g = get_plan(PlanKey{deterministic ? 2 : 1, P}, why);
  if (!g) return false;
  if (deterministic && g->workspace() > max_workspace + (size_t{64} << 20)) {
    *why = fmt::format("the deterministic cuDNN plan wants {:.1f} GiB of workspace",
                       static_cast<double>(g->workspace()) / 1073741824.0);
    return false;
  }

  // Per piece: stats of its heads (ragged: token-major [B·T, P.Hq]; dense rows: [P.b, P.Hq, T],
  // gathered unless the piece is the whole problem) and its softmax sums, in scratch.
  const int64_t tokens = L.ragged ? L.B * L.T : P.b * L.T;  // tokens one piece covers
  const int64_t stat_count = tokens * P.Hq;
  float* piece_stats = whole && !L.ragged ? lse.ptr<float>()
                                          : scratch_as<float>(Scratch::Attn0, static_cast<size_t>(stat_count));
  float* softmax_sum = scratch_as<float>(Scratch::Attn1, static_cast<size_t>(stat_count));
  const int64_t nparts = sp.sub_heads > 0 ? G / sp.sub_heads : 1;
  __nv_bfloat16* partials = nullptr;  // [dK parts][dV parts], each [tokens, E]
  if (sp.sub_heads > 0)
    partials = scratch_as<__nv_bfloat16>(Scratch::Attn2, static_cast<size_t>(2 * nparts * tokens * L.E));
  float scale = p.scale, neg_inf = c.neg_inf, one = 1.0f;
  std::vector<int64_t> uids = {kQ, kK, kV, kO, kDO, kStats, kDQ, kDK, kDV, kScale, kNegInf, kOne, kSoftmaxSum};
  std::vector<void*> ptrs = {p.q.data, p.k.data, p.v.data, out.data, dout.data, piece_stats, dq.data,
                             dk.data, dv.data, &scale, &neg_inf, &one, softmax_sum};
  if (!deterministic) {
    const int64_t acc = L.ragged ? (L.B * L.T - 1) * L.lddq + L.Hq * L.E : L.B * L.Hq * L.T * L.E;
    float* dq_accum = scratch_as<float>(Scratch::Attn2, static_cast<size_t>(acc));
    HLM_CUDA_CHECK(cudaMemsetAsync(dq_accum, 0, static_cast<size_t>(acc) * sizeof(float), stream()));
    uids.push_back(kDQAccum);
    ptrs.push_back(dq_accum);
  }
  if (L.ragged) {
    // The same offsets serve every piece: a piece moves the base pointers by its first head.
    RaggedArrays r = upload_ragged(c.sg, P,
                                   {{kOffQ, P.ldq}, {kOffK, P.ldk}, {kOffV, P.ldv}, {kOffO, P.ldo},
                                    {kOffStats, P.Hq}, {kOffDO, P.lddo}, {kOffDQ, P.lddq},
                                    {kOffDK, P.lddk}, {kOffDV, P.lddv}});
    for (auto& [uid, ptr] : r.offsets) {
      uids.push_back(uid);
      ptrs.push_back(ptr);
    }
    uids.push_back(kSeqQ);
    ptrs.push_back(r.seq);
    uids.push_back(kSeqKV);
    ptrs.push_back(r.seq);
  } else if (L.padded) {
    uids.push_back(kSeqQ);
    ptrs.push_back(full_lengths);
    uids.push_back(kSeqKV);
    ptrs.push_back(full_lengths);
  }

  // Element offsets into the bf16 row views.
  auto at = [](const Tensor& t, int64_t elems) -> void* {
    return static_cast<__nv_bfloat16*>(t.data) + elems;
  };
  const int64_t T = L.T, E = L.E, rows_per_piece = L.ragged ? L.B : P.b;
  for (int64_t b0 = 0; b0 < L.B; b0 += rows_per_piece) {
    for (int64_t k0 = 0; k0 < L.Hkv; k0 += P.Hkv) {
      for (int64_t part = 0; part < nparts; ++part) {
        const int64_t h0 = k0 * G + part * P.Hq;  // first query head of the piece
        if (L.ragged) {
          lse_to_stats_kernel<<<grid_for(stat_count, 256), 256, 0, stream()>>>(
              lse.ptr<float>(), piece_stats, L.B * T, T, L.Hq, h0, P.Hq);
          HLM_CUDA_CHECK_LAUNCH();
        } else if (!whole) {
          const size_t width = static_cast<size_t>(P.Hq * T) * sizeof(float);
          HLM_CUDA_CHECK(cudaMemcpy2DAsync(piece_stats, width, lse.ptr<float>() + (b0 * L.Hq + h0) * T,
                                           static_cast<size_t>(L.Hq * T) * sizeof(float), width,
                                           static_cast<size_t>(P.b), cudaMemcpyDeviceToDevice, stream()));
        }
        ptrs[0] = at(p.q, b0 * T * L.ldq + h0 * E);
        ptrs[1] = at(p.k, b0 * T * L.ldk + k0 * E);
        ptrs[2] = at(p.v, b0 * T * L.ldv + k0 * E);
        ptrs[3] = at(out, b0 * T * L.ldo + h0 * E);
        ptrs[4] = at(dout, b0 * T * L.lddo + h0 * E);
        ptrs[6] = at(dq, b0 * T * L.lddq + h0 * E);
        if (sp.sub_heads > 0) {
          ptrs[7] = partials + part * tokens * E;
          ptrs[8] = partials + (nparts + part) * tokens * E;
        } else {
          ptrs[7] = at(dk, b0 * T * L.lddk + k0 * E);
          ptrs[8] = at(dv, b0 * T * L.lddv + k0 * E);
        }
        execute(g, uids, ptrs);
      }
      if (sp.sub_heads > 0) {
        const int64_t n = tokens * E;
        sum_partials_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(
            partials, nparts, tokens, E, static_cast<__nv_bfloat16*>(at(dk, b0 * T * L.lddk + k0 * E)), L.lddk);
        HLM_CUDA_CHECK_LAUNCH();
        sum_partials_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(
            partials + nparts * n, nparts, tokens, E,
            static_cast<__nv_bfloat16*>(at(dv, b0 * T * L.lddv + k0 * E)), L.lddv);
        HLM_CUDA_CHECK_LAUNCH();
      }
    }
  }
  return true;
}

}  // namespace hlm::cuda::cudnn_attention
