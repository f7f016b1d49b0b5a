// PyTorch's CSV schedule files: round trips, files PyTorch 2.13 wrote (tests/data/pytorch-csv,
// written by tests/schedule/pytorch_programs_test.py --write-fixtures), and readable errors.
#include "dualpipe/schedule/pytorch_csv.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "dualpipe/schedule/registry.h"
#include "dualpipe/schedule/validator.h"

namespace dualpipe::schedule {
namespace {

std::string fixture(const std::string& name) {
  std::ifstream in(std::filesystem::path(DUALPIPE_SOURCE_DIR) / "tests/data/pytorch-csv" / name);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string error_of(const std::string& text, const std::string& name = "gpipe") {
  try {
    parse_pytorch_csv(text, name);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

// Every one-direction registered schedule at these sizes (odd ones too) where it accepts them.
class CsvRoundTrip : public testing::TestWithParam<std::tuple<std::string, int, int>> {};

TEST_P(CsvRoundTrip, WrittenCsvReadsBackToTheSameSchedule) {
  const auto& [name, ranks, microbatches] = GetParam();
  if (!schedule_facts(name).accepts(ranks, microbatches)) GTEST_SKIP() << "not accepted";
  const Schedule built = build_schedule(name, ranks, microbatches);
  if (built.num_directions() > 1) {
    EXPECT_THROW(to_pytorch_csv(built), std::invalid_argument);
    return;
  }
  // Compute only: the reader derives the same communication as the builder.
  EXPECT_EQ(parse_pytorch_csv(to_pytorch_csv(built), name), built);
  // With communication: kept where it is.
  EXPECT_EQ(parse_pytorch_csv(to_pytorch_csv(built, CsvActions::kComputeAndComm), name), built);
}

INSTANTIATE_TEST_SUITE_P(Registered, CsvRoundTrip,
                         testing::Combine(testing::ValuesIn(schedule_names()),
                                          testing::Values(1, 2, 3, 4, 7),
                                          testing::Values(1, 5, 8, 14)),
                         [](const auto& info) {
                           std::string name = std::get<0>(info.param);
                           for (char& c : name)
                             c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name + "_pp" + std::to_string(std::get<1>(info.param)) + "_c" +
                                  std::to_string(std::get<2>(info.param));
                         });

TEST(PytorchCsv, WritesPytorchActionNames) {
  const std::string csv = to_pytorch_csv(build_schedule("dualpipev", 2, 4));
  // DualPipeV on 2 ranks: stages 0 and 3 on rank 0, 1 and 2 on rank 1, the row PyTorch 2.13
  // writes for ScheduleDualPipeV (compare tests/data/pytorch-csv/DualPipeV_pp2_c4.csv).
  EXPECT_EQ(csv, fixture("DualPipeV_pp2_c4.csv"));
  const std::string zb = to_pytorch_csv(build_schedule("zb1p", 2, 2), CsvActions::kComputeAndComm);
  EXPECT_NE(zb.find("0I"), std::string::npos) << zb;
  EXPECT_NE(zb.find("0SEND_F0"), std::string::npos) << zb;
  EXPECT_NE(zb.find("1RECV_F0"), std::string::npos) << zb;
  EXPECT_NE(zb.find("1SEND_B0"), std::string::npos) << zb;
  EXPECT_NE(zb.find("0RECV_B0"), std::string::npos) << zb;
}

// Files PyTorch 2.13 wrote with its own schedules: GPipe and DualPipeV equal ours exactly and
// the name is inferred; PyTorch's 1F1B numbers its last rank's forwards from 1 (see
// pytorch_programs_test.py), which the validator rejects.
TEST(PytorchCsv, PytorchFilesOfSchedulesWeHaveEqualOurs) {
  for (const auto& [file, name, ranks, microbatches] :
       std::vector<std::tuple<std::string, std::string, int, int>>{
           {"GPipe_pp3_c5.csv", "gpipe", 3, 5},
           {"GPipe_pp4_c8.csv", "gpipe", 4, 8},
           {"DualPipeV_pp2_c4.csv", "dualpipev", 2, 4},
           {"DualPipeV_pp3_c7.csv", "dualpipev", 3, 7},
           {"DualPipeV_pp4_c8.csv", "dualpipev", 4, 8}}) {
    const Schedule loaded = parse_pytorch_csv(fixture(file));
    EXPECT_EQ(loaded.name, name) << file;
    EXPECT_NO_THROW(validate(loaded)) << file;
    EXPECT_EQ(loaded, build_schedule(name, ranks, microbatches)) << file;
  }
  const Schedule pytorch_1f1b = parse_pytorch_csv(fixture("1F1B_pp4_c8.csv"), "1f1b");
  EXPECT_EQ(pytorch_1f1b.num_microbatches, 9);  // forwards 1..8 on the last rank
  EXPECT_THROW(validate(pytorch_1f1b), ScheduleError);
}

// Schedules dualpipe has no builder for still read, validate and carry a registered name.
TEST(PytorchCsv, PytorchZbvReadsWithItsVPlacement) {
  const Schedule zbv = parse_pytorch_csv(fixture("ZBVZeroBubble_pp2_c4.csv"), "dualpipev");
  EXPECT_EQ(zbv.placement, Placement::v_shape(2));
  EXPECT_NO_THROW(validate(zbv));
  const Schedule interleaved = parse_pytorch_csv(fixture("Interleaved1F1B_pp4_c8.csv"), "gpipe");
  EXPECT_EQ(interleaved.placement, Placement::round_robin(4, 8));
  EXPECT_NO_THROW(validate(interleaved));
}

TEST(PytorchCsv, AmbiguousOrUnknownFamilyAsksForTheName) {
  // One micro-batch: 1F1B and GPipe have the same program.
  const std::string one = to_pytorch_csv(build_schedule("gpipe", 2, 1));
  const std::string error = error_of(one, "");
  EXPECT_NE(error.find("fits 1f1b, gpipe"), std::string::npos) << error;
  EXPECT_NE(error.find("schedules with this placement: 1f1b, zb1p, gpipe"), std::string::npos)
      << error;
  EXPECT_NE(error_of(one, "nope").find("unknown schedule \"nope\""), std::string::npos);
}

TEST(PytorchCsv, ErrorsNameRankFieldAndAction) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"0F0,0X1\r\n", "rank 0 (row 1), field 1 \"0X1\": expected"},
      {"0F0,0F\r\n", "field 1 \"0F\": needs a micro-batch index"},
      {"0F0,0F1junk\r\n", "field 1 \"0F1junk\""},
      {"0F0,0B0\r\n0F1\r\n", "stage 0 appears on rank 0 and on rank 1"},
      {"0F0,0B0\r\n2F0,2B0\r\n", "every stage 0..2 must appear"},
      {"0F0,0B0\r\n1F0,1B0\r\n\r\n", "rank 2 (row 3) holds no stage"},
      {"0F0,(0F1)OVERLAP_F_B\r\n", "must hold one forward then one backward"},
      {"0F0,(0F1;0B0)OVERLAP\r\n", "expected (<forward>;<backward>)OVERLAP_F_B"},
      {"0F0,0SEND_F0\r\n", "no stage 1 at the other end"},
      {"", "no rows"},
      {"0F0,0F9999999999\r\n", "needs a micro-batch index"},
  };
  for (const auto& [text, expected] : cases) {
    const std::string error = error_of(text);
    EXPECT_NE(error.find(expected), std::string::npos) << text << " -> " << error;
  }
}

TEST(PytorchCsv, IgnoresFsdpStepsBubblesAndQuotes) {
  const Schedule gpipe = build_schedule("gpipe", 2, 2);
  const std::string text =
      "0UNSHARD,0F0,,0F1,\"0B0\",0B1,0REDUCE_GRAD,0RESHARD\n,1F0,1F1,1B0 , 1B1,1REDUCE_GRAD\n";
  EXPECT_EQ(parse_pytorch_csv(text, "gpipe"), gpipe);
}

TEST(PytorchCsv, TellsCsvFromTheOtherForms) {
  EXPECT_TRUE(looks_like_pytorch_csv("0F0,0B0\r\n"));
  EXPECT_TRUE(looks_like_pytorch_csv(",1F0\n"));
  EXPECT_TRUE(looks_like_pytorch_csv("\n(0F3;3B1)OVERLAP_F_B\n"));
  EXPECT_FALSE(looks_like_pytorch_csv("{\"schedule\": \"gpipe\"}"));
  EXPECT_FALSE(looks_like_pytorch_csv("schedule gpipe\n"));
  EXPECT_FALSE(looks_like_pytorch_csv(""));
}

}  // namespace
}  // namespace dualpipe::schedule
