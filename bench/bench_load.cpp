// Checkpoint loading speed: load_checkpoint_weights (mmap, validate, convert into the F32 arena)
// against one read(2) of the same file into a buffer, both with the file in the page cache.
// Target: the load within 2x of the read. Usage: bench_load [--dir D] [--runs N] [--keep]
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/memory.h"
#include "model/checkpoint.h"
#include "model/params.h"

namespace {

using namespace hlm;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// A Nemotron-H-shaped model: d_model 2048, Mamba 64x64 state 128 groups 8, attention 16/8x128,
// MLP 8192 relu2, vocab 32000 untied; the pattern sets the size.
ModelConfig bench_config(const std::string& pattern) {
  ModelConfig c;
  c.model_type = "nemotron_h";
  c.pattern = pattern;
  c.vocab_size = 32000;
  c.d_model = 2048;
  c.mamba_heads = 64;
  c.mamba_head_dim = 64;
  c.ssm_state = 128;
  c.n_groups = 8;
  c.dt_limit_min = c.dt_min;
  c.attn_heads = 16;
  c.kv_heads = 8;
  c.attn_head_dim = 128;
  c.mlp_hidden = 8192;
  c.validate();
  return c;
}

// read(2) of the whole file into `buf` (already allocated and touched).
double time_read(const std::string& path, std::vector<char>& buf) {
  auto t0 = Clock::now();
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail(ErrorKind::Io, "{}: cannot open", path);
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t n = ::read(fd, buf.data() + got, buf.size() - got);
    if (n <= 0) fail(ErrorKind::Io, "{}: read failed", path);
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  return seconds_since(t0);
}

struct Case {
  const char* what;
  std::string pattern;
  DType file_dtype;
};

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  int runs = 7;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--runs" && i + 1 < argc) runs = std::max(1, std::atoi(argv[++i]));
    else if (a == "--keep") keep = true;
    else {
      std::fprintf(stderr, "usage: bench_load [--dir D] [--runs N] [--keep]\n");
      return 2;
    }
  }
  try {
    std::string tmpl = (dir.empty() ? std::filesystem::temp_directory_path().string() : dir) + "/hlm-bench-load-XXXXXX";
    std::string root = ::mkdtemp(tmpl.data());
    const char* threads = std::getenv("OMP_NUM_THREADS");
    std::printf("checkpoint loading, %d runs each, warm page cache, OMP_NUM_THREADS=%s, %ld online CPUs\n", runs,
                threads ? threads : "(unset)", ::sysconf(_SC_NPROCESSORS_ONLN));
    std::printf("%-34s %9s %10s %10s %8s %9s\n", "case", "file MB", "read() ms", "load ms", "ratio", "load GB/s");
    const std::vector<Case> cases = {
        {"F32 file -> F32 arena", "M-M*-", DType::F32},
        {"BF16 file -> F32 arena", "M-M*-M-M*-M-", DType::BF16},
    };
    for (const auto& c : cases) {
      ModelConfig cfg = bench_config(c.pattern);
      auto table = param_table(cfg);
      const int64_t n = param_arena_numel(table);
      Buffer arena_buf(Device::CPU, static_cast<size_t>(n) * 4);
      Tensor arena = arena_buf.as(DType::F32, {n});
      // Cheap distinct values (the bytes do not matter for speed); touches every page.
      float* w = arena.ptr<float>();
#pragma omp parallel for
      for (int64_t i = 0; i < n; ++i) w[i] = static_cast<float>(static_cast<int32_t>(static_cast<uint32_t>(i) * 2654435761u)) * 1e-10f;
      std::string ck = root + "/" + (c.file_dtype == DType::F32 ? "f32" : "bf16");
      save_checkpoint(ck, cfg, table, arena, c.file_dtype);
      const std::string file = ck + "/model.safetensors";
      const size_t bytes = std::filesystem::file_size(file);
      std::vector<char> buf(bytes);
      std::memset(buf.data(), 1, buf.size());
      time_read(file, buf);  // warm the page cache
      load_checkpoint_weights(ck, cfg, table, arena);
      std::vector<double> t_read, t_load;
      for (int r = 0; r < runs; ++r) {
        t_read.push_back(time_read(file, buf));
        auto t0 = Clock::now();
        load_checkpoint_weights(ck, cfg, table, arena);
        t_load.push_back(seconds_since(t0));
      }
      const double mr = median(t_read), ml = median(t_load);
      std::printf("%-34s %9.1f %10.1f %10.1f %8.2f %9.2f\n", c.what, static_cast<double>(bytes) / 1e6, mr * 1e3,
                  ml * 1e3, ml / mr, static_cast<double>(bytes) / ml / 1e9);
      std::fflush(stdout);
      if (!keep) std::filesystem::remove_all(ck);
    }
    if (!keep) std::filesystem::remove_all(root);
    else std::printf("kept %s\n", root.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_load: %s\n", e.what());
    return 1;
  }
  return 0;
}
