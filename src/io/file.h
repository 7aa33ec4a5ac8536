// Whole-file reads and atomic writes (temp file in the target folder, fsync, rename, fsync folder):
// a reader never sees a half-written file, and a failed write leaves nothing behind.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace hlm {

// Reads a whole file; throws Io naming the file and the reason.
std::string read_file(const std::string& path);

// Writes `path` atomically: `write(fd)` fills `<path>.tmp-<pid>` (use write_all), which is then
// fsynced and renamed over `path`; the folder is fsynced after. On any failure the temp file is
// removed and an Io error naming `path` is thrown.
void write_file_atomic(const std::string& path, const std::function<void(int fd)>& write);
void write_file_atomic(const std::string& path, const std::string& contents);

// write(2) until all bytes are out; throws Io naming `what` on failure (ENOSPC, EIO, ...).
void write_all(int fd, const void* data, size_t bytes, const std::string& what);
// fsync(2) of an open file / of a folder by path; throws Io naming `what`.
void fsync_fd(int fd, const std::string& what);
void fsync_dir(const std::string& dir);
// Folder part of a path ("." when there is none).
std::string parent_dir(const std::string& path);

}  // namespace hlm
