// Whole-file reads and atomic writes.
#include "io/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace hlm {

namespace {
std::string errno_text(int e) { return std::strerror(e); }
}  // namespace

std::string read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorKind::Io, "{}: cannot open: {}", path, errno_text(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    int e = errno;
    ::close(fd);
    fail(ErrorKind::Io, "{}: not a regular file{}", path, e ? ": " + errno_text(e) : "");
  }
  std::string out;
  out.resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      ::close(fd);
      fail(ErrorKind::Io, "{}: read failed after {} of {} bytes{}", path, got, out.size(),
           n < 0 ? ": " + errno_text(e) : "");
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  return out;
}

void write_all(int fd, const void* data, size_t bytes, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    // Linux writes at most ~2 GiB per call.
    size_t chunk = bytes < (size_t{1} << 30) ? bytes : (size_t{1} << 30);
    ssize_t n = ::write(fd, p, chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail(ErrorKind::Io, "{}: write failed: {}", what, errno_text(n < 0 ? errno : EIO));
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void fsync_fd(int fd, const std::string& what) {
  if (::fsync(fd) != 0) fail(ErrorKind::Io, "{}: fsync failed: {}", what, errno_text(errno));
}

std::string parent_dir(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail(ErrorKind::Io, "{}: cannot open folder to fsync: {}", dir, errno_text(errno));
  int rc = ::fsync(fd);
  int e = errno;
  ::close(fd);
  // Some file systems refuse fsync on folders (EINVAL); the rename is still done.
  if (rc != 0 && e != EINVAL) fail(ErrorKind::Io, "{}: fsync of folder failed: {}", dir, errno_text(e));
}

void write_file_atomic(const std::string& path, const std::function<void(int fd)>& write) {
  std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(ErrorKind::Io, "{}: cannot create temp file {}: {}", path, tmp, errno_text(errno));
  try {
    write(fd);
    fsync_fd(fd, tmp);
    if (::close(fd) != 0) {
      fd = -1;
      fail(ErrorKind::Io, "{}: close failed: {}", tmp, errno_text(errno));
    }
    fd = -1;
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      fail(ErrorKind::Io, "{}: cannot rename {} over it: {}", path, tmp, errno_text(errno));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_dir(parent_dir(path));
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  write_file_atomic(path, [&](int fd) { write_all(fd, contents.data(), contents.size(), path); });
}

}  // namespace hlm
