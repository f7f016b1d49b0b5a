// The launcher on real processes: launch_local over shell commands, and `dualpipe launch` over
// tests/runtime/launch_worker.cpp (init_distributed + Gloo collectives).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "dualpipe/runtime/launcher.h"

namespace dualpipe::runtime {
namespace {

// NOTE: no test here asserts on wall-clock time: "stops the job" and "does not hang" are the
// exit codes and messages below, and ctest's per-test TIMEOUT catches a hang.

struct Result {
  int exit_code = -1;
  std::string output;
};

// Runs a shell command line, capturing stdout and stderr together.
Result run(const std::string& command) {
  Result result;
  FILE* pipe = ::popen(("{ " + command + "; } 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.output.append(buffer, n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// Runs launch_local with its output sent to a temporary file, returns (exit code, output).
std::pair<int, std::string> launch_captured(LaunchOptions options) {
  FILE* file = std::tmpfile();
  options.stdout_fd = ::fileno(file);
  options.stderr_fd = ::fileno(file);
  const int code = launch_local(options);
  std::rewind(file);
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) output.append(buffer, n);
  std::fclose(file);
  return {code, output};
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A fresh empty folder for files the ranks of one test signal each other with; removed with the
// object.
struct TempDir {
  std::string path;
  TempDir() {
    std::string pattern = ::testing::TempDir() + "dualpipe_launch_XXXXXX";
    if (::mkdtemp(pattern.data()) != nullptr) path = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path.empty()) std::filesystem::remove_all(path, ignored);
  }
};

// Shell code that waits until `file` exists, polling every 10 ms for at most 60 s; when it never
// appears it runs `give_up`, prints why and exits 99, which no test expects.
std::string wait_for_file(const std::string& file, const std::string& give_up = "") {
  return "i=0; while [ ! -e " + file + " ]; do i=$((i+1)); if [ $i -gt 6000 ]; then " + give_up +
         " echo 'gave up waiting for " + file + "'; exit 99; fi; sleep 0.01; done; ";
}

TEST(LaunchLocalTest, PrefixesEveryLineAndSetsTheEnvironment) {
  LaunchOptions options;
  options.num_ranks = 3;
  options.master_port = 23456;
  options.command = {"/bin/sh", "-c",
                     "echo \"env $RANK/$WORLD_SIZE $LOCAL_RANK/$LOCAL_WORLD_SIZE $MASTER_ADDR "
                     "$MASTER_PORT $OMP_NUM_THREADS $DUALPIPE_LAUNCHED\"; printf 'two\\nparts'; "
                     "echo err >&2"};
  const auto [code, output] = launch_captured(options);
  EXPECT_EQ(code, 0) << output;
  for (int k = 0; k < 3; ++k) {
    const std::string prefix = "[rank " + std::to_string(k) + "] ";
    EXPECT_TRUE(contains(output, prefix + "env " + std::to_string(k) + "/3 " + std::to_string(k) +
                                     "/3 127.0.0.1 23456 1 1\n"))
        << output;
    EXPECT_TRUE(contains(output, prefix + "two\n")) << output;
    EXPECT_TRUE(contains(output, prefix + "parts\n")) << output;
    EXPECT_TRUE(contains(output, prefix + "err\n")) << output;
  }
}

// Node 1 of a 2 x 2 job runs global ranks 2 and 3 with torchrun's variables, and no file store
// (the ranks of several nodes meet in rank 0's TCPStore).
// Node 1 of a 2 x 2 job whose rank 0 is at 10.1.2.3:29400.
LaunchOptions second_of_two_nodes() {
  LaunchOptions options;
  options.num_ranks = 2;
  options.num_nodes = 2;
  options.node_rank = 1;
  options.master_addr = "10.1.2.3";
  options.master_port = 29400;
  return options;
}

TEST(LaunchLocalTest, SecondNodeOfTwoRunsGlobalRanksTwoAndThree) {
  LaunchOptions options = second_of_two_nodes();
  options.command = {"/bin/sh", "-c",
                     "echo \"env $RANK/$WORLD_SIZE $LOCAL_RANK/$LOCAL_WORLD_SIZE $GROUP_RANK "
                     "$MASTER_ADDR:$MASTER_PORT store=${DUALPIPE_STORE_FILE:-none}\""};
  const auto [code, output] = launch_captured(options);
  EXPECT_EQ(code, 0) << output;
  EXPECT_TRUE(contains(output, "[rank 2] env 2/4 0/2 1 10.1.2.3:29400 store=none\n")) << output;
  EXPECT_TRUE(contains(output, "[rank 3] env 3/4 1/2 1 10.1.2.3:29400 store=none\n")) << output;
}

TEST(LaunchLocalTest, FollowsTheWaitForChainToAnotherNode) {
  // Node 1 of 2 (ranks 2 and 3): rank 2 fails first, waiting for rank 3, which reported that it
  // waited for rank 0 on the other node: the final line blames rank 0, not a rank of this node.
  LaunchOptions options = second_of_two_nodes();
  options.grace_period = std::chrono::milliseconds(500);
  const std::string report = "$DUALPIPE_ERROR_DIR/error.";
  options.command = {
      "/bin/sh", "-c",
      "if [ $RANK = 3 ]; then echo '200 rank 3 waiting for a header from rank 0 failed: "
      "Connection reset by peer; peers it waited for: rank 0 (host 10.1.2.3)' > " +
          report + "3.tmp; mv " + report + "3.tmp " + report + "3; sleep 60; fi; " +
          wait_for_file(report + "3") +
          "echo '100 rank 2 waiting for the allreduce of x with ranks 2, 3 failed: Operation "
          "timed out!; peers it waited for: rank 3' > " +
          report + "2; exit 1"};
  const auto [code, output] = launch_captured(options);
  EXPECT_EQ(code, 1) << output;
  EXPECT_TRUE(contains(output,
                       "dualpipe launch: failed: rank 0 (on another node) stopped answering its "
                       "peers; first to fail here waiting for it: rank 2 exited with status 1"))
      << output;
}

TEST(LaunchLocalTest, SeveralNodesNeedTheirMaster) {
  LaunchOptions options;
  options.num_ranks = 2;
  options.num_nodes = 2;
  options.command = {"true"};
  try {
    launch_local(options);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_TRUE(contains(e.what(), "--master-addr")) << e.what();
  }
  options.master_addr = "10.1.2.3";
  options.master_port = 29400;
  options.node_rank = 2;
  EXPECT_THROW(launch_local(options), std::invalid_argument);
}

// A rank that cannot be started (here: no file descriptor left for its pipes) stops the ranks
// already started; none is left running. The shell limits the launcher's descriptors.
TEST(LaunchCommandTest, FailedStartStopsTheStartedRanks) {
  const TempDir dir;
  ASSERT_FALSE(dir.path.empty()) << "mkdtemp failed";
  const Result result =
      run("ulimit -n 24; " + std::string(DUALPIPE_CLI_PATH) +
          " launch -n 40 -- /bin/sh -c 'echo $$ > " + dir.path + "/pid.$RANK; exec sleep 60'");
  EXPECT_NE(result.exit_code, 0) << result.output;
  EXPECT_TRUE(contains(result.output, "pipe for rank")) << result.output;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path)) {
    std::ifstream in(entry.path());
    pid_t pid = 0;
    in >> pid;
    // The launcher killed and reaped it: the pid is gone (or reused by an unrelated process,
    // which then is not our sleep).
    const std::string cmdline = "/proc/" + std::to_string(pid) + "/cmdline";
    std::ifstream proc(cmdline);
    std::string text;
    std::getline(proc, text);
    EXPECT_EQ(text.find("sleep"), std::string::npos) << entry.path() << ": pid " << pid;
  }
}

TEST(LaunchLocalTest, PicksAFreePortAndExportsTheTimeout) {
  LaunchOptions options;
  options.num_ranks = 1;
  options.timeout_s = 7;
  options.command = {"/bin/sh", "-c", "echo port=$MASTER_PORT timeout=$DUALPIPE_TIMEOUT"};
  const auto [code, output] = launch_captured(options);
  EXPECT_EQ(code, 0);
  EXPECT_FALSE(contains(output, "port=0 ")) << output;
  EXPECT_TRUE(contains(output, "timeout=7")) << output;
}

TEST(LaunchLocalTest, FailingRankStopsTheOthers) {
  const TempDir dir;
  ASSERT_FALSE(dir.path.empty()) << "mkdtemp failed";
  LaunchOptions options;
  options.num_ranks = 3;
  options.grace_period = std::chrono::milliseconds(500);
  // Rank 1 fails; ranks 0 and 2 would sleep for a minute; rank 2 ignores SIGTERM (so the
  // launcher has to SIGKILL it), and rank 1 fails only once rank 2 says it ignores SIGTERM.
  const std::string ignoring = dir.path + "/rank2_ignores_term";
  const std::string rank1 = "if [ $RANK = 1 ]; then " + wait_for_file(ignoring) + "exit 3; fi; ";
  const std::string rank2 = "if [ $RANK = 2 ]; then trap '' TERM; touch " + ignoring + "; fi; ";
  options.command = {"/bin/sh", "-c", rank1 + rank2 + "sleep 60 & wait; sleep 60"};
  const auto [code, output] = launch_captured(options);
  EXPECT_EQ(code, 3) << output;
  EXPECT_TRUE(contains(output, "rank 1 exited with status 3")) << output;
  EXPECT_TRUE(contains(output, "SIGKILL")) << output;
}

TEST(LaunchLocalTest, ReportsASignal) {
  LaunchOptions options;
  options.num_ranks = 2;
  options.command = {"/bin/sh", "-c", "if [ $RANK = 0 ]; then kill -9 $$; fi; sleep 60"};
  const auto [code, output] = launch_captured(options);
  EXPECT_EQ(code, 128 + 9) << output;
  EXPECT_TRUE(contains(output, "rank 0 was killed by signal 9")) << output;
}

TEST(LaunchLocalTest, MissingProgram) {
  LaunchOptions options;
  options.num_ranks = 2;
  options.command = {"/nonexistent/program"};
  const auto [code, output] = launch_captured(options);
  EXPECT_EQ(code, 127) << output;
  EXPECT_TRUE(contains(output, "cannot execute")) << output;
}

TEST(LaunchLocalTest, RejectsBadOptions) {
  LaunchOptions options;
  options.num_ranks = 0;
  options.command = {"true"};
  EXPECT_THROW(launch_local(options), std::invalid_argument);
  options.num_ranks = 1;
  options.command.clear();
  EXPECT_THROW(launch_local(options), std::invalid_argument);
}

TEST(LaunchCommandTest, ForwardsSigtermToTheRanks) {
  const std::string cli = DUALPIPE_CLI_PATH;
  const TempDir dir;
  ASSERT_FALSE(dir.path.empty()) << "mkdtemp failed";
  const std::string& d = dir.path;
  // The launcher runs in the background under sh, which sends it SIGTERM once both ranks are up
  // (so the launcher has its signal handling in place).
  const Result result =
      run(cli + " launch -n 2 -- /bin/sh -c \"touch " + d + "/up.\\$RANK; sleep 60\" & pid=$!; " +
          wait_for_file(d + "/up.0", "kill -KILL $pid;") +
          wait_for_file(d + "/up.1", "kill -KILL $pid;") + "kill -TERM $pid; wait $pid");
  EXPECT_EQ(result.exit_code, 128 + SIGTERM) << result.output;
  EXPECT_TRUE(contains(result.output, "forwarding")) << result.output;
}

std::string launch_worker(int num_ranks, const std::string& mode) {
  return std::string(DUALPIPE_CLI_PATH) + " launch -n " + std::to_string(num_ranks) +
         " --timeout 5 --grace 2 -- " + DUALPIPE_LAUNCH_WORKER_PATH + " " + mode;
}

TEST(LaunchCommandTest, WorkersAllreduce) {
  const Result result = run(launch_worker(3, "allreduce"));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  for (int k = 0; k < 3; ++k) {
    const std::string prefix = "[rank " + std::to_string(k) + "] ";
    EXPECT_TRUE(contains(result.output, prefix + "rank " + std::to_string(k) +
                                            " of 3 joined via dualpipe launch, allreduce sum 6\n"))
        << result.output;
    EXPECT_TRUE(contains(result.output, prefix + "rank " + std::to_string(k) + " stderr line\n"))
        << result.output;
  }
}

// A local job opens no socket another host can reach: its ranks meet in a file store in a
// private directory (not a TCPStore on every interface), and Gloo binds 127.0.0.1.
TEST(LaunchCommandTest, LocalJobListensOnLoopbackOnly) {
  const std::string tmp = ::testing::TempDir() + "dualpipe-store-test";
  std::filesystem::create_directories(tmp);
  const Result result = run("TMPDIR=" + tmp + " " + launch_worker(3, "sockets"));
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_FALSE(contains(result.output, "non-loopback")) << result.output;
  EXPECT_TRUE(contains(result.output, "allreduce sum 6")) << result.output;
  // The private store directory is gone with the job.
  EXPECT_TRUE(std::filesystem::is_empty(tmp)) << "left in " << tmp;
  std::filesystem::remove_all(tmp);
}

TEST(LaunchCommandTest, RankExitingMidRunStopsTheJob) {
  const Result result = run(launch_worker(3, "exit"));
  EXPECT_EQ(result.exit_code, 3) << result.output;
  EXPECT_TRUE(contains(result.output, "failed: rank 1 exited with status 3")) << result.output;
}

TEST(LaunchCommandTest, KilledRankIsReported) {
  const Result result = run(launch_worker(3, "kill"));
  EXPECT_EQ(result.exit_code, 128 + 9) << result.output;
  EXPECT_TRUE(contains(result.output, "failed: rank 1 was killed by signal 9")) << result.output;
}

TEST(LaunchCommandTest, HungRankTimesOutTheOthers) {
  const Result result = run(launch_worker(3, "hang"));
  EXPECT_NE(result.exit_code, 0) << result.output;
  // Rank 0 or 2 gives up after the 5 s timeout and fails first; the launcher then stops rank 1.
  EXPECT_TRUE(contains(result.output, "failed: rank 0") ||
              contains(result.output, "failed: rank 2"))
      << result.output;
}

}  // namespace
}  // namespace dualpipe::runtime
