#include "dualpipe/read_file.h"

#include <gtest/gtest.h>

#include <sstream>
#include <stdexcept>
#include <string>

namespace dualpipe {
namespace {

TEST(ReadFile, ReadsUpToTheCapAndRefusesOneByteMore) {
  std::istringstream exact(std::string(1000, 'a'));
  EXPECT_EQ(read_stream_bounded(exact, "exact", 1000).size(), 1000u);
  std::istringstream over(std::string(1001, 'a'));
  try {
    read_stream_bounded(over, "file 'over'", 1000);
    FAIL() << "read past the cap";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("file 'over' is larger than the limit of 1000 bytes"),
              std::string::npos)
        << e.what();
  }
}

// /dev/zero never ends: the read must stop at the cap (before: the sim read it to 8.4 GB).
TEST(ReadFile, EndlessFileStopsAtTheCap) {
  EXPECT_THROW(read_file_bounded("/dev/zero", "/dev/zero", 1 << 20), std::invalid_argument);
  EXPECT_THROW(read_file_bounded("/nonexistent/x", "x"), std::invalid_argument);
  EXPECT_EQ(kMaxInputFileBytes, std::size_t{256} << 20);
}

}  // namespace
}  // namespace dualpipe
