// The hybrid model's forward, backward and inference steps, written once over device-neutral ops.
#include "model/model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/rng.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/conv1d.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/gemm.h"
#include "ops/loss.h"
#include "ops/norm.h"
#include "ops/ssd.h"

namespace hlm {

std::vector<int32_t> positions_from_docs(const int32_t* doc, int64_t B, int64_t T) {
  std::vector<int32_t> pos(static_cast<size_t>(B * T));
  for (int64_t b = 0; b < B; ++b) {
    int32_t p = 0;
    for (int64_t t = 0; t < T; ++t) {
      int64_t i = b * T + t;
      if (t > 0 && doc && doc[i] != doc[i - 1]) p = 0;
      pos[static_cast<size_t>(i)] = p++;
    }
  }
  return pos;
}

namespace {

DType stat_dtype(DType act) { return act == DType::F64 ? DType::F64 : DType::F32; }

// Roles whose working copy stays in the master dtype on CUDA: tiny vectors that the SSD reads in
// fp32 (design contract: dt, decays in fp32).
bool keeps_master_precision(ParamRole r) {
  return r == ParamRole::ALog || r == ParamRole::D || r == ParamRole::DtBias;
}

Tensor view_of(const Tensor& flat, const ParamSpec& s) {
  Tensor t(flat.at_offset(s.offset), flat.dtype, flat.device,
           Shape(s.shape.data(), s.shape.size()));
  return t;
}

// Conv weights are [C,1,K] in HF layout; ops take [C,K].
Tensor conv2d_view(const Tensor& w) { return w.defined() ? w.reshape({w.size(0), w.size(2)}) : w; }

}  // namespace

MambaStepParams mamba_step_params(const ModelConfig& c) {
  MambaStepParams p;
  p.heads = c.mamba_heads;
  p.head_dim = c.mamba_head_dim;
  p.groups = c.n_groups;
  p.state_dim = c.ssm_state;
  p.norm_group = c.norm_group_size();
  p.norm_eps = c.norm_eps;
  if (c.dt_limit_in_decode) {  // HF's (and mamba_ssm's) step never clamps: see config.h
    p.dt_min = c.dt_limit_min;
    p.dt_max = c.dt_limit_max;
  }
  return p;
}

SsdParams mamba_ssd_params(const ModelConfig& c, const Tensor& xbc, const Tensor& dt, const Tensor& A_log,
                           const Tensor& D, const Tensor& dt_bias, const Tensor& doc) {
  const int64_t Di = c.d_inner(), GN = c.n_groups * c.ssm_state;
  SsdParams p;
  p.x = xbc.slice(-1, 0, Di).split_last({c.mamba_heads, c.mamba_head_dim});
  p.Bm = xbc.slice(-1, Di, GN).split_last({c.n_groups, c.ssm_state});
  p.Cm = xbc.slice(-1, Di + GN, GN).split_last({c.n_groups, c.ssm_state});
  p.dt = dt;
  p.A_log = A_log;
  p.D = D;
  p.dt_bias = dt_bias;
  p.doc = doc;
  p.dt_min = c.dt_limit_min;
  p.dt_max = c.dt_limit_max;
  p.chunk = c.chunk_size;
  return p;
}

Model::Model(ModelConfig cfg, Device device, DType act_dtype, bool training)
    : cfg_(std::move(cfg)), device_(device), act_dtype_(act_dtype), training_(training) {
  cfg_.validate();
  kinds_ = cfg_.layers();
  table_ = param_table(cfg_);
  if (device_ == Device::CPU) {
    HLM_CHECK_ARG(act_dtype == DType::F32 || act_dtype == DType::F64,
                  "the CPU model runs in F32 or F64, not {}", dtype_name(act_dtype));
    master_dtype_ = act_dtype;
  } else {
    HLM_CHECK_ARG(act_dtype == DType::BF16, "the CUDA model runs in BF16, not {}",
                  dtype_name(act_dtype));
    master_dtype_ = DType::F32;
  }
  layer_params_.resize(kinds_.size());
  for (size_t i = 0; i < table_.size(); ++i)
    if (table_[i].layer >= 0) layer_params_[static_cast<size_t>(table_[i].layer)].push_back(static_cast<int>(i));

  int64_t n = param_arena_numel(table_);
  size_t mb = static_cast<size_t>(n) * dtype_size(master_dtype_);
  params_buf_ = Buffer(device_, mb);
  flat_params_ = params_buf_.as(master_dtype_, {n});
  fill(flat_params_, 0.0);
  if (training_) {
    grads_buf_ = Buffer(device_, mb);
    flat_grads_ = grads_buf_.as(master_dtype_, {n});
    fill(flat_grads_, 0.0);
  }
  if (device_ == Device::CUDA) {
    lowp_buf_ = Buffer(device_, static_cast<size_t>(n) * dtype_size(DType::BF16));
    flat_lowp_ = lowp_buf_.as(DType::BF16, {n});
    fill(flat_lowp_, 0.0);
  }
}

int Model::find(const std::string& hub_name) const {
  for (size_t i = 0; i < table_.size(); ++i)
    if (table_[i].name == hub_name) return static_cast<int>(i);
  return -1;
}

Tensor Model::param(size_t i) const { return view_of(flat_params_, table_.at(i)); }
Tensor Model::grad(size_t i) const {
  return training_ ? view_of(flat_grads_, table_.at(i)) : Tensor{};
}

Tensor Model::W(int layer, const char* suffix) const {
  std::string name = fmt::format("backbone.layers.{}.{}", layer, suffix);
  for (int i : layer_params_[static_cast<size_t>(layer)]) {
    const ParamSpec& s = table_[static_cast<size_t>(i)];
    if (s.name == name) {
      if (flat_lowp_.defined() && !keeps_master_precision(s.role)) return view_of(flat_lowp_, s);
      return view_of(flat_params_, s);
    }
  }
  return Tensor{};
}

Tensor Model::G(int layer, const char* suffix) const {
  std::string name = fmt::format("backbone.layers.{}.{}", layer, suffix);
  for (int i : layer_params_[static_cast<size_t>(layer)])
    if (table_[static_cast<size_t>(i)].name == name) return grad(static_cast<size_t>(i));
  return Tensor{};
}

Tensor Model::Wg(const char* name) const {
  int i = find(name);
  if (i < 0) return Tensor{};
  const ParamSpec& s = table_[static_cast<size_t>(i)];
  return flat_lowp_.defined() ? view_of(flat_lowp_, s) : view_of(flat_params_, s);
}

Tensor Model::Gg(const char* name) const {
  int i = find(name);
  return i < 0 ? Tensor{} : grad(static_cast<size_t>(i));
}

void Model::init_weights(uint64_t seed) {
  const double range = cfg_.initializer_range;
  const double out_scale =
      cfg_.rescale_prenorm_residual ? 1.0 / std::sqrt(2.0 * static_cast<double>(cfg_.num_layers())) : 1.0;
  fill(flat_params_, 0.0);  // padding between tensors, and biases
  std::vector<double> host;
  for (size_t i = 0; i < table_.size(); ++i) {
    const ParamSpec& s = table_[i];
    const Tensor dst = param(i);
    const uint64_t stream = i + 1;  // one RNG stream per tensor: values do not depend on the device
    switch (s.role) {
      case ParamRole::Embedding:
      case ParamRole::Linear:
        fill_normal(dst, seed, stream, 0.0f, static_cast<float>(range));
        continue;
      case ParamRole::OutProj:
        fill_normal(dst, seed, stream, 0.0f, static_cast<float>(range * out_scale));
        continue;
      case ParamRole::Norm:
      case ParamRole::D:
        fill(dst, 1.0);
        continue;
      case ParamRole::Bias:
        continue;
      default:
        break;
    }
    // Small tensors drawn on the host: conv weights and biases, A_log, dt_bias.
    Rng rng(seed, stream);
    host.assign(static_cast<size_t>(s.numel()), 0.0);
    for (double& v : host) {
      if (s.role == ParamRole::ConvWeight || s.role == ParamRole::ConvBias) {
        v = (2.0 * rng.uniform() - 1.0) / std::sqrt(static_cast<double>(cfg_.conv_kernel));
      } else if (s.role == ParamRole::ALog) {
        v = std::log(1.0 + 15.0 * rng.uniform());
      } else {  // DtBias: inverse softplus of dt ~ log-uniform [dt_min, dt_max], floored
        double lo = std::log(cfg_.dt_min), hi = std::log(cfg_.dt_max);
        double dt = std::max(std::exp(lo + (hi - lo) * rng.uniform()), double(cfg_.dt_init_floor));
        v = dt + std::log(-std::expm1(-dt));
      }
    }
    if (master_dtype_ == DType::F64) {
      device_copy(dst.data, device_, host.data(), Device::CPU, host.size() * sizeof(double));
    } else {
      std::vector<float> f(host.begin(), host.end());
      device_copy(dst.data, device_, f.data(), Device::CPU, f.size() * sizeof(float));
    }
  }
  sync_working_copy();
}

void Model::sync_working_copy() {
  if (flat_lowp_.defined()) convert(flat_params_, flat_lowp_);
}

void Model::zero_grads() {
  if (training_) fill(flat_grads_, 0.0);
}

// Activation layout: one table of tensors per layer kind, carved in order. `take(dtype, shape)`
// either allocates from the arena or just counts bytes.
template <typename Take>
void Model::carve_activations(Take&& take, int64_t B, int64_t T) {
  const ModelConfig& c = cfg_;
  const int64_t D = c.d_model, M = B * T;
  const DType a = act_dtype_, st = stat_dtype(a);
  la_.assign(kinds_.size(), LayerActs{});
  // A layer's internals (everything but its input); with recompute one set serves every layer.
  auto internals = [&](LayerActs& x, LayerKind kind, bool all_kinds) {
    x.normed = take(a, {B, T, D});
    x.rstd = take(st, {M});
    if (kind == LayerKind::Mamba || (all_kinds && c.count(LayerKind::Mamba))) {
      x.zxbcdt = take(a, {B, T, c.in_proj_dim()});
      x.xbc = take(a, {B, T, c.conv_dim()});
      x.y = take(a, {B, T, c.d_inner()});
      x.gn_rstd = take(st, {M, c.d_inner() / c.norm_group_size()});
      x.yn = take(a, {B, T, c.d_inner()});
    }
    if (kind == LayerKind::Attention || (all_kinds && c.count(LayerKind::Attention))) {
      x.q = take(a, {B, T, c.attn_heads * c.head_dim()});
      x.k = take(a, {B, T, c.kv_heads * c.head_dim()});
      x.v = take(a, {B, T, c.kv_heads * c.head_dim()});
      x.att = take(a, {B, T, c.attn_heads * c.head_dim()});
      x.lse = take(st, {B, c.attn_heads, T});
    }
    if (kind == LayerKind::Mlp || (all_kinds && c.count(LayerKind::Mlp))) {
      x.up = take(a, {B, T, activation_input_width(c.mlp_activation, c.mlp_hidden)});
      x.act = take(a, {B, T, c.mlp_hidden});
    }
  };
  LayerActs shared;
  if (recompute_ && !kinds_.empty()) internals(shared, kinds_[0], /*all_kinds=*/true);
  for (size_t l = 0; l < kinds_.size(); ++l) {
    LayerActs& x = la_[l];
    if (recompute_) x = shared;
    x.resid_in = take(a, {B, T, D});
    if (!recompute_) internals(x, kinds_[l], false);
  }
  resid_out_ = take(a, {B, T, D});
  final_normed_ = take(a, {B, T, D});
  final_rstd_ = take(st, {M});
  // With recompute the LM head and the loss run over row chunks: no [B,T,V] logits in memory.
  logits_ = recompute_ ? take(a, {std::min(M, head_chunk_rows_), c.vocab_size}) : take(a, {B, T, c.vocab_size});
  losses_ = take(st, {M});
  lse_ = take(st, {M});
}

size_t Model::activation_bytes(int64_t B, int64_t T) const {
  size_t bytes = 0;
  auto count = [&bytes](DType d, std::initializer_list<int64_t> s) {
    bytes += Arena::bytes_for(d, Shape(s.begin(), s.size()));
    return Tensor{};
  };
  const_cast<Model*>(this)->carve_activations(count, B, T);
  const_cast<Model*>(this)->la_.clear();
  return bytes;
}

void Model::ensure_activation_arena(int64_t B, int64_t T) {
  size_t need = activation_bytes(B, T);
  if (acts_.capacity() < need) acts_ = Arena(device_, need);
  acts_.reset();
  carve_activations([this](DType d, std::initializer_list<int64_t> s) { return acts_.alloc(d, s); },
                    B, T);
  B_ = B;
  T_ = T;
  // Backward scratch: the residual gradient, two [B,T,D] temporaries, and the largest mixer's
  // temporaries.
  const ModelConfig& c = cfg_;
  const int64_t M = B * T;
  size_t per_kind = 0;
  for (LayerKind k : kinds_) {
    size_t s = 0;
    auto add = [&s, this](int64_t cols, int64_t rows) {
      s += Arena::bytes_for(act_dtype_, {rows, cols});
    };
    switch (k) {
      case LayerKind::Mamba:
        add(c.d_inner(), M);
        add(c.in_proj_dim(), M);
        add(c.d_inner(), M);
        add(c.conv_dim(), M);
        break;
      case LayerKind::Attention:
        add(c.attn_heads * c.head_dim(), M);
        add(c.attn_heads * c.head_dim(), M);
        add(c.kv_heads * c.head_dim(), M);
        add(c.kv_heads * c.head_dim(), M);
        break;
      case LayerKind::Mlp:
        add(c.mlp_hidden, M);
        add(activation_input_width(c.mlp_activation, c.mlp_hidden), M);
        break;
    }
    per_kind = std::max(per_kind, s);
  }
  size_t scratch = per_kind + (recompute_ ? 4 : 3) * Arena::bytes_for(act_dtype_, {M, c.d_model});
  if (scratch_.capacity() < scratch) scratch_ = Arena(device_, scratch);
  scratch_.reset();
}


void Model::layer_forward(int l, const ModelInput& in, Tensor out, InferenceState* st) {
  const ModelConfig& c = cfg_;
  LayerActs& a = la_[static_cast<size_t>(l)];
  rmsnorm_forward(a.resid_in, W(l, "norm.weight"), c.norm_eps, a.normed, a.rstd);
  switch (kinds_[static_cast<size_t>(l)]) {
    case LayerKind::Mamba: {
      const int64_t Di = c.d_inner(), Cd = c.conv_dim();
      linear_forward(a.normed, W(l, "mixer.in_proj.weight"), W(l, "mixer.in_proj.bias"), a.zxbcdt);
      Tensor z = a.zxbcdt.slice(-1, 0, Di);
      Tensor xbc_raw = a.zxbcdt.slice(-1, Di, Cd);
      Tensor dt = a.zxbcdt.slice(-1, Di + Cd, c.mamba_heads);
      conv1d_silu_forward(xbc_raw, conv2d_view(W(l, "mixer.conv1d.weight")), W(l, "mixer.conv1d.bias"),
                          in.doc, a.xbc);
      SsdParams p = mamba_ssd_params(c, a.xbc, dt, W(l, "mixer.A_log"), W(l, "mixer.D"), W(l, "mixer.dt_bias"), in.doc);
      Tensor h_final = st ? st->layers[static_cast<size_t>(l)].ssm : Tensor{};
      ssd_forward(p, a.y.split_last({c.mamba_heads, c.mamba_head_dim}), h_final);
      if (st) conv1d_state_from_sequence(xbc_raw, in.doc, st->layers[static_cast<size_t>(l)].conv);
      gated_rmsnorm_forward(a.y, z, W(l, "mixer.norm.weight"), c.norm_group_size(), c.norm_eps, a.yn,
                            a.gn_rstd);
      linear_residual_forward(a.yn, W(l, "mixer.out_proj.weight"), W(l, "mixer.out_proj.bias"), a.resid_in, out);
      break;
    }
    case LayerKind::Attention: {
      const int64_t E = c.head_dim();
      linear_forward(a.normed, W(l, "mixer.q_proj.weight"), W(l, "mixer.q_proj.bias"), a.q);
      linear_forward(a.normed, W(l, "mixer.k_proj.weight"), W(l, "mixer.k_proj.bias"), a.k);
      linear_forward(a.normed, W(l, "mixer.v_proj.weight"), W(l, "mixer.v_proj.bias"), a.v);
      AttentionParams p;
      p.q = a.q.split_last({c.attn_heads, E});
      p.k = a.k.split_last({c.kv_heads, E});
      p.v = a.v.split_last({c.kv_heads, E});
      p.doc = in.doc;
      p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(E)));
      if (c.rope) {
        HLM_ASSERT(in.pos.defined());
        rope_apply(p.q, in.pos, c.rope_theta, c.rope_dim(), false);
        rope_apply(p.k, in.pos, c.rope_theta, c.rope_dim(), false);
      }
      attention_forward(p, a.att.split_last({c.attn_heads, E}), a.lse);
      if (st) {
        LayerState& s = st->layers[static_cast<size_t>(l)];
        const int64_t T = a.k.size(1);
        copy_tensor(s.k_cache.slice(1, 0, T), p.k);
        copy_tensor(s.v_cache.slice(1, 0, T), p.v);
      }
      linear_residual_forward(a.att, W(l, "mixer.o_proj.weight"), W(l, "mixer.o_proj.bias"), a.resid_in, out);
      break;
    }
    case LayerKind::Mlp:
      linear_forward(a.normed, W(l, "mixer.up_proj.weight"), W(l, "mixer.up_proj.bias"), a.up);
      activation_forward(c.mlp_activation, a.up, a.act);
      linear_residual_forward(a.act, W(l, "mixer.down_proj.weight"), W(l, "mixer.down_proj.bias"), a.resid_in, out);
      break;
  }
}

