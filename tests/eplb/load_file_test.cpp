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
  EXPECT_NE(error_of("1,2\n3,x\n").find("line 2, field 2: expected a number, got \"x\""),
            std::string::npos);
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

// A header has no numeric field at all; anything else with a bad field is an error naming the
// line and the field (before: "100,2,x,4" vanished as a "header").
TEST(ParseLoads, FirstLineWithANumberIsDataNotAHeader) {
  EXPECT_EQ(error_of("100,2,x,4\n1,2,3,4\n"),
            "CSV loads, line 1, field 3: expected a number, got \"x\"");
  EXPECT_EQ(error_of("# c\n\n1,,3\n"), "CSV loads, line 3, field 2: expected a number, got \"\"");
  EXPECT_EQ(parse_loads("e0,e1\n1,2\n3,4\n").size(), 2u);
  EXPECT_NE(error_of("e0,e1\nx,2\n").find("line 2, field 1"), std::string::npos);
}

// Before: 1e308 was accepted and the imbalance overflowed to inf/nan (null in JSON).
TEST(ParseLoads, LoadsMustBeFiniteNonNegativeAndBounded) {
  for (const char* load : {"1e308", "inf", "nan", "-1", "1e16"}) {
    const std::string csv = std::string("1,") + load + "\n";
    EXPECT_NE(error_of(csv).find("line 1, field 2: load " + std::string(load)), std::string::npos)
        << load << ": " << error_of(csv);
    const std::string json_load =
        std::string(load) == "nan" || std::string(load) == "inf" ? "1e400" : load;
    EXPECT_NE(error_of("[[1, " + json_load + "]]"), "") << load;
  }
  EXPECT_EQ(parse_loads("1e15,0\n").size(), 1u);
}

}  // namespace
}  // namespace dualpipe::eplb
