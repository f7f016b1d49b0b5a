#include "dualpipe/train/data_loader.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace dualpipe::train {
namespace {

std::vector<std::uint8_t> counting_text(std::size_t n) {
  std::vector<std::uint8_t> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = static_cast<std::uint8_t>(i % 251);
  return t;
}

TEST(DataLoader, WindowsAreContiguousTextWithLabelsShiftedByOne) {
  DataLoader loader(counting_text(5000), 16, 3);
  const at::Tensor batch = loader.next(8);
  ASSERT_EQ(batch.sizes(), (at::IntArrayRef{8, 17}));
  for (int64_t i = 0; i < 8; ++i) {
    const int64_t offset = loader.offset_of(static_cast<std::uint64_t>(i));
    for (int64_t t = 0; t <= 16; ++t) {
      EXPECT_EQ(batch[i][t].item<int64_t>(), (offset + t) % 251);
    }
  }
  EXPECT_EQ(loader.position(), 8u);
}

TEST(DataLoader, RestoredPositionContinuesExactly) {
  DataLoader a(counting_text(5000), 32, 11);
  a.next(5);
  const std::uint64_t saved = a.position();
  const at::Tensor expected = a.next(7);
  DataLoader b(counting_text(5000), 32, 11);
  b.set_position(saved);
  EXPECT_TRUE(at::equal(b.next(7), expected));
}

TEST(DataLoader, SeedsGiveDifferentStreamsAndOffsetsStayInRange) {
  DataLoader a(counting_text(200), 50, 1);
  DataLoader b(counting_text(200), 50, 2);
  EXPECT_FALSE(at::equal(a.next(16), b.next(16)));
  for (std::uint64_t i = 0; i < 1000; ++i) {
    const int64_t offset = a.offset_of(i);
    EXPECT_GE(offset, 0);
    EXPECT_LE(offset, 200 - 51);
  }
}

TEST(DataLoader, RejectsTextShorterThanAWindow) {
  EXPECT_THROW(DataLoader(counting_text(10), 9, 1), std::invalid_argument);
  EXPECT_THROW(DataLoader(counting_text(10), 0, 1), std::invalid_argument);
}

TEST(DataLoader, EvenlySpacedWindowsCoverTheText) {
  const at::Tensor w = evenly_spaced_windows(counting_text(1000), 9, 3);
  ASSERT_EQ(w.sizes(), (at::IntArrayRef{3, 10}));
  EXPECT_EQ(w[0][0].item<int64_t>(), 0);
  EXPECT_EQ(w[2][9].item<int64_t>(), 999 % 251);
}

}  // namespace
}  // namespace dualpipe::train