double Model::forward(const ModelInput& in) {
  HLM_CHECK_ARG(in.ids.defined() && in.ids.ndim == 2 && in.ids.dtype == DType::I32,
                "model input ids must be an I32 [B,T] tensor, got {}", in.ids.describe());
  const int64_t B = in.ids.size(0), T = in.ids.size(1);
  HLM_CHECK_ARG(B > 0 && T > 0, "model input is empty ({})", in.ids.shape_str());
  if (cfg_.rope && cfg_.count(LayerKind::Attention) > 0)
    HLM_CHECK_ARG(in.pos.defined(), "this model uses RoPE: the input needs positions");
  ensure_activation_arena(B, T);
  last_in_ = in;

  embedding_forward(in.ids, Wg("backbone.embeddings.weight"), la_.empty() ? resid_out_ : la_[0].resid_in);
  for (size_t l = 0; l < kinds_.size(); ++l) {
    Tensor out = l + 1 < kinds_.size() ? la_[l + 1].resid_in : resid_out_;
    layer_forward(static_cast<int>(l), in, out, nullptr);
  }
  rmsnorm_forward(resid_out_, Wg("backbone.norm_f.weight"), cfg_.norm_eps, final_normed_, final_rstd_);
  Tensor head = cfg_.tie_embeddings ? Wg("backbone.embeddings.weight") : Wg("lm_head.weight");
  have_targets_ = in.targets.defined();
  target_count_ = 0;
  if (!recompute_) linear_forward(final_normed_, head, Tensor{}, logits_);
  if (!have_targets_) {
    if (recompute_) fail(ErrorKind::InvalidArgument, "a forward without targets keeps no logits in recompute mode");
    return 0.0;
  }
  std::vector<int32_t> tg = to_host<int32_t>(in.targets);
  for (int32_t t : tg) target_count_ += t != kIgnoreIndex;
  const Tensor targets = in.targets.reshape({-1});
  if (recompute_) {
    const Tensor x = final_normed_.rows2d();
    for (int64_t r0 = 0; r0 < B * T; r0 += head_chunk_rows_) {
      const int64_t n = std::min(head_chunk_rows_, B * T - r0);
      Tensor lg = logits_.slice(0, 0, n);
      linear_forward(x.slice(0, r0, n), head, Tensor{}, lg);
      cross_entropy_forward(lg, targets.slice(0, r0, n), kIgnoreIndex, losses_.slice(0, r0, n), lse_.slice(0, r0, n));
    }
  } else {
    cross_entropy_forward(logits_.rows2d(), targets, kIgnoreIndex, losses_, lse_);
  }
  if (target_count_ == 0) return 0.0;
  double sum = 0;
  if (losses_.dtype == DType::F64) {
    for (double v : to_host<double>(losses_)) sum += v;
  } else {
    for (float v : to_host<float>(losses_)) sum += v;
  }
  return sum / static_cast<double>(target_count_);
}

