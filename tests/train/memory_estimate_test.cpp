#include "dualpipe/train/memory_estimate.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace dualpipe::train {
namespace {

constexpr std::uint64_t kGiB = std::uint64_t{1} << 30;

TEST(MemoryEstimate, DefaultsNeedLittle) {
  const TrainConfig c;
  const MemoryEstimate e = estimate_rank_memory(c);
  EXPECT_GT(e.parameter_bytes, 0);
  EXPECT_GT(e.activation_bytes, 0);
  EXPECT_GE(e.peak_activations, 1);
  EXPECT_LT(e.total(), 0.25 * kGiB);
  EXPECT_NO_THROW(check_memory_fits(c, 4 * kGiB));
  EXPECT_GT(available_memory_bytes(), 0u);
}

// Attention scores grow with seq_len^2: 20000 needs hundreds of GiB per rank.
TEST(MemoryEstimate, LongSequencesAreRefusedNamingTheValueAndTheEstimate) {
  TrainConfig c;
  c.seq_len = 20000;
  EXPECT_GT(estimate_rank_memory(c).activation_bytes, 100.0 * kGiB);
  EXPECT_GT(estimate_rank_memory(c).total(), 4 * estimate_rank_memory(TrainConfig{}).total());
  try {
    check_memory_fits(c, 64 * kGiB);
    FAIL();
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("seq_len=20000"), std::string::npos) << what;
    EXPECT_NE(what.find("GiB per rank"), std::string::npos) << what;
    EXPECT_NE(what.find("seq_len <= "), std::string::npos) << what;
  }
  EXPECT_NO_THROW(check_memory_fits(c, 0));  // unknown: not checked
}

TEST(MemoryEstimate, TheSuggestedSeqLenFits) {
  TrainConfig c;
  c.seq_len = 20000;
  try {
    check_memory_fits(c, 8 * kGiB);
    FAIL();
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    const std::size_t at = what.find("seq_len <= ");
    ASSERT_NE(at, std::string::npos) << what;
    c.seq_len = std::stoi(what.substr(at + 11));
    EXPECT_NO_THROW(check_memory_fits(c, 8 * kGiB)) << c.seq_len;
    c.seq_len += 1;
    EXPECT_THROW(check_memory_fits(c, 8 * kGiB), std::invalid_argument);
  }
}

}  // namespace
}  // namespace dualpipe::train
