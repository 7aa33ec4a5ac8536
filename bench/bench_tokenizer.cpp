// Tokenizer throughput on a corpus of text files (default: the SOTU speeches), one thread and with
// OpenMP threads over documents; a fresh tokenizer per run (cold word cache) and a warm rerun.
//   bench_tokenizer [TOKENIZER_JSON] [CORPUS_DIR] [RUNS]
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "io/tokenizer.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct Timing {
  double wall, cpu;
};

// Encodes every document with `threads` threads; wall and CPU seconds (the machine is shared, so
// CPU time is the steadier measure), and the token count.
Timing encode_all(const hlm::Tokenizer& tok, const std::vector<std::string>& docs, int threads,
                  int64_t* tokens) {
  int64_t total = 0;
  double c0 = process_cpu_seconds();
  auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) reduction(+ : total)
  for (size_t i = 0; i < docs.size(); ++i)
    total += static_cast<int64_t>(tok.encode(docs[i]).size());
  Timing t{seconds_since(t0), process_cpu_seconds() - c0};
  *tokens = total;
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  std::string tok_path = argc > 1 ? argv[1] : "data/20B_tokenizer.json";
  std::string dir = argc > 2 ? argv[2] : "data/sotu";
  int runs = argc > 3 ? std::stoi(argv[3]) : 5;
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  std::vector<std::string> docs;
  size_t bytes = 0;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    docs.push_back(ss.str());
    bytes += docs.back().size();
  }
  double mb = static_cast<double>(bytes) / 1e6;
  fmt::print("corpus: {} documents, {:.2f} MB from {}; tokenizer {}; {} runs, median\n",
             docs.size(), mb, dir, tok_path, runs);

  auto t0 = std::chrono::steady_clock::now();
  hlm::Tokenizer warm = hlm::Tokenizer::load(tok_path);
  fmt::print("load tokenizer.json: {:.3f} s\n", seconds_since(t0));

  int max_threads = omp_get_max_threads();
  std::vector<int> thread_counts = {1};
  if (max_threads > 1) thread_counts.push_back(max_threads);
  for (int threads : thread_counts) {
    std::vector<double> cold, hot, cold_cpu, hot_cpu;
    int64_t tokens = 0;
    for (int r = 0; r < runs; ++r) {
      hlm::Tokenizer fresh = hlm::Tokenizer::load(tok_path);
      Timing c = encode_all(fresh, docs, threads, &tokens);
      Timing h = encode_all(fresh, docs, threads, &tokens);
      cold.push_back(c.wall);
      cold_cpu.push_back(c.cpu);
      hot.push_back(h.wall);
      hot_cpu.push_back(h.cpu);
    }
    double c = median(cold), h = median(hot), cc = median(cold_cpu), hc = median(hot_cpu);
    fmt::print(
        "threads {}: {} tokens ({:.2f} bytes/token)\n"
        "  cold word cache: wall {:.3f} s = {:.1f} MB/s, CPU {:.3f} s = {:.1f} MB per CPU-second\n"
        "  warm word cache: wall {:.3f} s = {:.1f} MB/s, CPU {:.3f} s = {:.1f} MB per CPU-second\n",
        threads, tokens, static_cast<double>(bytes) / static_cast<double>(tokens), c, mb / c, cc,
        mb / cc, h, mb / h, hc, mb / hc);
  }
  return 0;
}