void Model::layer_backward(int l, const ModelInput& in, Tensor dres, Tensor dnormed) {
  const ModelConfig& c = cfg_;
  LayerActs& a = la_[static_cast<size_t>(l)];
  const int64_t B = B_, T = T_;
  const DType dt_act = act_dtype_;
  size_t mark = scratch_.mark();
  auto tmp = [&](int64_t cols) { return scratch_.alloc(dt_act, {B, T, cols}); };
  switch (kinds_[static_cast<size_t>(l)]) {
    case LayerKind::Mamba: {
      const int64_t Di = c.d_inner(), Cd = c.conv_dim(), GN = c.n_groups * c.ssm_state;
      Tensor dyn = tmp(Di);
      linear_backward(dres, a.yn, W(l, "mixer.out_proj.weight"), dyn, G(l, "mixer.out_proj.weight"),
                      G(l, "mixer.out_proj.bias"), false);
      Tensor dzx = tmp(c.in_proj_dim());
      Tensor dy = tmp(Di);
      Tensor z = a.zxbcdt.slice(-1, 0, Di);
      gated_rmsnorm_backward(dyn, a.y, z, W(l, "mixer.norm.weight"), a.gn_rstd, c.norm_group_size(), dy,
                             dzx.slice(-1, 0, Di), G(l, "mixer.norm.weight"));
      Tensor dxbc = tmp(Cd);
      Tensor dt = a.zxbcdt.slice(-1, Di + Cd, c.mamba_heads);
      SsdParams p = mamba_ssd_params(c, a.xbc, dt, W(l, "mixer.A_log"), W(l, "mixer.D"), W(l, "mixer.dt_bias"), in.doc);
      SsdGrads g;
      g.dx = dxbc.slice(-1, 0, Di).split_last({c.mamba_heads, c.mamba_head_dim});
      g.dBm = dxbc.slice(-1, Di, GN).split_last({c.n_groups, c.ssm_state});
      g.dCm = dxbc.slice(-1, Di + GN, GN).split_last({c.n_groups, c.ssm_state});
      g.ddt = dzx.slice(-1, Di + Cd, c.mamba_heads);
      g.dA_log = G(l, "mixer.A_log");
      g.dD = G(l, "mixer.D");
      g.ddt_bias = G(l, "mixer.dt_bias");
      ssd_backward(p, dy.split_last({c.mamba_heads, c.mamba_head_dim}), Tensor{}, g);
      conv1d_silu_backward(dxbc, a.zxbcdt.slice(-1, Di, Cd), conv2d_view(W(l, "mixer.conv1d.weight")),
                           W(l, "mixer.conv1d.bias"), in.doc, dzx.slice(-1, Di, Cd),
                           conv2d_view(G(l, "mixer.conv1d.weight")), G(l, "mixer.conv1d.bias"));
      linear_backward(dzx, a.normed, W(l, "mixer.in_proj.weight"), dnormed, G(l, "mixer.in_proj.weight"),
                      G(l, "mixer.in_proj.bias"), false);
      break;
    }
    case LayerKind::Attention: {
      const int64_t E = c.head_dim(), Q = c.attn_heads * E, KV = c.kv_heads * E;
      Tensor datt = tmp(Q);
      linear_backward(dres, a.att, W(l, "mixer.o_proj.weight"), datt, G(l, "mixer.o_proj.weight"),
                      G(l, "mixer.o_proj.bias"), false);
      Tensor dq = tmp(Q), dk = tmp(KV), dv = tmp(KV);
      AttentionParams p;
      p.q = a.q.split_last({c.attn_heads, E});
      p.k = a.k.split_last({c.kv_heads, E});
      p.v = a.v.split_last({c.kv_heads, E});
      p.doc = in.doc;
      p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(E)));
      Tensor dq4 = dq.split_last({c.attn_heads, E}), dk4 = dk.split_last({c.kv_heads, E});
      attention_backward(p, a.att.split_last({c.attn_heads, E}), a.lse, datt.split_last({c.attn_heads, E}),
                         dq4, dk4, dv.split_last({c.kv_heads, E}));
      if (c.rope) {
        rope_apply(dq4, in.pos, c.rope_theta, c.rope_dim(), true);
        rope_apply(dk4, in.pos, c.rope_theta, c.rope_dim(), true);
      }
      linear_backward(dq, a.normed, W(l, "mixer.q_proj.weight"), dnormed, G(l, "mixer.q_proj.weight"),
                      G(l, "mixer.q_proj.bias"), false);
      linear_backward(dk, a.normed, W(l, "mixer.k_proj.weight"), dnormed, G(l, "mixer.k_proj.weight"),
                      G(l, "mixer.k_proj.bias"), true);
      linear_backward(dv, a.normed, W(l, "mixer.v_proj.weight"), dnormed, G(l, "mixer.v_proj.weight"),
                      G(l, "mixer.v_proj.bias"), true);
      break;
    }
    case LayerKind::Mlp: {
      Tensor dact = tmp(c.mlp_hidden);
      linear_backward(dres, a.act, W(l, "mixer.down_proj.weight"), dact, G(l, "mixer.down_proj.weight"),
                      G(l, "mixer.down_proj.bias"), false);
      Tensor dup = tmp(activation_input_width(c.mlp_activation, c.mlp_hidden));
      activation_backward(c.mlp_activation, a.up, dact, dup);
      linear_backward(dup, a.normed, W(l, "mixer.up_proj.weight"), dnormed, G(l, "mixer.up_proj.weight"),
                      G(l, "mixer.up_proj.bias"), false);
      break;
    }
  }
  scratch_.release_to(mark);
  // Through the pre-norm: dres += d(rmsnorm input).
  residual_rmsnorm_backward(dnormed, a.resid_in, W(l, "norm.weight"), a.rstd, dres, G(l, "norm.weight"));
}

