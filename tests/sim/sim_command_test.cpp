// `dualpipe sim` end to end: runs the built binary and checks exit codes and output.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli_run.h"
#include "dualpipe/schedule/registry.h"

namespace {

using dualpipe::testing::CliRun;
using dualpipe::testing::slurp;
using dualpipe::testing::temp_path;

CliRun run_sim(const std::string& args) {
  return dualpipe::testing::run_cli("sim", args);
}

TEST(SimCommand, JsonHasTheDocumentedKeysAndThePaperBubble) {
  CliRun run = run_sim("--format json");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  nlohmann::json json = nlohmann::json::parse(run.out);
  EXPECT_EQ(json.at("schedule"), "dualpipe");
  EXPECT_EQ(json.at("ranks"), 8);
  EXPECT_EQ(json.at("microbatches"), 20);
  EXPECT_DOUBLE_EQ(json.at("makespan").get<double>(), 66);
  ASSERT_EQ(json.at("per_rank").size(), 8u);
  for (const auto& rank : json.at("per_rank")) {
    EXPECT_DOUBLE_EQ(rank.at("bubble").get<double>(), 6) << rank;
    EXPECT_DOUBLE_EQ(rank.at("busy").get<double>(), 60) << rank;
    EXPECT_TRUE(rank.contains("rank"));
    EXPECT_TRUE(rank.contains("peak_activations"));
  }
  EXPECT_EQ(json.at("per_rank")[3].at("peak_activations"), 9);
}

TEST(SimCommand, TableShowsFormulaBesideSimulatedBubble) {
  CliRun run = run_sim("--schedule zb1p --ranks 4 --microbatches 8");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("(PP-1)(F+B-2W) = 3"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("max bubble 3"), std::string::npos) << run.out;
}

TEST(SimCommand, CompareJsonListsEverySchedule) {
  CliRun run = run_sim(
      "--compare dualpipe,dualpipev,1f1b,zb1p,gpipe --ranks 4 --microbatches 8 --format json "
      "--costs FB=2.5");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  nlohmann::json json = nlohmann::json::parse(run.out);
  ASSERT_EQ(json.at("schedules").size(), 5u);
  EXPECT_EQ(json.at("schedules")[2].at("schedule"), "1f1b");
  EXPECT_DOUBLE_EQ(json.at("schedules")[2].at("max_bubble").get<double>(), 9);
  EXPECT_EQ(json.at("schedules")[4].at("peak_activations"), 8);  // GPipe holds all of them
}

TEST(SimCommand, OracleFormatMatchesTheReferenceComputeOrder) {
  CliRun run = run_sim("--schedule dualpipe --ranks 4 --microbatches 8 --format oracle");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  nlohmann::json ours = nlohmann::json::parse(run.out);
  nlohmann::json reference =
      nlohmann::json::parse(slurp(std::string(DUALPIPE_ORACLE_DIR) + "/dualpipe_pp4_c8.json"));
  ASSERT_EQ(ours.size(), reference.size());
  for (const char* key : {"schedule", "pp", "chunks"}) EXPECT_EQ(ours.at(key), reference.at(key));
  auto compute = [](const nlohmann::json& tokens) {
    std::vector<std::string> kept;
    for (const auto& token : tokens) {
      std::string t = token;
      if (t[0] == 'F' || t[0] == 'B' || t[0] == 'W') kept.push_back(t);
    }
    return kept;
  };
  ASSERT_EQ(ours.at("ranks").size(), 4u);
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(compute(ours.at("ranks")[r]), compute(reference.at("ranks")[r])) << "rank " << r;
  }
}

TEST(SimCommand, SavedScheduleLoadsBackToTheSameResult) {
  for (const char* file : {"saved.json", "saved.txt"}) {
    const std::string path = temp_path(file);
    CliRun first =
        run_sim("--schedule dualpipev --ranks 3 --microbatches 7 --format json --save " + path);
    ASSERT_EQ(first.exit_code, 0) << first.err;
    CliRun second = run_sim("--schedule-file " + path + " --format json");
    ASSERT_EQ(second.exit_code, 0) << second.err;
    EXPECT_EQ(nlohmann::json::parse(first.out), nlohmann::json::parse(second.out)) << file;
  }
  // An oracle file loads too: its placement comes from its name.
  CliRun oracle = run_sim("--schedule-file " + std::string(DUALPIPE_ORACLE_DIR) +
                          "/dualpipe_pp8_c20.json --format json");
  ASSERT_EQ(oracle.exit_code, 0) << oracle.err;
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(oracle.out).at("per_rank")[0].at("bubble").get<double>(),
                   6);
}

