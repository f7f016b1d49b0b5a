// What `dualpipe train` and `dualpipe generate` refuse, end to end with the real binary: a second
// job on a run folder in use, a damaged or forged checkpoint, a disk that runs full.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli_process.h"
#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/metrics.h"
#include "small_disk.h"

namespace dualpipe::train {
namespace {

namespace fs = std::filesystem;
using testing::children_of;
using testing::fresh_dir;
using testing::read_text;
using testing::SmallDisk;
using testing::spawn;
using testing::with;
using Clock = std::chrono::steady_clock;

// Two ranks and a small model: a step takes a fraction of a second on 2 cores.
const std::vector<std::string> kTiny = {
    "train", "--ranks",         "2",    "--layers",          "2", "--hidden",
    "32",    "--heads",         "2",    "--experts",         "4", "--top-k",
    "2",     "--microbatches",  "4",    "--microbatch-size", "2", "--seq-len",
    "32",    "--eval-interval", "1000", "--eval-windows",    "4", "--warmup",
    "2"};

// While alive, makes this process the reaper of its orphaned descendants, so the ranks of a
// launcher killed here can be waited for.
struct ChildSubreaper {
  ChildSubreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 1); }
  ~ChildSubreaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 0); }
};

// SIGKILLs `pid` and its ranks and reaps them all (needs a ChildSubreaper alive).
void kill_job(pid_t pid) {
  const std::vector<pid_t> ranks = children_of(pid);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  for (pid_t r : ranks) ::kill(r, SIGKILL);
  for (pid_t r : ranks) ::waitpid(r, nullptr, 0);
}

// Kills the job at the end of the scope unless it was waited for.
struct JobGuard {
  pid_t pid = -1;
  ~JobGuard() {
    if (pid > 0) kill_job(pid);
  }
};