void Model::backward(float loss_scale) {
  HLM_CHECK_ARG(training_, "backward on a model built for inference only");
  HLM_CHECK_ARG(have_targets_, "backward needs a forward with targets");
  HLM_ASSERT(!la_.empty() || kinds_.empty());
  const int64_t B = B_, T = T_;
  scratch_.reset();
  if (target_count_ == 0) return;
  const float scale = loss_scale / static_cast<float>(target_count_);
  Tensor dres = scratch_.alloc(act_dtype_, {B, T, cfg_.d_model});
  Tensor dnormed = scratch_.alloc(act_dtype_, {B, T, cfg_.d_model});
  const bool tied = cfg_.tie_embeddings;
  const Tensor head = tied ? Wg("backbone.embeddings.weight") : Wg("lm_head.weight");
  const Tensor dhead = tied ? Gg("backbone.embeddings.weight") : Gg("lm_head.weight");
  const Tensor targets = last_in_.targets.reshape({-1});
  if (recompute_) {  // the logits are recomputed chunk by chunk and turned into their gradient in place
    const Tensor x = final_normed_.rows2d(), dx = dnormed.rows2d();
    for (int64_t r0 = 0; r0 < B * T; r0 += head_chunk_rows_) {
      const int64_t n = std::min(head_chunk_rows_, B * T - r0);
      Tensor lg = logits_.slice(0, 0, n);
      linear_forward(x.slice(0, r0, n), head, Tensor{}, lg);
      cross_entropy_backward(lg, targets.slice(0, r0, n), lse_.slice(0, r0, n), kIgnoreIndex, scale, lg);
      linear_backward(lg, x.slice(0, r0, n), head, dx.slice(0, r0, n), dhead, Tensor{}, false);
    }
  } else {
    Tensor dlogits = logits_.rows2d();
    cross_entropy_backward(dlogits, targets, lse_, kIgnoreIndex, scale, dlogits);
    linear_backward(logits_, final_normed_, head, dnormed, dhead, Tensor{}, false);
  }
  rmsnorm_backward(dnormed, resid_out_, Wg("backbone.norm_f.weight"), final_rstd_, dres,
                   Gg("backbone.norm_f.weight"));
  for (int l = static_cast<int>(kinds_.size()) - 1; l >= 0; --l) {
    if (recompute_ && l + 1 < static_cast<int>(kinds_.size())) {
      // Refill the shared internals with this layer's forward (the last layer's are still there).
      size_t mark = scratch_.mark();
      layer_forward(l, last_in_, scratch_.alloc(act_dtype_, {B, T, cfg_.d_model}), nullptr);
      scratch_.release_to(mark);
    }
    layer_backward(l, last_in_, dres, dnormed);
  }
  embedding_backward(last_in_.ids, dres, Gg("backbone.embeddings.weight"));
  have_targets_ = false;  // the logits now hold their gradient
}

