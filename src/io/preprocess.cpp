// Text / JSONL -> indexed dataset. Read a batch of documents in order, tokenize it on all workers,
// append it in order; the writer's temp files are renamed only when everything has gone through.
#include "io/preprocess.h"

#include <glob.h>
#include <omp.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "core/error.h"

namespace hlm {

namespace fs = std::filesystem;

namespace {

bool has_glob_chars(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

bool is_jsonl(const std::string& path) { return fs::path(path).extension() == ".jsonl"; }

struct Document {
  std::string text;
  std::string origin;  // "file" or "file:line", for errors
};

// Yields the documents of the inputs in order.
class DocumentReader {
 public:
  DocumentReader(std::vector<std::string> files, std::string key)
      : files_(std::move(files)), key_(std::move(key)) {}

  // Next document, or nullopt at the end; *bytes grows by the input bytes consumed.
  std::optional<Document> next(int64_t* bytes) {
    while (file_ < files_.size()) {
      const std::string& path = files_[file_];
      if (!is_jsonl(path)) {
        ++file_;
        std::ifstream in(path, std::ios::binary);
        if (!in) fail(ErrorKind::Io, "{}: cannot open: {}", path, std::strerror(errno));
        std::ostringstream ss;
        ss << in.rdbuf();
        if (in.bad()) fail(ErrorKind::Io, "{}: read error", path);
        Document d{ss.str(), path};
        *bytes += static_cast<int64_t>(d.text.size());
        check_utf8(d.text, path);
        return d;
      }
      if (!jsonl_) {
        jsonl_.emplace(path, std::ios::binary);
        line_ = 0;
        if (!*jsonl_) fail(ErrorKind::Io, "{}: cannot open: {}", path, std::strerror(errno));
      }
      std::string line;
      while (std::getline(*jsonl_, line)) {
        ++line_;
        *bytes += static_cast<int64_t>(line.size()) + 1;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        std::string where = fmt::format("{}:{}", path, line_);
        nlohmann::json j;
        try {
          j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::parse_error& e) {
          fail(ErrorKind::Format, "{}: invalid JSON: {}", where, e.what());
        }
        if (!j.is_object())
          fail(ErrorKind::Format, "{}: expected a JSON object, got {}", where, j.type_name());
        auto it = j.find(key_);
        if (it == j.end()) fail(ErrorKind::Format, "{}: no key '{}'", where, key_);
        if (!it->is_string())
          fail(ErrorKind::Format, "{}: '{}' is a {}, not a string", where, key_, it->type_name());
        return Document{it->get<std::string>(), where};
      }
      if (jsonl_->bad()) fail(ErrorKind::Io, "{}: read error", path);
      jsonl_.reset();
      ++file_;
    }
    return std::nullopt;
  }

 private:
  static void check_utf8(const std::string& text, const std::string& path) {
    size_t bad = 0;
    if (!is_valid_utf8(text, &bad)) {
      int64_t line =
          1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(bad), '\n');
      fail(ErrorKind::Format, "{}:{}: invalid UTF-8 (byte offset {})", path, line, bad);
    }
  }
  std::vector<std::string> files_;
  std::string key_;
  size_t file_ = 0;
  std::optional<std::ifstream> jsonl_;
  int64_t line_ = 0;
};

}  // namespace

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const std::string& in : inputs) {
    std::error_code ec;
    if (fs::is_directory(in, ec)) {
      std::vector<std::string> found;
      fs::recursive_directory_iterator it(in, ec), end;
      for (; !ec && it != end; it.increment(ec)) {
        bool hidden = it->path().filename().string().starts_with(".");
        if (hidden && it->is_directory()) it.disable_recursion_pending();
        if (!hidden && it->is_regular_file()) found.push_back(it->path().string());
      }
      if (ec) fail(ErrorKind::Io, "{}: cannot list directory: {}", in, ec.message());
      std::sort(found.begin(), found.end());
      if (found.empty()) fail(ErrorKind::InvalidArgument, "input {}: directory has no files", in);
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::exists(in, ec)) {
      files.push_back(in);
    } else if (has_glob_chars(in)) {
      glob_t g{};
      int rc = ::glob(in.c_str(), 0, nullptr, &g);
      if (rc != 0) {
        ::globfree(&g);
        fail(ErrorKind::InvalidArgument, "input {}: pattern matches no file", in);
      }
      std::vector<std::string> found(g.gl_pathv, g.gl_pathv + g.gl_pathc);
      ::globfree(&g);
      std::sort(found.begin(), found.end());
      for (const auto& f : found) {
        if (!fs::is_directory(f, ec)) files.push_back(f);
      }
    } else {
      fail(ErrorKind::Io, "input {}: no such file or directory", in);
    }
  }
  if (files.empty()) fail(ErrorKind::InvalidArgument, "no input files");
  return files;
}

