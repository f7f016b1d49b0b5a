#include "dualpipe/train/data_loader.h"

#include <ATen/ATen.h>

#include <stdexcept>
#include <string>

namespace dualpipe::train {
namespace {

void check_window(std::size_t num_tokens, int64_t seq_len) {
  if (seq_len < 1 || num_tokens <= static_cast<std::size_t>(seq_len) + 1) {
    throw std::invalid_argument("need a text longer than one window of seq_len + 1 tokens, got " +
                                std::to_string(num_tokens) +
                                " tokens and seq_len=" + std::to_string(seq_len));
  }
}

at::Tensor gather_windows(const std::vector<std::uint8_t>& tokens, int64_t seq_len,
                          const std::vector<int64_t>& offsets) {
  const int64_t count = static_cast<int64_t>(offsets.size());
  at::Tensor out = at::empty({count, seq_len + 1}, at::kLong);
  int64_t* data = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < count; ++i) {
    for (int64_t t = 0; t <= seq_len; ++t) {
      data[i * (seq_len + 1) + t] = tokens[static_cast<std::size_t>(offsets[i] + t)];
    }
  }
  return out;
}

}  // namespace

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

DataLoader::DataLoader(std::vector<std::uint8_t> tokens, int64_t seq_len, std::uint64_t seed)
    : tokens_(std::move(tokens)), seq_len_(seq_len), seed_(seed) {
  check_window(tokens_.size(), seq_len_);
}

int64_t DataLoader::offset_of(std::uint64_t index) const {
  const std::uint64_t range = tokens_.size() - static_cast<std::uint64_t>(seq_len_);
  // NOTE: two rounds so that seeds differing in one bit give unrelated streams.
  return static_cast<int64_t>(splitmix64(splitmix64(seed_) ^ index) % range);
}

at::Tensor DataLoader::next(int64_t count) {
  std::vector<int64_t> offsets;
  offsets.reserve(static_cast<std::size_t>(count));
  for (int64_t i = 0; i < count; ++i) offsets.push_back(offset_of(position_++));
  return gather_windows(tokens_, seq_len_, offsets);
}

at::Tensor evenly_spaced_windows(const std::vector<std::uint8_t>& tokens, int64_t seq_len,
                                 int64_t count) {
  check_window(tokens.size(), seq_len);
  if (count < 1) throw std::invalid_argument("evenly_spaced_windows needs count >= 1");
  const int64_t last = static_cast<int64_t>(tokens.size()) - seq_len - 1;
  std::vector<int64_t> offsets;
  for (int64_t i = 0; i < count; ++i) offsets.push_back(count == 1 ? 0 : last * i / (count - 1));
  return gather_windows(tokens, seq_len, offsets);
}

}  // namespace dualpipe::train