InferenceState Model::new_state(int64_t batch, int64_t capacity) const {
  HLM_CHECK_ARG(batch > 0 && capacity > 0, "inference state needs batch > 0 and capacity > 0");
  const ModelConfig& c = cfg_;
  InferenceState st;
  st.batch = batch;
  st.capacity = capacity;
  st.start.assign(static_cast<size_t>(batch), 0);
  st.layers.resize(kinds_.size());
  const DType a = act_dtype_;
  const DType ssm_dtype = act_dtype_ == DType::F64 ? DType::F64 : DType::F32;
  std::vector<std::pair<DType, std::vector<int64_t>>> plan;
  size_t bytes = 0;
  auto add = [&](DType d, std::vector<int64_t> s) {
    bytes += Arena::bytes_for(d, Shape(s.data(), s.size()));
    plan.emplace_back(d, std::move(s));
  };
  for (LayerKind k : kinds_) {
    if (k == LayerKind::Mamba) {
      add(a, {batch, c.conv_dim(), c.conv_kernel - 1});
      add(ssm_dtype, {batch, c.mamba_heads, c.mamba_head_dim, c.ssm_state});
    } else if (k == LayerKind::Attention) {
      add(a, {batch, capacity, c.kv_heads, c.head_dim()});
      add(a, {batch, capacity, c.kv_heads, c.head_dim()});
    }
  }
  st.memory = Buffer(device_, std::max<size_t>(bytes, kAlignment));
  device_memset(st.memory.data(), device_, 0, st.memory.size());
  size_t off = 0, next = 0;
  auto carve = [&]() {
    auto& [d, s] = plan[next++];
    Tensor t(static_cast<char*>(st.memory.data()) + off, d, device_, Shape(s.data(), s.size()));
    off += Arena::bytes_for(d, Shape(s.data(), s.size()));
    return t;
  };
  for (size_t l = 0; l < kinds_.size(); ++l) {
    if (kinds_[l] == LayerKind::Mamba) {
      st.layers[l].conv = carve();
      st.layers[l].ssm = carve();
    } else if (kinds_[l] == LayerKind::Attention) {
      st.layers[l].k_cache = carve();
      st.layers[l].v_cache = carve();
    }
  }
  st.small = Buffer(device_, static_cast<size_t>(4 * batch) * sizeof(int32_t));
  st.use_graph = device_ == Device::CUDA;
  return st;
}

