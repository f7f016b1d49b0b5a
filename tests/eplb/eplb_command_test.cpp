// Runs the built `dualpipe eplb` binary as a user would.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace {

struct Result {
  int exit_code = -1;
  std::string out;
};

Result run(const std::string& args) {
  const std::string command = std::string(DUALPIPE_CLI_PATH) + " eplb " + args;
  Result result;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) result.out.append(buffer, n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string write_file(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/dualpipe_eplb_" + name;
  std::ofstream(path) << text;
  return path;
}

const char* kReadmeJson =
    "{\"weight\": [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],\n"
    "              [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]]}\n";
const char* kReadmeCsv =
    "# expert loads, one layer per line\n"
    "e0,e1,e2,e3,e4,e5,e6,e7,e8,e9,e10,e11\n"
    "90,132,40,61,104,165,39,4,73,56,183,86\n"
    "20,107,104,64,19,197,187,157,172,86,16,27\n";
const nlohmann::json kExpected = {{5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1},
                                  {7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1}};
const char* kReadmeSizes = " -r 16 -g 4 -n 2 --gpus 8";

class EplbCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(std::ifstream(DUALPIPE_CLI_PATH).good())
        << "build the dualpipe_cli target first: " << DUALPIPE_CLI_PATH;
  }
};

TEST_F(EplbCommand, JsonFilePrintsTableImbalanceAndJson) {
  const Result r = run(write_file("w.json", kReadmeJson) + kReadmeSizes + " 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("hierarchical policy"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("gpu   0 (node  0):   5   6"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("imbalance 2.083 -> 1.208"), std::string::npos) << r.out;
  // The JSON is the last line.
  const size_t last = r.out.rfind('\n', r.out.size() - 2);
  const nlohmann::json doc = nlohmann::json::parse(r.out.substr(last + 1));
  EXPECT_EQ(doc["physical_to_logical"], kExpected);
  EXPECT_LT(doc["imbalance"]["after"][0].get<double>(), doc["imbalance"]["before"][0]);
}

TEST_F(EplbCommand, CsvFileWithHeaderAndComments) {
  const Result r = run(write_file("w.csv", kReadmeCsv) + kReadmeSizes + " -o json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["physical_to_logical"], kExpected);
}

TEST_F(EplbCommand, StdinIsTheDefaultInput) {
  const std::string path = write_file("stdin.json", kReadmeJson);
  Result r = run(std::string(kReadmeSizes) + " -o json < " + path);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["physical_to_logical"], kExpected);
  // CSV on stdin is recognised by its content.
  r = run(std::string("- ") + kReadmeSizes + " -o json < " + write_file("stdin.csv", kReadmeCsv));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["physical_to_logical"], kExpected);
}

// Bad input: non-zero exit and exactly one line on stderr that names the problem.
void expect_one_line_error(const std::string& args, const std::string& needle) {
  const Result r = run(args + " 2>&1 >/dev/null");
  EXPECT_NE(r.exit_code, 0) << args;
  EXPECT_NE(r.out.find(needle), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << "more than one line: " << r.out;
}

TEST_F(EplbCommand, BadInputFailsWithOneClearLine) {
  expect_one_line_error(write_file("bad.json", "[[1, 2], [3, \"x\"]]") + " -r 2 --gpus 1",
                        "layer 1, expert 1 is not a number");
  expect_one_line_error(write_file("broken.json", "[[1, 2") + " -r 2 --gpus 1", "JSON loads");
  expect_one_line_error(write_file("bad.csv", "1,2\n3,oops\n") + " -r 2 --gpus 1",
                        "line 2, field 2: expected a number, got \"oops\"");
  expect_one_line_error(write_file("ragged.csv", "1,2\n3\n") + " -r 2 --gpus 1",
                        "layer 1 has 1 experts");
  expect_one_line_error(write_file("sizes.json", kReadmeJson) + " -r 18 -g 4 -n 2 --gpus 8",
                        "num_replicas=18, num_gpus=8");
  expect_one_line_error("/nonexistent/loads.json -r 2 --gpus 1", "cannot open");
}

// Before: -r 2000000000 ran out of memory.
TEST_F(EplbCommand, HugeReplicaCountIsRefusedBeforeAllocating) {
  const Result r = run(write_file("huge.csv", "1,2,3,4\n") + " -r 2000000000 --gpus 2 2>&1");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("num_replicas=2000000000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("num_replicas <= 65536"), std::string::npos) << r.out;
}

// Before: the first line "100,2,x,4" was dropped as a header and one layer was planned.
TEST_F(EplbCommand, BadFirstLineIsAnErrorAndHugeLoadsAreRefused) {
  Result r = run(write_file("bad_first.csv", "100,2,x,4\n1,2,3,4\n") + " -r 4 --gpus 2 2>&1");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("line 1, field 3: expected a number, got \"x\""), std::string::npos)
      << r.out;
  // Before: the imbalance came out as null.
  r = run(write_file("huge_load.csv", "1e308,1e308\n1,2\n") + " -r 2 --gpus 2 2>&1");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_EQ(r.out.find("null"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("load 1e308"), std::string::npos) << r.out;
}

}  // namespace
