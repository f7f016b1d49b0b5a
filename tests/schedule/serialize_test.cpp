#include "dualpipe/schedule/serialize.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "dualpipe/schedule/registry.h"

namespace dualpipe::schedule {
namespace {

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::vector<std::string> oracle_files() {
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(DUALPIPE_ORACLE_DIR)) {
    if (entry.path().extension() == ".json") files.push_back(entry.path().filename().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

Program compute_only(const Program& program) {
  Program compute;
  for (const Op& op : program) {
    if (op.is_compute()) compute.push_back(op);
  }
  return compute;
}

class OracleTest : public testing::TestWithParam<std::string> {};

// The reference's compute order, rank by rank, op by op.
TEST_P(OracleTest, BuilderMatchesReferenceComputeOrder) {
  Schedule oracle =
      parse_schedule_json(read_file(std::filesystem::path(DUALPIPE_ORACLE_DIR) / GetParam()));
  Schedule ours = build_schedule(oracle.name, oracle.num_ranks(), oracle.num_microbatches);
  ASSERT_EQ(ours.placement, oracle.placement);
  for (int rank = 0; rank < oracle.num_ranks(); ++rank) {
    Program expected = compute_only(oracle.programs[rank]);
    Program actual = compute_only(ours.programs[rank]);
    ASSERT_EQ(actual.size(), expected.size()) << "rank " << rank;
    for (std::size_t i = 0; i < expected.size(); ++i) {
      ASSERT_EQ(actual[i], expected[i])
          << "rank " << rank << ", compute op " << i << ": ours "
          << to_token(actual[i], rank, ours.placement) << ", reference "
          << to_token(expected[i], rank, oracle.placement);
    }
  }
}

// The reference's communication items, per rank and kind, are the same multiset as ours.
TEST_P(OracleTest, SameCommunicationItemsAsReference) {
  Schedule oracle =
      parse_schedule_json(read_file(std::filesystem::path(DUALPIPE_ORACLE_DIR) / GetParam()));
  Schedule ours = build_schedule(oracle.name, oracle.num_ranks(), oracle.num_microbatches);
  for (int rank = 0; rank < oracle.num_ranks(); ++rank) {
    std::multiset<std::string> expected, actual;
    for (const Op& op : oracle.programs[rank]) {
      if (op.is_communication()) expected.insert(to_token(op, rank, oracle.placement));
    }
    for (const Op& op : ours.programs[rank]) {
      if (op.is_communication()) actual.insert(to_token(op, rank, ours.placement));
    }
    EXPECT_EQ(actual, expected) << "rank " << rank;
  }
}

TEST_P(OracleTest, OracleFileRoundTripsThroughOurForms) {
  std::string text = read_file(std::filesystem::path(DUALPIPE_ORACLE_DIR) / GetParam());
  Schedule oracle = parse_schedule_json(text);
  nlohmann::json original = nlohmann::json::parse(text);
  for (auto& tokens : original["ranks"]) {
    nlohmann::json kept = nlohmann::json::array();
    for (auto& token : tokens) {
      if (token != "|") kept.push_back(token);
    }
    tokens = kept;
  }
  EXPECT_EQ(to_oracle_json(oracle), original);
  EXPECT_EQ(parse_schedule_text(to_text(oracle)), oracle);
}

INSTANTIATE_TEST_SUITE_P(ReferenceOrder, OracleTest, testing::ValuesIn(oracle_files()),
                         [](const testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param.substr(0, info.param.find('.'));
                           return name;
                         });

// The repository carries all 29 recorded orders (tests/data/reference-order/README.md).
TEST(OracleFilesTest, EveryRecordedOrderIsPresent) {
  EXPECT_EQ(oracle_files().size(), 29u);
}

struct Size {
  std::string name;
  int num_ranks;
  int num_microbatches;
};

class RoundTripTest : public testing::TestWithParam<Size> {};

TEST_P(RoundTripTest, JsonAndTextRoundTripExactly) {
  const Size& size = GetParam();
  Schedule schedule = build_schedule(size.name, size.num_ranks, size.num_microbatches);
  EXPECT_EQ(schedule_from_json(to_json(schedule)), schedule);
  EXPECT_EQ(parse_schedule_json(to_json(schedule).dump()), schedule);
  EXPECT_EQ(parse_schedule_text(to_text(schedule)), schedule);
  // The oracle shape alone infers the placement from the name.
  EXPECT_EQ(schedule_from_json(to_oracle_json(schedule)), schedule);
}

INSTANTIATE_TEST_SUITE_P(Builders, RoundTripTest,
                         testing::Values(Size{"dualpipe", 2, 4}, Size{"dualpipe", 6, 14},
                                         Size{"dualpipev", 1, 2}, Size{"dualpipev", 3, 7},
                                         Size{"1f1b", 1, 1}, Size{"1f1b", 5, 3}, Size{"zb1p", 3, 7},
                                         Size{"gpipe", 7, 2}),
                         [](const testing::TestParamInfo<Size>& info) {
                           return info.param.name + "_R" + std::to_string(info.param.num_ranks) +
                                  "_M" + std::to_string(info.param.num_microbatches);
                         });

TEST(SerializeTest, CustomPlacementRoundTrips) {
  // Interleaved-style placement: 2 ranks, 4 stages; only the full JSON/text carry it. NOTE:
  // readers accept only the registry's names, so the custom placement travels under one.
  Schedule schedule{"gpipe", 1, Placement::round_robin(2, 4), {{}, {}}};
  schedule.programs[0] = {Op::forward(0, 0, 0), Op::send_activation(0, 0, 0, 1),
                          Op::recv_activation(0, 1, 0, 1), Op::forward(0, 2, 0)};
  schedule.programs[1] = {Op::recv_activation(0, 0, 0, 0), Op::forward(0, 1, 0),
                          Op::send_activation(0, 1, 0, 0)};
  EXPECT_EQ(to_token(schedule.programs[0][2], 0, schedule.placement), "rF1.0@1");
  EXPECT_EQ(schedule_from_json(to_json(schedule)), schedule);
  EXPECT_EQ(parse_schedule_text(to_text(schedule)), schedule);
}

TEST(SerializeTest, TokensUseLocalSlots) {
  Placement placement = Placement::bidirectional(4);
  EXPECT_EQ(to_token(Op::forward_backward(1, 1, 3, 0, 2, 1), 2, placement), "FB1.3/0.1");
  EXPECT_EQ(to_token(Op::backward(0, 2, 5, true), 2, placement), "B0.5z");
  EXPECT_EQ(to_token(Op::recv_grad(1, 2, 0, 1), 2, placement), "rB1.0@1");
  EXPECT_EQ(parse_token("rB1.0@1", 2, placement), Op::recv_grad(1, 2, 0, 1));
  EXPECT_EQ(parse_token("sF0.4@3", 2, placement), Op::send_activation(0, 2, 4, 3));
  EXPECT_EQ(parse_token("W1.7", 0, placement), Op::weight(1, 3, 7));
  EXPECT_THROW(to_token(Op::forward(0, 1, 0), 2, placement), std::invalid_argument);
}

void expect_invalid(const std::string& text, const std::vector<std::string>& fragments) {
  try {
    parse_schedule_json(text);
    FAIL() << "expected std::invalid_argument for " << text;
  } catch (const std::invalid_argument& e) {
    for (const std::string& fragment : fragments) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos)
          << "\"" << e.what() << "\" lacks \"" << fragment << "\"";
    }
  }
}

TEST(SerializeTest, MalformedJsonNamesRankPositionAndToken) {
  expect_invalid(R"({"schedule":"1f1b","pp":2,"chunks":1,"ranks":[["F0.0"],["F0.0","X1"]]})",
                 {"rank 1", "token 1", "\"X1\""});
  expect_invalid(R"({"schedule":"1f1b","pp":2,"chunks":1,"ranks":[["F0.0","|","F1.0"],[]]})",
                 {"rank 0", "token 2", "F1.0", "slot 1"});
  expect_invalid(R"({"schedule":"1f1b","pp":2,"chunks":1,"ranks":[["sF0.0@5"],[]]})",
                 {"rank 0", "token 0", "sF0.0@5", "peer"});
  expect_invalid(R"({"schedule":"1f1b","pp":2,"chunks":1,"ranks":[["F0.0z"],[]]})",
                 {"rank 0", "token 0", "F0.0z"});
  expect_invalid(R"({"schedule":"1f1b","pp":2,"chunks":1,"ranks":[["rF0.0@1"],[]]})",
                 {"rank 0", "rF0.0@1", "previous"});
  expect_invalid(R"({"schedule":"1f1b","pp":2,"chunks":1,"ranks":[[]]})", {"ranks"});
  expect_invalid(R"({"schedule":"1f1b","pp":2,"chunks":1)", {"JSON"});
  expect_invalid(R"({"schedule":"1f1b","chunks":1,"ranks":[]})", {"pp"});
  expect_invalid(R"({"schedule":"1f1b","pp":"two","chunks":1,"ranks":[]})", {"JSON"});
  expect_invalid(R"({"schedule":"1f1b","pp":1,"chunks":1,"ranks":[[3]]})", {"rank 0", "token 0"});
}

TEST(SerializeTest, MalformedTextNamesRankPositionAndToken) {
  Schedule schedule = build_schedule("1f1b", 2, 2);
  std::string text = to_text(schedule);
  std::string broken = text;
  const std::size_t first_token = broken.find("rank 1: ") + 8;
  broken.replace(first_token, broken.find(' ', first_token) - first_token, "Q0.0");
  try {
    parse_schedule_text(broken);
    FAIL();
  } catch (const std::invalid_argument& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("rank 1, token 0 \"Q0.0\""), std::string::npos) << what;
  }
  EXPECT_THROW(parse_schedule_text("schedule x\nnum_ranks two\n"), std::invalid_argument);
  EXPECT_THROW(parse_schedule_text(text + "rank 2: F0.0\n"), std::invalid_argument);
  EXPECT_THROW(parse_schedule_text(text.substr(0, text.find("rank 1"))), std::invalid_argument);
}

std::string error_of(const std::function<void()>& parse) {
  try {
    parse();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no error)";
}

// The whole messages, so that a change to the readers cannot change what users see unnoticed.
TEST(SerializeTest, ErrorMessagesAreExact) {
  const Placement dualpipe = Placement::bidirectional(4);
  const Placement one_per_rank = Placement::round_robin(4, 4);
  EXPECT_EQ(error_of([&] { parse_token("F0.0", 4, dualpipe, 7); }),
            "rank 4, token 7 \"F0.0\": no such rank, num_ranks=4");
  EXPECT_EQ(error_of([&] { parse_token("FB0.1/2.2", 2, dualpipe); }),
            "rank 2 \"FB0.1/2.2\": rank has no slot 2 (it has 2)");
  EXPECT_EQ(error_of([&] { parse_token("B0.5zz", 2, dualpipe, 7); }),
            "rank 2, token 7 \"B0.5zz\": expected F<slot>.<m>, B<slot>.<m>[z], W<slot>.<m>, "
            "FB<slot>.<m>/<slot>.<m>, or sF/rF/sB/rB<slot>.<m>@<peer>");
  EXPECT_EQ(error_of([&] { parse_token("rB0.0@9", 2, dualpipe, 7); }),
            "rank 2, token 7 \"rB0.0@9\": no peer rank 9, num_ranks=4");
  EXPECT_EQ(error_of([&] { parse_token("rF0.0@1", 0, one_per_rank); }),
            "rank 0 \"rF0.0@1\": stage 0 of direction 0 has no previous stage to receive from");

  const std::string head = "schedule x\nnum_ranks 1\nnum_microbatches 1\n";
  EXPECT_EQ(error_of([&] { parse_schedule_text("schedule x\nnum_ranks 99999999999\n"); }),
            "schedule text line 2: number out of range: \"99999999999\" (\"num_ranks "
            "99999999999\")");
  EXPECT_EQ(error_of([&] { parse_schedule_text(head + "placement 1 1 0-0\nrank 0: F0.0\n"); }),
            "schedule text line 4: expected <rank>:<slot>, got \"0-0\" (\"placement 1 1 0-0\")");
  EXPECT_EQ(error_of([&] { parse_schedule_text(head + "placement 1 1 0:0\nrank 1: F0.0\n"); }),
            "schedule text line 5: expected \"rank 0: <tokens>\" (\"rank 1: F0.0\")");
  EXPECT_EQ(error_of([&] { parse_schedule_text(head + "placement 1 1 0:0\n# only a comment\n"); }),
            "schedule text ends before \"rank 0:\"");
  EXPECT_EQ(error_of([&] { parse_schedule_text(head + "placement 1 1 0:0\nrank 0: F0.0\n\nx\n"); }),
            "schedule text line 7: unexpected line after the last rank (\"x\")");
}

std::string load_error(const nlohmann::json& json) {
  try {
    schedule_from_json(json);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

std::string load_text_error(const std::string& text) {
  try {
    parse_schedule_text(text);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

// Before: "chunks" 21 over ops of 20 micro-batches loaded and validated (10 per direction).
TEST(LoadedScheduleTest, ChunksThatDisagreeWithTheOpsAreRejected) {
  for (const char* name : {"dualpipe", "dualpipev", "1f1b"}) {
    const Schedule s = build_schedule(name, 4, 20);
    for (int chunks : {21, 22, 19, 18, 2000000000}) {
      nlohmann::json json = to_oracle_json(s);
      json["chunks"] = chunks;
      const std::string error = load_error(json);
      const std::string expected =
          chunks > 1000 ? "num_microbatches=" + std::to_string(chunks)
                        : "num_microbatches (\"chunks\") is " + std::to_string(chunks);
      EXPECT_NE(error.find(expected), std::string::npos)
          << name << " chunks=" << chunks << ": " << error;
      Schedule text_form = s;
      text_form.num_microbatches = chunks;
      EXPECT_FALSE(load_text_error(to_text(text_form)).empty()) << name << " chunks=" << chunks;
    }
  }
}

// Before: an unknown name loaded with a guessed one-stage-per-rank placement.
TEST(LoadedScheduleTest, UnknownScheduleNamesAreRejected) {
  nlohmann::json json = to_oracle_json(build_schedule("1f1b", 2, 4));
  json["schedule"] = "interleaved";
  EXPECT_NE(load_error(json).find("unknown schedule \"interleaved\", allowed: dualpipe"),
            std::string::npos)
      << load_error(json);
  Schedule s = build_schedule("1f1b", 2, 4);
  s.name = "1F1B";
  EXPECT_NE(load_text_error(to_text(s)).find("unknown schedule \"1F1B\""), std::string::npos);
}

// Before: "pp" 2000000000 in the text form sized 2e9 programs before reading a rank line.
TEST(LoadedScheduleTest, HugeSizesAreRejectedBeforeAllocating) {
  const std::string text =
      "schedule 1f1b\nnum_ranks 2000000000\nnum_microbatches 4\nplacement 1 1 0:0\n";
  EXPECT_NE(load_text_error(text).find("num_ranks <= 4096"), std::string::npos)
      << load_text_error(text);
  nlohmann::json json = to_oracle_json(build_schedule("1f1b", 2, 4));
  json["pp"] = 1000000;
  EXPECT_NE(load_error(json).find("num_ranks=1000000"), std::string::npos) << load_error(json);
}

}  // namespace
}  // namespace dualpipe::schedule