// Issue 13: PyTorch's CSV both ways. --save x.csv writes what PyTorch's _load_csv reads;
// --schedule-file x.csv reads it back (the family named by --schedule or inferred from the
// compute order), and a file PyTorch 2.13 wrote simulates like ours.
TEST(SimCommand, PytorchCsvSavesAndLoadsBack) {
  const std::string path = temp_path("saved.csv");
  CliRun first = run_sim("--schedule zb1p --ranks 3 --microbatches 7 --format json --save " + path);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_EQ(slurp(path).find("0F0,"), 0u) << slurp(path);
  CliRun inferred = run_sim("--schedule-file " + path + " --format json");
  ASSERT_EQ(inferred.exit_code, 0) << inferred.err;
  EXPECT_EQ(nlohmann::json::parse(first.out), nlohmann::json::parse(inferred.out));
  CliRun named = run_sim("--schedule-file " + path + " --schedule zb1p --format json");
  ASSERT_EQ(named.exit_code, 0) << named.err;
  EXPECT_EQ(nlohmann::json::parse(first.out), nlohmann::json::parse(named.out));

  const std::string pytorch =
      std::string(DUALPIPE_SOURCE_DIR) + "/tests/data/pytorch-csv/DualPipeV_pp4_c8.csv";
  CliRun theirs = run_sim("--schedule-file " + pytorch + " --format json");
  CliRun ours = run_sim("--schedule dualpipev --ranks 4 --microbatches 8 --format json");
  ASSERT_EQ(theirs.exit_code, 0) << theirs.err;
  EXPECT_EQ(nlohmann::json::parse(theirs.out), nlohmann::json::parse(ours.out));

  // DualPipe has two directions, PyTorch's format one; a JSON file names its own schedule.
  CliRun two = run_sim("--schedule dualpipe --ranks 4 --microbatches 8 --save " + path);
  EXPECT_EQ(two.exit_code, 1);
  EXPECT_NE(two.err.find("PyTorch's CSV holds one pipeline direction"), std::string::npos)
      << two.err;
  const std::string json = temp_path("named.json");
  ASSERT_EQ(run_sim("--schedule gpipe --ranks 2 --microbatches 2 --save " + json).exit_code, 0);
  CliRun both = run_sim("--schedule-file " + json + " --schedule gpipe");
  EXPECT_EQ(both.exit_code, 1);
  EXPECT_NE(both.err.find("for PyTorch CSV files only"), std::string::npos) << both.err;
}

