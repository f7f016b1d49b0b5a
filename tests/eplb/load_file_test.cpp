#include "dualpipe/eplb/load_file.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

namespace dualpipe::eplb {
namespace {

std::string error_of(const std::string& text, LoadFormat format = LoadFormat::kAuto) {
  try {
    parse_loads(text, format);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

TEST(ParseLoads, JsonArrayOrWeightObject) {
  const LoadMatrix expected = {{1, 2.5}, {0, 4}};
  EXPECT_EQ(parse_loads("  [[1, 2.5], [0, 4]]"), expected);
  EXPECT_EQ(parse_loads("{\"weight\": [[1, 2.5], [0, 4]], \"note\": 1}"), expected);
}

TEST(ParseLoads, CsvSkipsBlankCommentAndHeaderLines) {
  const LoadMatrix expected = {{1, 2.5}, {0, 4}};
  EXPECT_EQ(parse_loads("# loads\nexpert0, expert1\n1, 2.5\n\n0,4\n"), expected);
  EXPECT_EQ(parse_loads("1,2.5\r\n0,4", LoadFormat::kCsv), expected);
}

TEST(ParseLoads, ErrorsSayWhereAndWhat) {
  EXPECT_NE(error_of("[[1, 2], [3]]").find("layer 1 has 1 experts, layer 0 has 2"),
            std::string::npos);
  EXPECT_NE(error_of("[[1, -2]]").find("expert 1 has load -2"), std::string::npos);
  EXPECT_NE(error_of("{\"w\": []}").find("\"weight\""), std::string::npos);
  EXPECT_NE(error_of("[1, 2]").find("layer 0 is not an array"), std::string::npos);
  EXPECT_NE(error_of("[]").find("no layers"), std::string::npos);
  EXPECT_NE(error_of("1,2\n3,x\n").find("line 2: expected a number, got \"x\""), std::string::npos);
  EXPECT_NE(error_of("1,2\n3,nan\n").find("finite"), std::string::npos);
  EXPECT_NE(error_of("1,2\n3,\n").find("line 2"), std::string::npos);
  EXPECT_NE(error_of("# nothing\n").find("no layers"), std::string::npos);
  EXPECT_NE(error_of("[[1, 2]", LoadFormat::kJson).find("JSON loads"), std::string::npos);
}

TEST(FormatFromPath, ByExtension) {
  EXPECT_EQ(format_from_path("a/b.json"), LoadFormat::kJson);
  EXPECT_EQ(format_from_path("b.csv"), LoadFormat::kCsv);
  EXPECT_EQ(format_from_path("b.txt"), LoadFormat::kAuto);
}

}  // namespace
}  // namespace dualpipe::eplb