PreprocessStats preprocess(const Tokenizer& tokenizer, const PreprocessOptions& options,
                           const PreprocessHooks& hooks) {
  auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  HLM_CHECK_ARG(!options.output_prefix.empty(), "preprocess: an output prefix is required");
  std::vector<std::string> files = expand_inputs(options.inputs);

  PreprocessStats stats;
  if (options.append_eod) {
    std::optional<int32_t> eod = tokenizer.eod_id();
    if (!eod) {
      fail(ErrorKind::InvalidArgument,
           "{}: no <|endoftext|> token to end documents with (use --no-eod)", tokenizer.name());
    }
    stats.eod = *eod;
  }
  stats.dtype = token_dtype_for_vocab(tokenizer.vocab_size());

  PreprocessProgress progress;
  for (const auto& f : files) {
    std::error_code ec;
    auto size = fs::file_size(f, ec);
    if (!ec) progress.total_bytes += static_cast<int64_t>(size);
  }

  fs::path parent = fs::path(options.output_prefix).parent_path();
  if (!parent.empty() && !fs::is_directory(parent)) {
    fail(ErrorKind::Io, "output prefix {}: directory {} does not exist", options.output_prefix,
         parent.string());
  }
  IndexedDatasetWriter writer(options.output_prefix, stats.dtype);
  if (hooks.on_writer_open) hooks.on_writer_open(writer);

  const int workers = options.workers > 0 ? options.workers : omp_get_max_threads();
  constexpr size_t kBatchBytes = 4 << 20, kBatchDocs = 4096;
  DocumentReader reader(files, options.jsonl_key);
  std::vector<Document> batch;
  std::vector<std::vector<int32_t>> ids;
  bool more = true;
  while (more) {
    batch.clear();
    size_t batch_bytes = 0;
    while (batch.size() < kBatchDocs && batch_bytes < kBatchBytes) {
      std::optional<Document> d = reader.next(&progress.bytes);
      if (!d) {
        more = false;
        break;
      }
      if (d->text.empty()) {
        ++stats.empty_skipped;
        continue;
      }
      batch_bytes += d->text.size();
      stats.bytes += static_cast<int64_t>(d->text.size());
      batch.push_back(std::move(*d));
    }
    ids.resize(batch.size());
    std::vector<std::exception_ptr> errors(batch.size());
    const int64_t n = static_cast<int64_t>(batch.size());
#pragma omp parallel for num_threads(workers) schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) {
      const size_t k = static_cast<size_t>(i);
      try {
        ids[k].clear();
        with_context(batch[k].origin, [&] { tokenizer.encode_append(batch[k].text, ids[k]); });
      } catch (...) {
        errors[k] = std::current_exception();
      }
    }
    for (size_t k = 0; k < batch.size(); ++k) {
      if (errors[k]) std::rethrow_exception(errors[k]);
      if (options.append_eod) ids[k].push_back(stats.eod);
      writer.add_document(ids[k]);
      stats.tokens += static_cast<int64_t>(ids[k].size());
      ++stats.documents;
    }
    progress.documents = stats.documents;
    progress.seconds = elapsed();
    if (hooks.on_progress) hooks.on_progress(progress);
  }
  if (stats.documents == 0) {
    fail(ErrorKind::InvalidArgument, "no documents with text in the inputs ({} files)",
         files.size());
  }

  if (hooks.on_commit_begin) hooks.on_commit_begin();
  try {
    writer.finish();
  } catch (...) {
    if (hooks.on_commit_end) hooks.on_commit_end();
    throw;
  }
  if (hooks.on_commit_end) hooks.on_commit_end();
  stats.seconds = elapsed();
  return stats;
}

}  // namespace hlm
