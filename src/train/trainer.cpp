// The training loop.
#include "train/trainer.h"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/file.h"
#include "io/indexed_dataset.h"
#include "io/json.h"
#include "ops/elementwise.h"
#include "ops/loss.h"
#include "train/checkpoint.h"
#include "train/data_loader.h"

namespace hlm {

namespace {

using Clock = std::chrono::steady_clock;

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return fmt::format("{}h{:02}m", t / 3600, (t % 3600) / 60);
  if (t >= 60) return fmt::format("{}m{:02}s", t / 60, t % 60);
  return fmt::format("{}s", t);
}

std::string format_rate(double tps) {
  if (tps >= 1e6) return fmt::format("{:.2f}M", tps / 1e6);
  if (tps >= 1e3) return fmt::format("{:.1f}k", tps / 1e3);
  return fmt::format("{:.0f}", tps);
}

// Device copies of one micro-batch: ids, targets, doc ids and positions, each [B,T] I32.
struct DeviceBatch {
  Buffer buf;
  ModelInput in;
  std::vector<int32_t> ids, targets, docs, pos;
  void load(const Batch& b, Device dev, bool need_pos) {
    b.split(ids, targets, docs);
    const int64_t n = b.B * b.T;
    if (!buf.data() || buf.size() < static_cast<size_t>(4 * n) * sizeof(int32_t))
      buf = Buffer(dev, static_cast<size_t>(4 * n) * sizeof(int32_t));
    int32_t* base = static_cast<int32_t*>(buf.data());
    device_copy(base, dev, ids.data(), Device::CPU, ids.size() * sizeof(int32_t));
    device_copy(base + n, dev, targets.data(), Device::CPU, targets.size() * sizeof(int32_t));
    device_copy(base + 2 * n, dev, docs.data(), Device::CPU, docs.size() * sizeof(int32_t));
    in = ModelInput{};
    in.ids = Tensor(base, DType::I32, dev, {b.B, b.T});
    in.targets = Tensor(base + n, DType::I32, dev, {b.B, b.T});
    in.doc = Tensor(base + 2 * n, DType::I32, dev, {b.B, b.T});
    if (need_pos) {
      pos = positions_from_docs(docs.data(), b.B, b.T);
      device_copy(base + 3 * n, dev, pos.data(), Device::CPU, pos.size() * sizeof(int32_t));
      in.pos = Tensor(base + 3 * n, DType::I32, dev, {b.B, b.T});
    }
  }
};

}  // namespace

struct Trainer::Impl {
  Model& model;
  const IndexedDataset& train;
  const IndexedDataset* val;
  TrainOptions opt;
  AdamW adamw;
  DataLoader loader;
  DeviceBatch dbatch;
  Batch batch;
  std::string metrics_path;
  bool tty = false;

  Impl(Model& m, const IndexedDataset& t, const IndexedDataset* v, TrainOptions o)
      : model(m),
        train(t),
        val(v),
        opt(std::move(o)),
        adamw(m.table(), m.device(), m.master_dtype(), opt.adamw),
        loader(t, opt.batch, opt.seq_len, opt.seed, /*shuffle=*/true) {
    HLM_CHECK_ARG(opt.steps > 0, "--steps must be positive (got {})", opt.steps);
    HLM_CHECK_ARG(opt.batch > 0 && opt.seq_len > 0 && opt.grad_accum > 0,
                  "--batch, --seq-len and --grad-accum must be positive");
    HLM_CHECK_ARG(opt.clip >= 0, "--clip must be >= 0 (got {})", opt.clip);
    HLM_CHECK_ARG(opt.keep_last >= 1, "--keep must be >= 1 (got {})", opt.keep_last);
    HLM_CHECK_ARG(!opt.out_dir.empty(), "--out is required");
    metrics_path = opt.out_dir + "/metrics.jsonl";
    tty = !opt.quiet && isatty(STDERR_FILENO);
  }

  bool need_pos() const { return model.config().rope && model.config().count(LayerKind::Attention) > 0; }

