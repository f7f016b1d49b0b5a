#pragma once
// Random fixed-length windows of a token sequence, as a counter-based stream: window i starts at
// an offset that depends only on (seed, i). So the loader's whole state is one number, its
// position, and a run restored from a checkpoint reads exactly the windows it would have read.

#include <ATen/Tensor.h>

#include <cstdint>
#include <vector>

namespace dualpipe::train {

// splitmix64: a 64-bit mixing function (the seeding generator of xoshiro); pure.
std::uint64_t splitmix64(std::uint64_t x);

class DataLoader {
 public:
  // `tokens` are copied. Windows are seq_len + 1 tokens long (inputs and next-token labels).
  // Throws std::invalid_argument when seq_len < 1 or the text is not longer than a window.
  DataLoader(std::vector<std::uint8_t> tokens, int64_t seq_len, std::uint64_t seed);

  // The next `count` windows as an int64 tensor [count, seq_len + 1]; advances position() by
  // `count`. CPU tensor owned by the caller.
  at::Tensor next(int64_t count);

  // Windows handed out so far. set_position() continues from any position, e.g. a checkpoint's.
  std::uint64_t position() const { return position_; }
  void set_position(std::uint64_t position) { position_ = position; }
  std::uint64_t seed() const { return seed_; }
  int64_t seq_len() const { return seq_len_; }

  // Start offset of window `index`, in [0, tokens - seq_len - 1].
  int64_t offset_of(std::uint64_t index) const;

 private:
  std::vector<std::uint8_t> tokens_;
  int64_t seq_len_;
  std::uint64_t seed_;
  std::uint64_t position_ = 0;
};

// `count` windows of seq_len + 1 tokens spread evenly over `tokens` (the first at offset 0): a
// fixed evaluation set, the same on every call. Throws std::invalid_argument when the text is
// not longer than a window or count < 1.
at::Tensor evenly_spaced_windows(const std::vector<std::uint8_t>& tokens, int64_t seq_len,
                                 int64_t count);

}  // namespace dualpipe::train