Tensor Model::prefill(const ModelInput& in, InferenceState& st) {
  const int64_t B = in.ids.size(0), T = in.ids.size(1);
  HLM_CHECK_ARG(B == st.batch, "prefill of {} rows into a state for {}", B, st.batch);
  HLM_CHECK_ARG(T <= st.capacity, "prompt of {} tokens is longer than the {} the state holds", T,
                st.capacity);
  ensure_activation_arena(B, T);
  last_in_ = in;
  have_targets_ = false;
  embedding_forward(in.ids, Wg("backbone.embeddings.weight"), la_.empty() ? resid_out_ : la_[0].resid_in);
  for (size_t l = 0; l < kinds_.size(); ++l) {
    Tensor out = l + 1 < kinds_.size() ? la_[l + 1].resid_in : resid_out_;
    layer_forward(static_cast<int>(l), in, out, &st);
  }
  rmsnorm_forward(resid_out_, Wg("backbone.norm_f.weight"), cfg_.norm_eps, final_normed_, final_rstd_);
  Tensor head = cfg_.tie_embeddings ? Wg("backbone.embeddings.weight") : Wg("lm_head.weight");
  // Only the last position's logits are needed to continue.
  Tensor last = logits_.rows2d().slice(0, 0, B);
  linear_forward(final_normed_.select(1, T - 1), head, Tensor{}, last);
  // Each row's live document is its last one (left padding is an earlier document).
  std::vector<int32_t> doc = in.doc.defined() ? to_host<int32_t>(in.doc) : std::vector<int32_t>();
  for (int64_t b = 0; b < B; ++b) {
    int64_t s = T - 1;
    if (!doc.empty())
      while (s > 0 && doc[static_cast<size_t>(b * T + s - 1)] == doc[static_cast<size_t>(b * T + T - 1)]) --s;
    else
      s = 0;
    st.start[static_cast<size_t>(b)] = static_cast<int32_t>(s);
  }
  st.length = T;
  return last;
}