  double evaluate() {
    if (!val) return -1;
    EvalLoader ev(*val, opt.batch, opt.seq_len, opt.eval_rows);
    double sum = 0;
    int64_t count = 0;
    Batch b;
    DeviceBatch db;
    while (ev.next(b)) {
      db.load(b, model.device(), need_pos());
      double loss = model.forward(db.in);
      sum += loss * static_cast<double>(model.target_count());
      count += model.target_count();
    }
    return count ? sum / static_cast<double>(count) : -1;
  }

  void append_metrics(const nlohmann::json& j) {
    std::ofstream f(metrics_path, std::ios::app);
    HLM_REQUIRE(f.good(), ErrorKind::Io, "{}: cannot append metrics", metrics_path);
    f << j.dump() << "\n";
    HLM_REQUIRE(f.good(), ErrorKind::Io, "{}: write failed", metrics_path);
  }

  // On resume, metrics past the checkpoint's step came from the lost part of the run: drop them.
  void truncate_metrics(int64_t step) {
    std::ifstream in(metrics_path);
    if (!in.good()) return;
    std::string line, kept;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.contains("step") || j["step"].get<int64_t>() > step) continue;
      kept += line + "\n";
    }
    write_file_atomic(metrics_path, kept);
  }

  void save(int64_t step, double last_loss) {
    nlohmann::json state;
    state["step"] = step;
    state["loader"] = loader.state();
    state["last_loss"] = last_loss;
    state["options"] = {{"batch", opt.batch},
                        {"seq_len", opt.seq_len},
                        {"grad_accum", opt.grad_accum},
                        {"steps", opt.steps},
                        {"seed", opt.seed},
                        {"lr", opt.schedule.max_lr},
                        {"min_lr", opt.schedule.min_lr},
                        {"warmup", opt.schedule.warmup_steps},
                        {"schedule", LrSchedule::kind_name(opt.schedule.kind)}};
    std::string dir = save_training_checkpoint(opt.out_dir, step, model, adamw, state, opt.extra_files);
    prune_checkpoints(opt.out_dir, opt.keep_last);
    if (!opt.quiet) fmt::print(stderr, "{}saved {}\n", tty ? "\r\033[K" : "", dir);
  }

  int64_t resume() {
    std::string dir = latest_checkpoint(opt.out_dir);
    HLM_REQUIRE(!dir.empty(), ErrorKind::InvalidArgument,
                "--resume: no checkpoint under {}/checkpoints", opt.out_dir);
    nlohmann::json state = load_training_checkpoint(dir, model, adamw);
    const auto& o = state.at("options");
    HLM_CHECK_ARG(o.at("batch").get<int64_t>() == opt.batch && o.at("seq_len").get<int64_t>() == opt.seq_len &&
                      o.at("grad_accum").get<int64_t>() == opt.grad_accum,
                  "--resume: the checkpoint was trained with batch {} seq-len {} grad-accum {}; "
                  "resume with the same values",
                  o.at("batch").get<int64_t>(), o.at("seq_len").get<int64_t>(), o.at("grad_accum").get<int64_t>());
    LoaderState ls;
    from_json(state.at("loader"), ls);
    loader.restore(ls);
    int64_t step = state.at("step").get<int64_t>();
    truncate_metrics(step);
    if (!opt.quiet) fmt::print(stderr, "resumed from {} (step {})\n", dir, step);
    return step;
  }

  TrainSummary run() {
    make_dirs(opt.out_dir);
    int64_t step = 0;
    if (opt.resume) {
      step = resume();
    } else {
      write_file_atomic(metrics_path, std::string());
      if (val && opt.eval_every > 0) {  // where the curve starts: the untrained model (≈ ln V)
        const double vl = evaluate();
        append_metrics({{"step", 0}, {"val_loss", vl}, {"val_ppl", std::exp(vl)}});
        if (!opt.quiet) fmt::print(stderr, "eval step 0: val loss {:.4f} | ppl {:.1f}\n", vl, std::exp(vl));
      }
    }
    const int64_t tokens_per_step = opt.batch * opt.seq_len * opt.grad_accum;
    TrainSummary sum;
    auto t_start = Clock::now();
    double window_tokens = 0, window_seconds = 0, last_loss = 0;
    int64_t first_step = step;
    while (step < opt.steps) {
      auto t0 = Clock::now();
      model.zero_grads();
      double loss = 0;
      for (int64_t micro = 0; micro < opt.grad_accum; ++micro) {
        loader.next(batch);
        dbatch.load(batch, model.device(), need_pos());
        loss += model.forward(dbatch.in) / static_cast<double>(opt.grad_accum);
        model.backward(1.0f / static_cast<float>(opt.grad_accum));
      }
      double gnorm = std::sqrt(sum_squares(model.grads()));
      HLM_REQUIRE(std::isfinite(loss) && std::isfinite(gnorm), ErrorKind::InvalidArgument,
                  "step {}: loss {} / gradient norm {} is not finite (lower --lr?)", step + 1, loss, gnorm);
      double scale = (opt.clip > 0 && gnorm > opt.clip) ? opt.clip / gnorm : 1.0;
      double lr = opt.schedule.at(step + 1);
      adamw.step(model.params(), model.grads(), model.params_lowp(), lr, scale);
      device_synchronize(model.device());
      ++step;
      last_loss = loss;
      double dt = std::chrono::duration<double>(Clock::now() - t0).count();
      window_tokens += static_cast<double>(tokens_per_step);
      window_seconds += dt;
      double tps = window_tokens / std::max(window_seconds, 1e-9);
      double elapsed = std::chrono::duration<double>(Clock::now() - t_start).count();
      double eta = elapsed / static_cast<double>(step - first_step) * static_cast<double>(opt.steps - step);
      append_metrics({{"step", step}, {"loss", loss}, {"lr", lr}, {"grad_norm", gnorm},
                      {"tokens_per_s", tps}, {"elapsed_s", elapsed}});
      if (!opt.quiet) {
        std::string line = fmt::format("step {}/{} | loss {:.4f} | lr {:.2e} | gnorm {:.2f} | {} tok/s | ETA {}",
                                       step, opt.steps, loss, lr, gnorm, format_rate(tps), format_duration(eta));
        if (tty)
          fmt::print(stderr, "\r\033[K{}", line);
        if (step % std::max<int64_t>(opt.log_every, 1) == 0 || step == opt.steps)
          fmt::print(stderr, "{}{}\n", tty ? "\r\033[K" : "", line);
      }
      const bool interrupted = opt.interrupted && opt.interrupted->load();
      bool last = step == opt.steps || step == opt.stop_at || interrupted;
      if (val && !interrupted && ((opt.eval_every > 0 && step % opt.eval_every == 0) || last)) {
        double vl = evaluate();
        sum.last_val_loss = vl;
        append_metrics({{"step", step}, {"val_loss", vl}, {"val_ppl", std::exp(vl)}});
        if (!opt.quiet)
          fmt::print(stderr, "{}eval step {}: val loss {:.4f} | ppl {:.1f}\n", tty ? "\r\033[K" : "", step, vl,
                     std::exp(vl));
      }
      if ((opt.save_every > 0 && step % opt.save_every == 0) || last) save(step, loss);
      if (step == opt.stop_at || interrupted) break;
      if (step == first_step + 1) {  // the first step includes warm-up costs: restart the window
        window_tokens = 0;
        window_seconds = 0;
      }
    }
    sum.steps_done = step;
    sum.last_loss = last_loss;
    sum.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
    sum.tokens_per_second = window_tokens / std::max(window_seconds, 1e-9);
    return sum;
  }
};

Trainer::Trainer(Model& model, const IndexedDataset& train, const IndexedDataset* val, TrainOptions opt)
    : impl_(std::make_unique<Impl>(model, train, val, std::move(opt))) {}
Trainer::~Trainer() = default;
TrainSummary Trainer::run() { return impl_->run(); }
double Trainer::evaluate() { return impl_->evaluate(); }

}  // namespace hlm
