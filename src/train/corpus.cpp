#include "dualpipe/train/corpus.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "dualpipe/read_file.h"

namespace dualpipe::train {
namespace {

namespace fs = std::filesystem;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// NOTE: only regular files: a device or a FIFO (`--data /dev/zero`) has no end to read up to.
// `max_bytes` is what is left of the corpus's kMaxInputFileBytes.
std::string read_file(const fs::path& path, std::size_t max_bytes) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    throw std::invalid_argument("corpus file " + path.string() +
                                " is not a regular file (give a text file or a folder of them)");
  }
  return read_file_bounded(path.string(), "corpus " + path.string() + " (all its files together)",
                           max_bytes);
}

}  // namespace

std::string strip_fortune_separators(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  std::size_t begin = 0;
  while (begin < text.size()) {
    std::size_t end = text.find('\n', begin);
    const std::size_t next = end == std::string::npos ? text.size() : end + 1;
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + begin, end - begin);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line != "%") {
      out.append(line.data(), line.size());
      out.push_back('\n');
    }
    begin = next;
  }
  return out;
}

Corpus load_corpus(const std::string& path, std::size_t min_bytes) {
  std::error_code ec;
  const fs::path root(path);
  if (!fs::exists(root, ec)) {
    throw std::invalid_argument("corpus path " + path +
                                " does not exist (give a text file or a folder of text files "
                                "with --data; the default needs Debian's `fortunes` package)");
  }
  std::vector<fs::path> files;
  if (fs::is_directory(root, ec)) {
    for (const auto& entry : fs::directory_iterator(root)) {
      const std::string name = entry.path().filename().string();
      if (name.empty() || name[0] == '.' || ends_with(name, ".dat") || ends_with(name, ".u8")) {
        continue;
      }
      if (entry.is_regular_file(ec)) files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(root);
  }
  Corpus corpus;
  for (const fs::path& file : files) {
    const std::string text =
        strip_fortune_separators(read_file(file, kMaxInputFileBytes - corpus.bytes.size()));
    corpus.bytes.insert(corpus.bytes.end(), text.begin(), text.end());
    corpus.files.push_back(file.string());
  }
  if (corpus.bytes.size() < min_bytes) {
    throw std::invalid_argument("corpus " + path + " has " + std::to_string(corpus.bytes.size()) +
                                " bytes in " + std::to_string(files.size()) +
                                " file(s); at least " + std::to_string(min_bytes) + " are needed");
  }
  return corpus;
}

CorpusSplit split_corpus(const std::vector<std::uint8_t>& bytes, std::size_t block_size,
                         int held_out_every) {
  if (block_size < 1 || held_out_every < 2) {
    throw std::invalid_argument("split_corpus needs block_size >= 1 and held_out_every >= 2, got " +
                                std::to_string(block_size) + " and " +
                                std::to_string(held_out_every));
  }
  CorpusSplit split;
  std::size_t block = 0;
  for (std::size_t begin = 0; begin < bytes.size(); begin += block_size, ++block) {
    const std::size_t end = std::min(bytes.size(), begin + block_size);
    auto& part = (block % held_out_every == static_cast<std::size_t>(held_out_every - 1))
                     ? split.held_out
                     : split.train;
    part.insert(part.end(), bytes.begin() + begin, bytes.begin() + end);
  }
  if (split.train.size() < block_size || split.held_out.size() < block_size) {
    throw std::invalid_argument("text of " + std::to_string(bytes.size()) +
                                " bytes is too short to split into training and held-out parts "
                                "with blocks of " +
                                std::to_string(block_size) + " bytes, every " +
                                std::to_string(held_out_every) + "th held out");
  }
  return split;
}

double unigram_loss(const std::vector<std::uint8_t>& bytes) {
  if (bytes.empty()) throw std::invalid_argument("unigram_loss of an empty text");
  std::array<std::size_t, kByteVocabSize> counts{};
  for (std::uint8_t b : bytes) ++counts[b];
  const double n = static_cast<double>(bytes.size());
  double loss = 0.0;
  for (std::size_t c : counts) {
    if (c == 0) continue;
    const double p = static_cast<double>(c) / n;
    loss -= p * std::log(p);
  }
  return loss;
}

}  // namespace dualpipe::train