Tensor Model::decode(const Tensor& ids, InferenceState& st) {
  const ModelConfig& c = cfg_;
  const int64_t B = st.batch;
  HLM_CHECK_ARG(ids.numel() == B && ids.dtype == DType::I32, "decode needs {} I32 ids, got {}", B,
                ids.describe());
  HLM_CHECK_ARG(st.length < st.capacity, "the sequence reached the state's capacity of {} tokens",
                st.capacity);
  // Everything a step reads that changes per token sits at fixed device addresses: the ids, and per
  // row the document start, the length after this token and this token's position.
  // Ids given on the host travel with them: one asynchronous upload, no wait for the device.
  const bool host_ids = ids.device == Device::CPU && ids.is_contiguous();
  std::vector<int32_t> small(static_cast<size_t>((host_ids ? 4 : 3) * B));
  for (int64_t b = 0; b < B; ++b) {
    small[static_cast<size_t>(b)] = st.start[static_cast<size_t>(b)];
    small[static_cast<size_t>(B + b)] = static_cast<int32_t>(st.length + 1);
    small[static_cast<size_t>(2 * B + b)] = static_cast<int32_t>(st.length - st.start[static_cast<size_t>(b)]);
    if (host_ids) small[static_cast<size_t>(3 * B + b)] = ids.ptr<int32_t>()[b];
  }
  int32_t* io = static_cast<int32_t*>(st.small.data());
  upload(io, device_, small.data(), small.size() * sizeof(int32_t));
  if (!host_ids) copy_tensor(Tensor(io + 3 * B, DType::I32, device_, {B}), ids.reshape({B}));

  if (st.scratch.capacity() == 0) {
    const DType a = act_dtype_, sd = stat_dtype(a);
    auto bytes = [B](DType d, int64_t cols) { return Arena::bytes_for(d, {B, cols}); };
    size_t mamba = bytes(a, c.in_proj_dim()) + bytes(a, c.conv_dim()) + 2 * bytes(a, c.d_inner()) +
                   bytes(sd, c.d_inner() / std::max<int64_t>(c.norm_group_size(), 1));
    size_t attn = 2 * bytes(a, c.attn_heads * c.head_dim()) + 2 * bytes(a, c.kv_heads * c.head_dim());
    size_t mlp = bytes(a, activation_input_width(c.mlp_activation, c.mlp_hidden)) + bytes(a, c.mlp_hidden);
    size_t need = 3 * bytes(a, c.d_model) + bytes(sd, 1) + std::max({mamba, attn, mlp}) + bytes(a, c.vocab_size);
    st.scratch = Arena(device_, need);
  }
  // The first step runs plainly (libraries set up their plans and workspaces), the second is
  // recorded, later ones replay the recording: one launch per token on CUDA.
  if (st.use_graph && st.graph.recorded()) {
    st.graph.replay();
  } else if (st.use_graph && st.steps > 0) {
    try {
      st.graph.record(device_, [this, &st] { decode_body(st); });
    } catch (const Error& e) {
      // Some op on the path cannot be captured: decode step by step from now on.
      fmt::print(stderr, "hybridlm: warning: decode step not recordable ({}); running it op by op\n", e.what());
      st.use_graph = false;
      decode_body(st);
    }
  } else {
    decode_body(st);
  }
  st.steps += 1;
  st.length += 1;
  return st.logits;
}

namespace {
// Whether b starts right where a ends in memory: two contiguous [*, K] weights of one dtype that
// together form one contiguous matrix.
bool follows(const Tensor& a, const Tensor& b) {
  return a.defined() && b.defined() && a.ndim == 2 && b.ndim == 2 && a.dtype == b.dtype && a.device == b.device &&
         a.size(1) == b.size(1) && a.is_contiguous() && b.is_contiguous() &&
         static_cast<const char*>(a.data) + a.numel() * static_cast<int64_t>(dtype_size(a.dtype)) == b.data;
}
}  // namespace

