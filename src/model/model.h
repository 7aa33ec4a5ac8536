// The hybrid model: embedding → layers (pre-norm residual, mixer chosen per layer by the pattern)
// → final RMSNorm → LM head. Forward (logits, loss), backward (gradients of every parameter), and
// the inference path (prefill that fills per-layer states, then one-token decode steps).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/memory.h"
#include "core/tensor.h"
#include "model/config.h"
#include "model/params.h"
#include "ops/graph.h"
#include "ops/ssd.h"

namespace hlm {

// A Mamba layer's decode-step parameters that come from the config (sizes, norm group and eps, the
// dt clamp where the config applies it in decode); the caller sets the weights.
MambaStepParams mamba_step_params(const ModelConfig& c);
// A Mamba layer's SSD parameters over a sequence: x, B, C as views of the conv output xbc, the
// config's dt clamp and chunk size, and the given weights and document ids.
SsdParams mamba_ssd_params(const ModelConfig& c, const Tensor& xbc, const Tensor& dt, const Tensor& A_log,
                           const Tensor& D, const Tensor& dt_bias, const Tensor& doc);

// One batch of token rows on the model's device.
struct ModelInput {
  Tensor ids;      // [B,T] I32
  Tensor targets;  // [B,T] I32 (kIgnoreIndex skips a position) or undefined: no loss
  Tensor doc;      // [B,T] I32 document ids, or undefined: one document per row
  Tensor pos;      // [B,T] I32 positions within documents; needed only with RoPE
};

// Position of each token within its document (restarts at 0 at each doc-id change).
std::vector<int32_t> positions_from_docs(const int32_t* doc, int64_t B, int64_t T);

// Per-layer decode state: conv and SSM state for Mamba layers, a KV cache for attention layers.
struct LayerState {
  Tensor conv;     // [B, conv_dim, K-1]    Mamba
  Tensor ssm;      // [B, H, P, N] F32      Mamba
  Tensor k_cache;  // [B, S, Hkv, E]        attention
  Tensor v_cache;  // [B, S, Hkv, E]        attention
};

struct InferenceState {
  int64_t batch = 0;
  int64_t capacity = 0;             // S: longest sequence the KV caches hold
  int64_t length = 0;               // tokens consumed so far (equal for every row)
  std::vector<int32_t> start;       // per row: first position of its (last) document
  std::vector<LayerState> layers;   // one per layer (unused fields undefined)
  Buffer memory;                    // owns every state tensor
  Buffer small;                     // device copies of start / length / positions / ids
  Arena scratch;                    // decode activations (fixed addresses across steps)
  Tensor logits;                    // [B,V] of the last decode step, in scratch
  OpGraph graph;                    // the recorded decode step (CUDA graph on CUDA)
  bool use_graph = false;           // record and replay decode steps (default on CUDA)
  int64_t steps = 0;                // decode steps run
};

class Model {
 public:
  // CPU: act_dtype F32 (training, inference) or F64 (gradient checks); master weights and
  // gradients in the same dtype. CUDA: act_dtype BF16, master weights / gradients F32 with a BF16
  // working copy.
  // training = false: no gradient buffer (inference only).
  Model(ModelConfig cfg, Device device, DType act_dtype, bool training = true);
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const std::vector<ParamSpec>& table() const { return table_; }
  const std::vector<LayerKind>& kinds() const { return kinds_; }
  Device device() const { return device_; }
  DType act_dtype() const { return act_dtype_; }
  DType master_dtype() const { return master_dtype_; }

  // Flat master parameters / gradients (numel = param_arena_numel(table())).
  Tensor params() const { return flat_params_; }
  Tensor grads() const { return flat_grads_; }
  // The BF16 working copy on CUDA (undefined on the CPU).
  Tensor params_lowp() const { return flat_lowp_; }
  // One parameter (master) / its gradient, in HF shape. -1 index: not found.
  int find(const std::string& hub_name) const;
  Tensor param(size_t i) const;
  Tensor grad(size_t i) const;

  // Megatron / HF initialisation from a seed (see ParamRole).
  void init_weights(uint64_t seed);
  // After the master weights changed outside AdamW (load, init): refresh the working copy.
  void sync_working_copy();
  void zero_grads();

