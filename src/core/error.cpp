// Error type implementation.
#include "core/error.h"

namespace hlm {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::InvalidArgument: return "invalid argument";
    case ErrorKind::Io: return "I/O error";
    case ErrorKind::Format: return "format error";
    case ErrorKind::Unsupported: return "unsupported";
    case ErrorKind::Internal: return "internal error";
    case ErrorKind::Cuda: return "CUDA error";
  }
  return "error";
}

Error::Error(ErrorKind kind, std::string message)
    : std::runtime_error(message), kind_(kind), message_(std::move(message)) {}

Error& Error::add_context(const std::string& context) {
  message_ = context + ": " + message_;
  return *this;
}

}  // namespace hlm