void Model::decode_body(InferenceState& st) {
  const ModelConfig& c = cfg_;
  const int64_t B = st.batch;
  const DType a = act_dtype_, sd = stat_dtype(a);
  const int64_t D = c.d_model;
  int32_t* io = static_cast<int32_t*>(st.small.data());
  Tensor start(io, DType::I32, device_, {B});
  Tensor len(io + B, DType::I32, device_, {B});
  Tensor pos(io + 2 * B, DType::I32, device_, {B, 1});
  Tensor ids(io + 3 * B, DType::I32, device_, {B});
  Arena& scratch = st.scratch;
  scratch.reset();
  Tensor x = scratch.alloc(a, {B, D});
  Tensor xn = scratch.alloc(a, {B, D});
  Tensor out = scratch.alloc(a, {B, D});
  Tensor rstd = scratch.alloc(sd, {B});
  embedding_forward(ids, Wg("backbone.embeddings.weight"), x);
  // Each layer's residual add is fused with the next norm (the final one after the last layer):
  // xn always holds the norm of the current residual stream x.
  const size_t L = kinds_.size();
  rmsnorm_forward(x, L > 0 ? W(0, "norm.weight") : Wg("backbone.norm_f.weight"), c.norm_eps, xn, rstd);
  for (size_t li = 0; li < L; ++li) {
    const int l = static_cast<int>(li);
    LayerState& s = st.layers[li];
    size_t mark = scratch.mark();
    switch (kinds_[li]) {
      case LayerKind::Mamba: {
        const int64_t Di = c.d_inner(), Cd = c.conv_dim();
        Tensor zx = scratch.alloc(a, {B, c.in_proj_dim()});
        linear_forward(xn, W(l, "mixer.in_proj.weight"), W(l, "mixer.in_proj.bias"), zx);
        // Conv update, state update and gated norm: one fused kernel on CUDA where the shape allows.
        MambaStepParams p = mamba_step_params(c);
        p.zx = zx;
        p.conv_w = conv2d_view(W(l, "mixer.conv1d.weight"));
        p.conv_b = W(l, "mixer.conv1d.bias");
        p.A_log = W(l, "mixer.A_log");
        p.D = W(l, "mixer.D");
        p.dt_bias = W(l, "mixer.dt_bias");
        p.norm_w = W(l, "mixer.norm.weight");
        MambaStepWork work{scratch.alloc(a, {B, Cd}), scratch.alloc(a, {B, Di}),
                           scratch.alloc(sd, {B, Di / c.norm_group_size()})};
        Tensor yn = scratch.alloc(a, {B, Di});
        mamba_step(p, s.conv, s.ssm, work, yn);
        linear_forward(yn, W(l, "mixer.out_proj.weight"), W(l, "mixer.out_proj.bias"), out);
        break;
      }
      case LayerKind::Attention: {
        const int64_t E = c.head_dim(), Q = c.attn_heads * E, KV = c.kv_heads * E;
        const Tensor wq = W(l, "mixer.q_proj.weight"), wk = W(l, "mixer.k_proj.weight"),
                     wv = W(l, "mixer.v_proj.weight");
        const Tensor bq = W(l, "mixer.q_proj.bias"), bk = W(l, "mixer.k_proj.bias"), bv = W(l, "mixer.v_proj.bias");
        Tensor q3, k3, v3;  // [B,Hq,E], [B,Hkv,E], [B,Hkv,E]
        if (!c.rope && !bq.defined() && !bk.defined() && !bv.defined() && follows(wq, wk) && follows(wk, wv)) {
          // The three weights lie back to back in the arena: one [Q+2KV, D] product instead of three
          // launches (k and v alone are too small to stream the weights at full bandwidth).
          Tensor qkv = scratch.alloc(a, {B, Q + 2 * KV});
          linear_forward(xn, Tensor(wq.data, wq.dtype, device_, {Q + 2 * KV, D}), Tensor{}, qkv);
          q3 = qkv.slice(1, 0, Q).split_last({c.attn_heads, E});
          k3 = qkv.slice(1, Q, KV).split_last({c.kv_heads, E});
          v3 = qkv.slice(1, Q + KV, KV).split_last({c.kv_heads, E});
        } else {
          Tensor q = scratch.alloc(a, {B, 1, c.attn_heads, E});
          Tensor k = scratch.alloc(a, {B, 1, c.kv_heads, E});
          Tensor v = scratch.alloc(a, {B, 1, c.kv_heads, E});
          linear_forward(xn, wq, bq, q.reshape({B, -1}));
          linear_forward(xn, wk, bk, k.reshape({B, -1}));
          linear_forward(xn, wv, bv, v.reshape({B, -1}));
          if (c.rope) {
            rope_apply(q, pos, c.rope_theta, c.rope_dim(), false);
            rope_apply(k, pos, c.rope_theta, c.rope_dim(), false);
          }
          q3 = q.reshape({B, c.attn_heads, E});
          k3 = k.reshape({B, c.kv_heads, E});
          v3 = v.reshape({B, c.kv_heads, E});
        }
        kv_cache_write(k3, s.k_cache, len);
        kv_cache_write(v3, s.v_cache, len);
        Tensor att = scratch.alloc(a, {B, c.attn_heads, E});
        attention_decode(q3, s.k_cache, s.v_cache, start, len,
                         static_cast<float>(1.0 / std::sqrt(static_cast<double>(E))), att);
        linear_forward(att.reshape({B, -1}), W(l, "mixer.o_proj.weight"), W(l, "mixer.o_proj.bias"), out);
        break;
      }
      case LayerKind::Mlp: {
        Tensor act = scratch.alloc(a, {B, c.mlp_hidden});
        if (c.mlp_activation == Activation::SwiGlu) {
          Tensor up = scratch.alloc(a, {B, activation_input_width(c.mlp_activation, c.mlp_hidden)});
          linear_forward(xn, W(l, "mixer.up_proj.weight"), W(l, "mixer.up_proj.bias"), up);
          activation_forward(c.mlp_activation, up, act);
        } else {  // elementwise: in the up projection's epilogue where the backend can
          linear_act_forward(xn, W(l, "mixer.up_proj.weight"), W(l, "mixer.up_proj.bias"), c.mlp_activation, act);
        }
        linear_forward(act, W(l, "mixer.down_proj.weight"), W(l, "mixer.down_proj.bias"), out);
        break;
      }
    }
    residual_rmsnorm_forward(x, out, li + 1 < L ? W(l + 1, "norm.weight") : Wg("backbone.norm_f.weight"),
                             c.norm_eps, xn, rstd);
    scratch.release_to(mark);
  }
  st.logits = scratch.alloc(a, {B, c.vocab_size});
  Tensor head = c.tie_embeddings ? Wg("backbone.embeddings.weight") : Wg("lm_head.weight");
  linear_forward(xn, head, Tensor{}, st.logits);
}

}  // namespace hlm
