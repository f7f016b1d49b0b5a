#pragma once
// Reading a whole input file with a size limit: the one way dualpipe reads a file that a user
// names (schedule files, config files, EPLB load files, corpus files, checkpoint manifests).
// Header-only and free of LibTorch, like check.h, so every module uses the same one.
//
// The read is bounded: it stops after max_bytes + 1 bytes whatever the file is, so /dev/zero, a
// FIFO fed forever or a huge file end in an error instead of unbounded memory.

#include <algorithm>
#include <cstddef>
#include <fstream>
#include <istream>
#include <stdexcept>
#include <string>

namespace dualpipe {

// The largest input file dualpipe reads whole: 256 MiB. Schedules of the largest accepted size
// and DeepSeek-V3-sized load files are a few MiB; larger corpora belong in a folder of files
// (each one, and their total, under this cap).
inline constexpr std::size_t kMaxInputFileBytes = std::size_t{256} << 20;

// Reads all of `in`. Throws std::invalid_argument when it holds more than `max_bytes` bytes,
// naming `what` (e.g. "schedule file 'x.json'") and the limit; std::runtime_error when reading
// fails. Blocks while `in` blocks (a FIFO without a writer).
inline std::string read_stream_bounded(std::istream& in, const std::string& what,
                                       std::size_t max_bytes = kMaxInputFileBytes) {
  std::string text;
  constexpr std::size_t kChunk = std::size_t{1} << 16;
  while (in) {
    const std::size_t old_size = text.size();
    const std::size_t want = std::min(kChunk, max_bytes + 1 - old_size);
    text.resize(old_size + want);
    in.read(text.data() + old_size, static_cast<std::streamsize>(want));
    text.resize(old_size + static_cast<std::size_t>(in.gcount()));
    if (text.size() > max_bytes) {
      throw std::invalid_argument(what + " is larger than the limit of " +
                                  std::to_string(max_bytes) + " bytes (" +
                                  std::to_string(max_bytes >> 20) + " MiB)");
    }
  }
  if (in.bad()) throw std::runtime_error("cannot read " + what);
  return text;
}

// Opens `path` and reads it with read_stream_bounded(). Throws std::invalid_argument when it
// cannot be opened or is larger than `max_bytes`.
inline std::string read_file_bounded(const std::string& path, const std::string& what,
                                     std::size_t max_bytes = kMaxInputFileBytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument("cannot open " + what);
  return read_stream_bounded(in, what, max_bytes);
}

}  // namespace dualpipe