// The exit code of `dualpipe <args>` (128 + signal when killed); a job still running after
// `limit` is killed and reported as -1, so a check that fails by running on cannot hang.
int run(const std::vector<std::string>& args, const fs::path& log,
        std::chrono::seconds limit = std::chrono::seconds(180)) {
  const ChildSubreaper subreaper;
  const pid_t pid = spawn(args, log);
  const auto deadline = Clock::now() + limit;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (Clock::now() > deadline) {
      kill_job(pid);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int count_lines(const std::string& text) {
  int n = 0;
  for (char c : text) n += c == '\n';
  return n;
}

// Temporary files (`*.tmp.<pid>`) anywhere under `dir`.
std::vector<std::string> temp_files_under(const fs::path& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
    if (e.path().filename().string().find(".tmp.") != std::string::npos) {
      found.push_back(e.path().string());
    }
  }
  return found;
}

// Waits (bounded) until `done()` or the job ends; false when the job ended first.
template <typename Done>
bool wait_until(pid_t job, Done done) {
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (!done() && Clock::now() < deadline) {
    int status = 0;
    if (::waitpid(job, &status, WNOHANG) == job) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

// ---------------------------------------------------------------------------------------------
// Run folder lock

// While a job trains in a run folder, a second job there and a --resume of it both fail at once
// (before starting ranks) naming the holder's pid; once the holder is killed (SIGKILL, no chance
// to clean up) the folder resumes.
TEST(RunSafety, RunFolderInUseRefusesASecondJobAndAResume) {
  const fs::path dir = fresh_dir("lock");
  const ChildSubreaper subreaper;
  JobGuard first;
  first.pid = spawn(
      with(kTiny, {"--steps", "100000", "--checkpoint-interval", "1", "--run-dir", dir.string()}),
      dir.string() + ".log");
  ASSERT_TRUE(wait_until(first.pid, [&] { return has_checkpoint(dir.string()); }))
      << read_text(dir.string() + ".log");

  for (const auto& args :
       {with(kTiny, {"--steps", "1", "--run-dir", dir.string()}),
        std::vector<std::string>{"train", "--resume", dir.string(), "--steps", "1"}}) {
    const fs::path log = dir.string() + ".second";
    EXPECT_EQ(run(args, log, std::chrono::seconds(60)), 1) << read_text(log);
    const std::string text = read_text(log);
    EXPECT_EQ(count_lines(text), 1) << text;
    EXPECT_NE(text.find("in use"), std::string::npos) << text;
    EXPECT_NE(text.find("pid " + std::to_string(first.pid)), std::string::npos) << text;
    EXPECT_EQ(text.find("starting"), std::string::npos) << text;  // no rank was started
  }

  kill_job(first.pid);
  first.pid = -1;
  const int step = read_latest_checkpoint(dir.string()).step;
  const fs::path log = dir.string() + ".resumed";
  EXPECT_EQ(run({"train", "--resume", dir.string(), "--steps", std::to_string(step + 1)}, log), 0)
      << read_text(log);
  EXPECT_EQ(read_latest_checkpoint(dir.string()).step, step + 1);
  EXPECT_TRUE(temp_files_under(dir).empty());
  fs::remove_all(dir);
  fs::remove(dir.string() + ".log");
  fs::remove(dir.string() + ".second");
  fs::remove(dir.string() + ".resumed");
}

// ---------------------------------------------------------------------------------------------
// Checkpoint integrity

// A finished 2-step run, trained once per test binary and copied for each damage; removed when
// the binary exits.
struct TrainedRun {
  fs::path dir = fresh_dir("trained");
  TrainedRun() {
    const int code =
        run(with(kTiny, {"--steps", "2", "--run-dir", dir.string()}), dir.string() + ".log");
    if (code != 0) ADD_FAILURE() << read_text(dir.string() + ".log");
  }
  ~TrainedRun() {
    std::error_code ec;
    fs::remove_all(dir, ec);
    fs::remove(dir.string() + ".log", ec);
  }
};

const fs::path& trained_run() {
  static const TrainedRun run;
  return run.dir;
}

fs::path damaged_copy(const std::string& name) {
  const fs::path copy = fresh_dir(name);
  fs::copy(trained_run(), copy, fs::copy_options::recursive);
  return copy;
}

nlohmann::json manifest_of(const fs::path& run_dir) {
  return nlohmann::json::parse(read_text(run_dir / "checkpoint.json"));
}

void write_manifest(const fs::path& run_dir, const nlohmann::json& manifest) {
  std::ofstream(run_dir / "checkpoint.json") << manifest.dump(2) << "\n";
}

// `dualpipe generate` and `dualpipe train --resume` on a damaged run folder both fail with one
// line (no C++ backtrace) holding every string of `expected`, and no rank is started.
void expect_refused(const fs::path& run_dir, const std::vector<std::string>& expected) {
  const fs::path log = run_dir.string() + ".log";
  for (const auto& args :
       {std::vector<std::string>{"generate", "--run", run_dir.string(), "--bytes", "4"},
        std::vector<std::string>{"train", "--resume", run_dir.string(), "--steps", "3"}}) {
    EXPECT_EQ(run(args, log, std::chrono::seconds(60)), 1) << args[0] << ": " << read_text(log);
    const std::string text = read_text(log);
    EXPECT_EQ(count_lines(text), 1) << args[0] << ": " << text;
    for (const std::string& s : expected) {
      EXPECT_NE(text.find(s), std::string::npos) << args[0] << " should name " << s << ": " << text;
    }
    EXPECT_EQ(text.find("Exception raised from"), std::string::npos) << text;
    EXPECT_EQ(text.find("starting"), std::string::npos) << text;
  }
  fs::remove(log);
}

TEST(RunSafety, FlippedByteInARankFileIsRefusedNamingFileAndChecksum) {
  const fs::path dir = damaged_copy("flipped");
  const fs::path file = dir / "checkpoints/step-000002/rank-1.pt";
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(fs::file_size(file) / 2));
  const char c = static_cast<char>(f.peek());
  f.seekp(static_cast<std::streamoff>(fs::file_size(file) / 2));
  f.put(static_cast<char>(c ^ 0x10));
  f.close();
  expect_refused(dir, {"rank-1.pt", "checksum is", "the manifest expects"});
  fs::remove_all(dir);
}

TEST(RunSafety, TruncatedRankFileIsRefusedNamingFileAndSize) {
  const fs::path dir = damaged_copy("truncated");
  const fs::path file = dir / "checkpoints/step-000002/rank-0.pt";
  const auto size = fs::file_size(file);
  fs::resize_file(file, size - 100);
  expect_refused(dir, {"rank-0.pt", std::to_string(size), std::to_string(size - 100)});
  fs::remove_all(dir);
}

TEST(RunSafety, MissingRankFileIsRefusedNamingIt) {
  const fs::path dir = damaged_copy("missing");
  fs::remove(dir / "checkpoints/step-000002/rank-1.pt");
  expect_refused(dir, {"rank-1.pt", "missing"});
  fs::remove_all(dir);
}

TEST(RunSafety, ForgedOrNegativeStepIsRefused) {
  for (int step : {999, -5, 1}) {
    const fs::path dir = damaged_copy("step" + std::to_string(step));
    nlohmann::json m = manifest_of(dir);
    m["step"] = step;
    write_manifest(dir, m);
    expect_refused(dir, {"step", std::to_string(step)});
    fs::remove_all(dir);
  }
  const fs::path dir = damaged_copy("step_fraction");
  nlohmann::json m = manifest_of(dir);
  m["step"] = 1.5;
  write_manifest(dir, m);
  expect_refused(dir, {"step"});
  fs::remove_all(dir);
}

// A manifest naming a file outside its checkpoint folder is refused before anything is opened.
TEST(RunSafety, FilesOutsideTheRunFolderAreRefused) {
  for (const std::string& forged :
       {std::string("/etc/passwd"), std::string("../../etc/passwd"),
        std::string("checkpoints/step-000002/../../../etc/passwd"), std::string("config.json")}) {
    const fs::path dir = damaged_copy("outside");
    nlohmann::json m = manifest_of(dir);
    m["files"][1] = forged;
    write_manifest(dir, m);
    expect_refused(dir, {forged, "rank 1"});
    fs::remove_all(dir);
  }
}

// ---------------------------------------------------------------------------------------------
// Disk full

// metrics.jsonl (or metrics.csv) on a full disk (/dev/full): the job stops non-zero naming the
// file instead of training on without its metrics.
TEST(RunSafety, MetricsWriteFailureStopsTheJob) {
  for (const std::string& name : {std::string("metrics.jsonl"), std::string("metrics.csv")}) {
    const fs::path dir = fresh_dir("metrics_full");
    fs::create_directories(dir);
    fs::create_symlink("/dev/full", dir / name);
    const fs::path log = dir.string() + ".log";
    const int code = run(with(kTiny, {"--steps", "2", "--run-dir", dir.string()}), log);
    const std::string text = read_text(log);
    EXPECT_NE(code, 0) << text;
    EXPECT_NE(code, -1) << "still running after 180 s: " << text;
    EXPECT_NE(text.find(name), std::string::npos) << text;
    EXPECT_NE(text.find("No space left"), std::string::npos) << text;
    fs::remove_all(dir);
    fs::remove(log);
  }
}

// A checkpoint that does not fit on the disk: the job fails naming the file and the error, and
// leaves no temporary file behind (not the failed rank's, not the others').
TEST(RunSafety, CheckpointOnAFullDiskFailsAndLeavesNoTemporaryFiles) {
  const fs::path mount_point = fresh_dir("small_disk");
  const SmallDisk disk(mount_point, "160k");
  if (!disk.mounted()) {
    GTEST_SKIP() << "cannot mount a tmpfs at " << mount_point << " (" << disk.error()
                 << "; needs root or CAP_SYS_ADMIN)";
  }
  const fs::path dir = mount_point / "run";
  const fs::path log = mount_point.string() + ".log";
  const int code = run(with(kTiny, {"--steps", "2", "--run-dir", dir.string()}), log);
  const std::string text = read_text(log);
  EXPECT_NE(code, 0) << text;
  EXPECT_NE(code, -1) << "still running after 180 s: " << text;
  EXPECT_NE(text.find("No space left"), std::string::npos) << text;
  EXPECT_NE(text.find(".pt"), std::string::npos) << text;
  EXPECT_FALSE(has_checkpoint(dir.string()));
  EXPECT_EQ(temp_files_under(dir), std::vector<std::string>{}) << text;
  fs::remove(log);
}

}  // namespace
}  // namespace dualpipe::train
