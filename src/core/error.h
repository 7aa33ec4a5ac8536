// Typed errors that carry context: every failure a user can cause ends in one message that names
// the thing and the reason ("ckpt/model.safetensors: tensor 'x': shape [3,4] but expected [4,3]").
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace hlm {

enum class ErrorKind {
  InvalidArgument,  // a flag, a shape, a config value that does not add up
  Io,               // a file that cannot be opened, read or written
  Format,           // a file whose contents are truncated or malformed
  Unsupported,      // valid input asking for something not built yet
  Internal,         // a broken invariant inside hybridlm
  Cuda,             // a CUDA / cuBLAS / cuDNN call failed
};

const char* error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string message);
  ErrorKind kind() const { return kind_; }
  // Prefixes the message with "context: " (outermost context ends up first).
  Error& add_context(const std::string& context);
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  ErrorKind kind_;
  std::string message_;
};

template <typename... Args>
[[noreturn]] void fail(ErrorKind kind, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(kind, fmt::format(format, std::forward<Args>(args)...));
}

// Runs f(); if it throws hlm::Error, prefixes the message with the context and rethrows.
template <typename F>
decltype(auto) with_context(const std::string& context, F&& f) {
  try {
    return f();
  } catch (Error& e) {
    e.add_context(context);
    throw;
  }
}

}  // namespace hlm

// Checks for bad input: throws hlm::Error of the given kind with a formatted message.
#define HLM_REQUIRE(cond, kind, ...)                 \
  do {                                               \
    if (!(cond)) ::hlm::fail(kind, __VA_ARGS__);     \
  } while (0)

// Checks an invariant that only a bug in hybridlm can break.
#define HLM_ASSERT(cond)                                                                  \
  do {                                                                                    \
    if (!(cond))                                                                          \
      ::hlm::fail(::hlm::ErrorKind::Internal, "internal check failed: {} ({}:{})", #cond, \
                  __FILE__, __LINE__);                                                    \
  } while (0)

#define HLM_CHECK_ARG(cond, ...) HLM_REQUIRE(cond, ::hlm::ErrorKind::InvalidArgument, __VA_ARGS__)