  // Forward over a [B,T] batch. Returns the mean cross-entropy over non-ignored targets (0 when
  // targets are undefined or all ignored). Keeps the activations a backward needs.
  double forward(const ModelInput& in);
  // Logits [B,T,V] of the last forward (act dtype). Invalidated by backward (reused in place).
  Tensor logits() const { return logits_; }
  // Number of non-ignored targets in the last forward.
  int64_t target_count() const { return target_count_; }
  // Accumulates loss_scale · d(mean loss)/d(params) into grads(). Needs a forward with targets.
  void backward(float loss_scale = 1.0f);

  // Inference. Allocates state for `batch` rows and up to `capacity` tokens.
  InferenceState new_state(int64_t batch, int64_t capacity) const;
  // Runs the full forward over the prompt rows ([B,T] ids; doc marks left padding as another
  // document) and fills the state; returns the logits [B,V] of the last position (a view into
  // the model's buffers, valid until the next call).
  Tensor prefill(const ModelInput& in, InferenceState& st);
  // One token per row ([B] I32 ids, on the host or the model's device): recurrent step of every
  // layer; logits [B,V]. Host ids are uploaded with the step's lengths, without waiting.
  Tensor decode(const Tensor& ids, InferenceState& st);

  // Long-sequence memory mode: forward keeps only each layer's input and recomputes the layer's
  // internals before its backward (one set shared by all layers), and the LM head + loss run over
  // row chunks (no [B,T,V] logits). Costs about one more forward. logits() is then not kept.
  void set_recompute(bool on, int64_t head_chunk_rows = 4096) {
    recompute_ = on;
    head_chunk_rows_ = head_chunk_rows;
  }
  bool recompute() const { return recompute_; }

  // Bytes of activation memory a forward + backward over [B,T] needs.
  size_t activation_bytes(int64_t B, int64_t T) const;

 private:
  struct LayerActs {
    Tensor resid_in;  // [B,T,D] the layer's input (residual stream)
    Tensor normed;    // [B,T,D]
    Tensor rstd;      // [B·T]
    // Mamba
    Tensor zxbcdt;  // [B,T,in_proj]
    Tensor xbc;     // [B,T,conv_dim] after conv + SiLU
    Tensor y;       // [B,T,d_inner] SSD output
    Tensor gn_rstd; // [B·T, d_inner / group]
    Tensor yn;      // [B,T,d_inner] gated-norm output
    // attention
    Tensor q, k, v, att, lse;
    // MLP
    Tensor up, act;
  };
  struct Weights;  // views of one layer's parameters (working dtype)

  template <typename Take>
  void carve_activations(Take&& take, int64_t B, int64_t T);
  Tensor W(int layer, const char* suffix) const;         // working weight or undefined
  Tensor G(int layer, const char* suffix) const;         // gradient or undefined
  Tensor Wg(const char* name) const;                     // global (non-layer) weight
  Tensor Gg(const char* name) const;
  void ensure_activation_arena(int64_t B, int64_t T);
  void layer_forward(int l, const ModelInput& in, Tensor out, InferenceState* st);
  void layer_backward(int l, const ModelInput& in, Tensor dout, Tensor dnormed);
  void decode_body(InferenceState& st);

  ModelConfig cfg_;
  std::vector<LayerKind> kinds_;
  std::vector<ParamSpec> table_;
  std::vector<std::vector<int>> layer_params_;  // per layer: indices into table_
  Device device_;
  DType act_dtype_, master_dtype_;
  bool training_ = true;
  bool recompute_ = false;
  int64_t head_chunk_rows_ = 4096;
  Buffer params_buf_, grads_buf_, lowp_buf_;
  Tensor flat_params_, flat_grads_, flat_lowp_;

  Arena acts_;
  int64_t B_ = 0, T_ = 0;
  std::vector<LayerActs> la_;
  Tensor resid_out_, final_normed_, final_rstd_, logits_, losses_, lse_;
  ModelInput last_in_;
  int64_t target_count_ = 0;
  bool have_targets_ = false;
  Arena scratch_;
};

}  // namespace hlm
