// `hybridlm train`: a model from a pattern and sizes (or a config.json, or an existing checkpoint
// to fine-tune), trained on a preprocessed dataset with periodic evaluation and checkpoints.
#include <fmt/format.h>

#include <atomic>
#include <csignal>
#include <filesystem>

#include "cli/commands.h"
#include "cli/common.h"
#include "io/indexed_dataset.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"
#include "model/hf_config.h"
#include "train/trainer.h"

namespace hlm::cli {

namespace {

struct Flags {
  std::string data, val_data, out, config, init_from, tokenizer;
  // model shape (when no --config / --init-from)
  std::string pattern = "M-M*-M-";
  int64_t vocab = 0, d_model = 128, mamba_heads = 4, mamba_head_dim = 64, d_state = 32, groups = 1;
  int64_t attn_heads = 4, kv_heads = 2, head_dim = 32, mlp = 512, chunk = 64, conv = 4;
  std::string mlp_act = "relu2";
  bool tie = false, rope = false, recompute = false;
  // training
  TrainOptions t;
  double lr = 3e-3, min_lr = 3e-4, decay_fraction = 0.2;
  int64_t warmup = 50;
  std::string schedule = "cosine";
  RuntimeFlags rt;
};

std::atomic<bool> g_interrupted{false};
extern "C" void on_signal(int) { g_interrupted = true; }

// Every token id of a dataset must index the model's vocabulary.
void check_token_range(const IndexedDataset& d, int64_t vocab) {
  int32_t worst = -1;
  std::vector<int32_t> buf;
  for (int64_t doc = 0; doc < d.num_documents(); ++doc) {
    buf.resize(static_cast<size_t>(d.document_length(doc)));
    d.read_document(doc, 0, d.document_length(doc), buf.data());
    for (int32_t t : buf) {
      HLM_CHECK_ARG(t >= 0, "{}: document {} holds a negative token id {}", d.prefix(), doc, t);
      worst = std::max(worst, t);
    }
  }
  HLM_CHECK_ARG(worst < vocab, "{}: holds token id {} but the model's vocabulary has {} ids (0..{})", d.prefix(),
                worst, vocab, vocab - 1);
}

ModelConfig build_config(const Flags& f) {
  if (!f.init_from.empty()) return load_checkpoint_config(resolve_model_dir(f.init_from));
  if (!f.config.empty()) return read_hf_config(f.config);
  ModelConfig c;
  c.pattern = f.pattern;
  std::string normal;
  for (char ch : f.pattern)
    if (ch != '|') normal += ch;
  parse_pattern(f.pattern);
  c.pattern = normal;
  c.vocab_size = f.vocab;
  c.d_model = f.d_model;
  c.mamba_heads = f.mamba_heads;
  c.mamba_head_dim = f.mamba_head_dim;
  c.ssm_state = f.d_state;
  c.n_groups = f.groups;
  c.conv_kernel = f.conv;
  c.chunk_size = f.chunk;
  c.attn_heads = f.attn_heads;
  c.kv_heads = f.kv_heads;
  c.attn_head_dim = f.head_dim;
  c.mlp_hidden = f.mlp;
  c.mlp_activation = activation_from_hf_name(f.mlp_act);
  c.tie_embeddings = f.tie;
  c.rope = f.rope;
  c.dt_limit_min = c.dt_min;  // NemotronH's clamp, so the checkpoint means the same in transformers
  return c;
}

void run(Flags f) {
  Device device = f.rt.apply();
  HLM_CHECK_ARG(!(f.config.size() && f.init_from.size()), "give --config or --init-from, not both");
  std::optional<Tokenizer> tok;
  if (!f.tokenizer.empty()) tok.emplace(Tokenizer::load(f.tokenizer));
  if (f.vocab == 0 && tok) f.vocab = tok->vocab_size();
  ModelConfig cfg = build_config(f);
  if (tok) {
    HLM_CHECK_ARG(tok->vocab_size() <= cfg.vocab_size, "tokenizer {} has {} ids but the model's vocabulary is {}",
                  f.tokenizer, tok->vocab_size(), cfg.vocab_size);
    if (auto eod = tok->eod_id()) cfg.eos_token_id = cfg.bos_token_id = *eod;
  }
  HLM_CHECK_ARG(cfg.vocab_size > 0, "the vocabulary size is unknown: pass --tokenizer FILE or --vocab N");
  cfg.validate();

  IndexedDataset train(f.data);
  std::unique_ptr<IndexedDataset> val;
  if (!f.val_data.empty()) val = std::make_unique<IndexedDataset>(f.val_data);
  check_token_range(train, cfg.vocab_size);
  if (val) check_token_range(*val, cfg.vocab_size);
  // Fail now, not at the first checkpoint, if the config cannot be written as an HF config.json.
  config_to_hf_json(cfg);

  Model model(cfg, device, device == Device::CPU ? DType::F32 : DType::BF16);
  if (!f.init_from.empty() && !f.t.resume) {
    std::string dir = resolve_model_dir(f.init_from);
    Buffer host(Device::CPU, model.params().nbytes());
    Tensor h = host.as(model.master_dtype(), {model.params().numel()});
    load_checkpoint_weights(dir, cfg, model.table(), h);
    copy_tensor(model.params(), h);
    model.sync_working_copy();
  } else {
    model.init_weights(f.t.seed);
  }
  model.set_recompute(f.recompute);
  int64_t n_params = param_arena_numel(model.table());
  fmt::print(stderr, "model: {}\nparameters: {:.2f}M ({:.2f}M without embeddings)\n", cfg.summary(),
             static_cast<double>(n_params) / 1e6,
             static_cast<double>(count_non_embedding_params(model.table())) / 1e6);
  fmt::print(stderr, "data: {} ({} documents, {} tokens){}\n", f.data, train.num_documents(), train.num_tokens(),
             val ? fmt::format("; validation {} ({} tokens)", f.val_data, val->num_tokens()) : std::string());

  f.t.schedule.kind = LrSchedule::parse_kind(f.schedule);
  f.t.schedule.max_lr = f.lr;
  f.t.schedule.min_lr = f.min_lr;
  f.t.schedule.warmup_steps = f.warmup;
  f.t.schedule.total_steps = f.t.steps;
  f.t.schedule.decay_fraction = f.decay_fraction;
  if (tok) f.t.extra_files.emplace_back(f.tokenizer, "tokenizer.json");
  f.t.interrupted = &g_interrupted;

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  Trainer trainer(model, train, val.get(), f.t);
  TrainSummary s = trainer.run();
  if (g_interrupted) {
    fmt::print(stderr, "interrupted at step {}: checkpoint saved, resume with --resume\n", s.steps_done);
    std::exit(130);
  }
  fmt::print(stderr, "done: {} steps in {:.1f} s, {:.0f} tokens/s, final loss {:.4f}{}\n", s.steps_done, s.seconds,
             s.tokens_per_second, s.last_loss,
             s.last_val_loss >= 0 ? fmt::format(", validation loss {:.4f}", s.last_val_loss) : std::string());
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto f = std::make_shared<Flags>();
  auto* cmd = app.add_subcommand("train", "Train (or fine-tune) a hybrid model on a preprocessed dataset");
  cmd->add_option("--data", f->data, "training dataset prefix (PREFIX.bin / PREFIX.idx from preprocess)")->required();
  cmd->add_option("--val-data", f->val_data, "validation dataset prefix");
  cmd->add_option("--out", f->out, "output folder: checkpoints/, metrics.jsonl")->required();
  cmd->add_option("--tokenizer", f->tokenizer, "tokenizer.json: sets the vocabulary and is saved with checkpoints");
  cmd->add_option("--config", f->config, "HF config.json (nemotron_h or mamba2) instead of the shape flags");
  cmd->add_option("--init-from", f->init_from, "fine-tune: start from this model folder's weights and config");
  cmd->add_option("--pattern", f->pattern, "layer pattern: M Mamba-2, * attention, - MLP");
  cmd->add_option("--vocab", f->vocab, "vocabulary size (default: the tokenizer's)")->check(CLI::Range(int64_t{1}, int64_t{1} << 24));
  auto pos = CLI::Range(int64_t{1}, int64_t{1} << 20);
  cmd->add_option("--d-model", f->d_model, "model width")->check(pos);
  cmd->add_option("--mamba-heads", f->mamba_heads, "Mamba-2 heads")->check(pos);
  cmd->add_option("--mamba-head-dim", f->mamba_head_dim, "Mamba-2 head dim")->check(pos);
  cmd->add_option("--d-state", f->d_state, "SSM state size")->check(pos);
  cmd->add_option("--groups", f->groups, "Mamba-2 B/C groups")->check(pos);
  cmd->add_option("--chunk", f->chunk, "SSD chunk size")->check(pos);
  cmd->add_option("--conv", f->conv, "conv kernel")->check(CLI::Range(1, 16));
  cmd->add_option("--attn-heads", f->attn_heads, "attention query heads")->check(pos);
  cmd->add_option("--kv-heads", f->kv_heads, "attention KV heads")->check(pos);
  cmd->add_option("--head-dim", f->head_dim, "attention head dim")->check(pos);
  cmd->add_option("--mlp", f->mlp, "MLP width")->check(pos);
  cmd->add_option("--mlp-act", f->mlp_act, "relu2, gelu, gelu_pytorch_tanh, silu, swiglu");
  cmd->add_flag("--tie", f->tie, "tie the LM head to the embeddings");
  cmd->add_flag("--rope", f->rope, "rotary position embedding in attention layers");
  cmd->add_option("--steps", f->t.steps, "optimizer steps")->check(pos);
  cmd->add_option("--batch", f->t.batch, "rows per micro-batch")->check(pos);
  cmd->add_option("--seq-len", f->t.seq_len, "tokens per row")->check(pos);
  cmd->add_option("--grad-accum", f->t.grad_accum, "micro-batches per step")->check(pos);
  cmd->add_option("--lr", f->lr, "peak learning rate")->check(CLI::Range(0.0, 10.0));
  cmd->add_option("--min-lr", f->min_lr, "final learning rate")->check(CLI::Range(0.0, 10.0));
  cmd->add_option("--warmup", f->warmup, "warmup steps")->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--schedule", f->schedule, "cosine, wsd or constant");
  cmd->add_option("--decay-fraction", f->decay_fraction, "WSD: fraction of steps spent decaying")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--weight-decay", f->t.adamw.weight_decay, "AdamW weight decay")->check(CLI::Range(0.0, 10.0));
  cmd->add_option("--beta1", f->t.adamw.beta1, "AdamW beta1")->check(CLI::Range(0.0, 0.9999999));
  cmd->add_option("--beta2", f->t.adamw.beta2, "AdamW beta2")->check(CLI::Range(0.0, 0.9999999));
  cmd->add_option("--clip", f->t.clip, "gradient-norm clip (0 = off)")->check(CLI::Range(0.0, 1e9));
  cmd->add_option("--eval-every", f->t.eval_every, "evaluate every N steps (0 = at the end)")->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--eval-rows", f->t.eval_rows, "validation rows per evaluation (0 = all)")->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--save-every", f->t.save_every, "checkpoint every N steps (0 = at the end)")->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--keep", f->t.keep_last, "checkpoints kept")->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--log-every", f->t.log_every, "print a progress line every N steps")->check(pos);
  cmd->add_option("--seed", f->t.seed, "initialisation and data-order seed");
  cmd->add_flag("--resume", f->t.resume, "continue from the newest checkpoint in --out");
  cmd->add_flag("--recompute", f->recompute,
                "long sequences: recompute each layer in the backward and chunk the LM head (less memory)");
  cmd->add_flag("--quiet", f->t.quiet, "no progress output");
  cmd->add_option("--stop-at", f->t.stop_at, "stop after this step as if interrupted (testing)")->group("");
  f->rt.add(cmd);
  cmd->callback([f] {
    f->t.out_dir = f->out;
    run(*f);
  });
}

}  // namespace hlm::cli
