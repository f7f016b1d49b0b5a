#include "dualpipe/check.h"

#include <gtest/gtest.h>

#include <string>

namespace dualpipe {
namespace {

std::string message_of(void (*fn)()) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(nothing thrown)";
}

TEST(Check, PassingChecksDoNothingAndEvaluateOperandsOnce) {
  int calls = 0;
  auto next = [&] { return ++calls; };
  DUALPIPE_CHECK(next() == 1, "never shown");
  DUALPIPE_CHECK_EQ(next(), 2, "never shown");
  DUALPIPE_CHECK_LT(next(), 4);
  DUALPIPE_ASSERT(next() == 4);
  EXPECT_EQ(calls, 4);
}

TEST(Check, CheckThrowsInvalidArgumentWithTheStreamedParts) {
  const int n = -3;
  try {
    DUALPIPE_CHECK(n >= 1, "needs n >= 1, got n=", n, " (", 2.5, ")");
    FAIL() << "expected a throw";
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), "needs n >= 1, got n=-3 (2.5)");
  }
}

TEST(Check, ComparisonsNameBothOperandsAndTheirValues) {
  EXPECT_EQ(message_of([] {
              const int num_ranks = 3, expected_ranks = 4;
              DUALPIPE_CHECK_EQ(num_ranks, expected_ranks, "placement of '", "dualpipe", "'");
            }),
            "placement of 'dualpipe': expected num_ranks == expected_ranks, got num_ranks=3, "
            "expected_ranks=4");
  EXPECT_EQ(message_of([] {
              const int slot = 7;
              DUALPIPE_CHECK_LT(slot, 2);
            }),
            "expected slot < 2, got slot=7, 2=2");
  EXPECT_THROW(DUALPIPE_CHECK_GE(1, 2), std::invalid_argument);
  EXPECT_THROW(DUALPIPE_CHECK_NE(1, 1), std::invalid_argument);
  EXPECT_THROW(DUALPIPE_CHECK_LE(2, 1), std::invalid_argument);
  EXPECT_THROW(DUALPIPE_CHECK_GT(1, 1), std::invalid_argument);
}

TEST(Check, AssertThrowsInternalErrorNamingFileLineAndCondition) {
  const std::string message = message_of([] {
    const int queued = 2;
    DUALPIPE_ASSERT(queued == 0, queued, " groups left");
  });
  EXPECT_NE(message.find("internal error at "), std::string::npos) << message;
  EXPECT_NE(message.find("check_test.cpp:"), std::string::npos) << message;
  EXPECT_NE(message.find("queued == 0 failed: 2 groups left"), std::string::npos) << message;
  EXPECT_THROW(DUALPIPE_ASSERT(false), InternalError);
  EXPECT_THROW(DUALPIPE_ASSERT(false), std::logic_error);
}

}  // namespace
}  // namespace dualpipe