TEST(SimCommand, WritesSvgAndChromeTrace) {
  const std::string svg = temp_path("t.svg"), trace = temp_path("t.trace.json");
  CliRun run = run_sim("--ranks 4 --microbatches 8 --svg " + svg + " --trace " + trace);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  std::string picture = slurp(svg);
  EXPECT_EQ(picture.rfind("<svg", 0), 0u);
  EXPECT_NE(picture.find("</svg>"), std::string::npos);
  nlohmann::json events = nlohmann::json::parse(slurp(trace)).at("traceEvents");
  // One complete event per compute op of each rank's program (the default schedule is DualPipe),
  // lasting that op's cost under the default costs F=1, B=2, W=1, FB=3 (one unit shown as 1 ms).
  // Every rank holds two stages of 4 micro-batches each: 8 x (F + B) = 24 units of work.
  const dualpipe::schedule::Schedule schedule =
      dualpipe::schedule::build_schedule("dualpipe", 4, 8);
  std::vector<int> complete(4, 0);
  std::vector<double> busy_us(4, 0.0);
  int named = 0;
  for (const auto& event : events) {
    if (event.at("ph") == "X") {
      const int tid = event.at("tid").get<int>();
      ASSERT_GE(tid, 0);
      ASSERT_LT(tid, 4);
      ++complete[tid];
      const double dur = event.at("dur").get<double>();
      const std::string kind = event.at("cat");
      // A deferred backward (alone or in an FB) leaves its W part to the W op.
      if (kind == "F" || kind == "W") {
        EXPECT_EQ(dur, 1000) << event;
      } else if (kind == "B") {
        EXPECT_TRUE(dur == 2000 || dur == 1000) << event;
      } else {
        EXPECT_EQ(kind, "FB") << event;
        EXPECT_TRUE(dur == 3000 || dur == 2000) << event;
      }
      busy_us[tid] += dur;
      std::string name = event.at("name");
      // The forward of micro-batch 2 on the last stage of direction 0, alone or in an FB.
      if (tid == 3 && (name == "F d0 s3 mb2" || name.rfind("FB d0 s3 mb2 ", 0) == 0)) {
        ++named;
      }
    }
  }
  for (int r = 0; r < 4; ++r) {
    int compute_ops = 0;
    for (const dualpipe::schedule::Op& op : schedule.programs[r]) compute_ops += op.is_compute();
    EXPECT_EQ(complete[r], compute_ops) << "rank " << r;
    EXPECT_EQ(busy_us[r], 24000) << "rank " << r;
  }
  EXPECT_EQ(named, 1);
}

TEST(SimCommand, BadArgumentsFailWithOneClearLine) {
  const std::string bad_file = temp_path("bad.json");
  std::ofstream(bad_file) << "{\"schedule\": \"dualpipe\", \"pp\": 2, \"chunks\": 4, \"ranks\": "
                             "[[\"F0.0\", \"Q7\"], []]}";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--schedule nope", "nope"},
      {"--schedule dualpipe --ranks 7", "7"},
      {"--schedule dualpipe --ranks 8 --microbatches 6", "6"},
      {"--costs F=-1", "F=-1"},
      {"--costs 'F=1;B=2'", "1;B=2"},
      {"--costs X=1", "X"},
      {"--schedule-file " + bad_file, "bad.json"},
      {"--schedule-file /nonexistent/schedule.json", "nonexistent"},
      {"--compare dualpipe,nope --ranks 4 --microbatches 8", "nope"},
  };
  for (const auto& [args, mention] : cases) {
    CliRun run = run_sim(args);
    EXPECT_NE(run.exit_code, 0) << args;
    EXPECT_NE(run.err.find("dualpipe sim: error: "), std::string::npos) << args << ": " << run.err;
    EXPECT_NE(run.err.find(mention), std::string::npos) << args << ": " << run.err;
    EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << args << ": " << run.err;
  }
  // CLI11's own parse errors (bad number, unknown format) also exit non-zero.
  EXPECT_NE(run_sim("--ranks eight").exit_code, 0);
  EXPECT_NE(run_sim("--format yaml").exit_code, 0);
}

// Issue 15: nothing a user passes makes `dualpipe sim` allocate without limit, and the error
// names the value. Before: /dev/zero was read to 8.4 GB, 10^6 x 10^6 sizes built unbounded.
TEST(SimCommand, EndlessScheduleFileStopsAtTheSizeCap) {
  CliRun run = run_sim("--schedule-file /dev/zero");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("schedule file '/dev/zero' is larger than the limit"), std::string::npos)
      << run.err;
}

TEST(SimCommand, HugeSizesAreRefusedNamingTheLimits) {
  CliRun run = run_sim("--ranks 1000000 --microbatches 1000000");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("num_ranks=1000000, num_microbatches=1000000"), std::string::npos)
      << run.err;
  run = run_sim("--ranks 99999999999");
  EXPECT_NE(run.exit_code, 0);
  EXPECT_NE(run.err.find("expected an integer in [-2147483648, 2147483647], got '99999999999'"),
            std::string::npos)
      << run.err;
}

TEST(SimCommand, RefusedSizesSayWhatIsAccepted) {
  CliRun run = run_sim("--schedule dualpipe --ranks 4 --microbatches 6");
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("num_microbatches=8 would do"), std::string::npos) << run.err;
}

}  // namespace
