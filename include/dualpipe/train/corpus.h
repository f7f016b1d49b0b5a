#pragma once
// The training text: bytes read from a file or a folder of text files, split deterministically
// into a training part and a held-out part. Byte-level tokens: every byte is a token (vocab 256).

#include <cstdint>
#include <string>
#include <vector>

namespace dualpipe::train {

inline constexpr int kByteVocabSize = 256;

// Where Debian's `fortunes` package puts its text files (installed by scripts/setup.sh).
inline constexpr const char* kDefaultCorpusPath = "/usr/share/games/fortunes";

struct Corpus {
  std::vector<std::uint8_t> bytes;  // all files, in file-name order
  std::vector<std::string> files;   // the files read, in that order
};

// Removes fortune-file separators: lines consisting of a single '%' (with or without '\r').
// Each fortune keeps its own text and ends with one '\n'.
std::string strip_fortune_separators(const std::string& text);

// Reads `path`: a regular file as is, or every regular file directly inside a folder (sorted by
// name; hidden files, strfile indexes `*.dat` and `*.u8` links skipped), each passed through
// strip_fortune_separators(). Throws std::invalid_argument naming the path when it does not exist,
// holds no readable file, or yields fewer than `min_bytes` bytes.
Corpus load_corpus(const std::string& path, std::size_t min_bytes = 1024);

struct CorpusSplit {
  std::vector<std::uint8_t> train;
  std::vector<std::uint8_t> held_out;
};

// Cuts `bytes` into blocks of `block_size` bytes and puts every `held_out_every`-th block (block
// index % held_out_every == held_out_every - 1) into the held-out part, the rest into training,
// in order. Deterministic, no randomness: the same text always splits the same way. Throws
// std::invalid_argument when block_size < 1 or held_out_every < 2, or when either part would be
// shorter than block_size.
CorpusSplit split_corpus(const std::vector<std::uint8_t>& bytes, std::size_t block_size = 4096,
                         int held_out_every = 10);

// Cross-entropy (nats per byte) of predicting `bytes` with their own byte frequencies: the loss of
// the best model that ignores context, the baseline a language model must beat. Throws
// std::invalid_argument for an empty input.
double unigram_loss(const std::vector<std::uint8_t>& bytes);

}  // namespace dualpipe::train
