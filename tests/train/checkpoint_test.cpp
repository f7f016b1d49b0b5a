#include "dualpipe/train/checkpoint.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "small_disk.h"

namespace dualpipe::train {
namespace {

namespace fs = std::filesystem;
using testing::SmallDisk;

fs::path temp_run(const std::string& name) {
  fs::path dir =
      fs::temp_directory_path() / ("dualpipe_ckpt_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  return dir;
}

TEST(Checkpoint, AtomicWriteLeavesNoTemporaryFile) {
  const fs::path dir = temp_run("atomic");
  write_file_atomic((dir / "sub" / "f.txt").string(), "hello");
  write_file_atomic((dir / "sub" / "f.txt").string(), "again");
  std::ifstream in(dir / "sub" / "f.txt");
  std::string text;
  in >> text;
  EXPECT_EQ(text, "again");
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir / "sub")) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
  fs::remove_all(dir);
}

TEST(Checkpoint, TensorsRoundTripBitForBit) {
  const fs::path dir = temp_run("tensors");
  NamedTensors t{{"w", at::randn({3, 4})}, {"step", at::tensor(int64_t{5})}};
  save_tensors((dir / "r.pt").string(), t);
  const NamedTensors back = load_tensors((dir / "r.pt").string());
  ASSERT_EQ(back.size(), 2u);
  EXPECT_TRUE(at::equal(back.at("w"), t.at("w")));
  EXPECT_EQ(back.at("step").item<int64_t>(), 5);
  EXPECT_THROW(load_tensors((dir / "missing.pt").string()), std::runtime_error);
  fs::remove_all(dir);
}

TEST(Checkpoint, CommitPointsAtLatestAndKeepsTwo) {
  const fs::path dir = temp_run("commit");
  EXPECT_FALSE(has_checkpoint(dir.string()));
  EXPECT_THROW(read_latest_checkpoint(dir.string()), std::invalid_argument);
  for (int step : {10, 20, 30}) {
    Manifest m;
    m.step = step;
    m.num_ranks = 1;
    m.schedule = "1f1b";
    m.config_hash = "abc";
    m.dir = checkpoint_dir_name(step);
    m.files = {rank_file_name(step, 0)};
    m.data_position = static_cast<std::uint64_t>(step) * 8;
    save_tensors((dir / m.files[0]).string(), {{"x", at::ones({1})}});
    commit_checkpoint(dir.string(), m);
  }
  const Manifest latest = read_latest_checkpoint(dir.string());
  EXPECT_EQ(latest.step, 30);
  EXPECT_EQ(latest.data_position, 240u);
  EXPECT_EQ(latest.files[0], "checkpoints/step-000030/rank-0.pt");
  EXPECT_FALSE(fs::exists(dir / "checkpoints/step-000010"));
  EXPECT_TRUE(fs::exists(dir / "checkpoints/step-000020"));
  fs::remove(dir / latest.files[0]);
  EXPECT_THROW(read_latest_checkpoint(dir.string()), std::invalid_argument);
  fs::remove_all(dir);
}

// The message of the exception of type E that `f` throws ("" when it throws none).
template <typename E, typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

TEST(Checkpoint, DigestCatchesAFlippedByteAndATruncatedFile) {
  const fs::path dir = temp_run("digest");
  const std::string path = (dir / "r.pt").string();
  const FileDigest digest = save_tensors(path, {{"w", at::randn({64, 64})}});
  EXPECT_EQ(digest.bytes, fs::file_size(path));
  EXPECT_EQ(load_tensors(path, digest).size(), 1u);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(digest.bytes / 2));
    f.put('\x5a');
  }
  std::string error = error_of<std::runtime_error>([&] { load_tensors(path, digest); });
  EXPECT_NE(error.find(path + " is damaged: its FNV-1a-64 checksum is"), std::string::npos)
      << error;
  fs::resize_file(path, digest.bytes - 10);
  error = error_of<std::runtime_error>([&] { load_tensors(path, digest); });
  EXPECT_NE(error.find("has " + std::to_string(digest.bytes - 10) +
                       " bytes, the manifest expects " + std::to_string(digest.bytes)),
            std::string::npos)
      << error;
  // Unchecked, the truncated file still fails in one line, without LibTorch's backtrace.
  error = error_of<std::runtime_error>([&] { load_tensors(path); });
  EXPECT_NE(error.find("cannot read checkpoint file " + path), std::string::npos) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;
  fs::remove_all(dir);
}

nlohmann::json valid_manifest() {
  Manifest m;
  m.step = 4;
  m.num_ranks = 2;
  m.schedule = "dualpipe";
  m.config_hash = "abc";
  m.dir = checkpoint_dir_name(4);
  m.files = {rank_file_name(4, 0), rank_file_name(4, 1)};
  m.file_digests = {{10, 0x0123456789abcdefULL}, {20, 0xfedcba9876543210ULL}};
  m.config = {{"steps", 6}};
  return to_json(m);
}

TEST(Checkpoint, ManifestRoundTripsDigests) {
  const Manifest m = manifest_from_json(valid_manifest());
  ASSERT_EQ(m.file_digests.size(), 2u);
  EXPECT_EQ(m.file_digests[1].bytes, 20u);
  EXPECT_EQ(m.file_digests[1].fnv1a64, 0xfedcba9876543210ULL);
  EXPECT_EQ(valid_manifest()["file_digests"][0]["fnv1a64"], "0123456789abcdef");
}

// What a forged or damaged manifest may not say: each edit below alone is refused, with a
// message holding the given text.
TEST(Checkpoint, ManifestRefusesForgedStepsAndFiles) {
  const std::vector<std::pair<std::function<void(nlohmann::json&)>, std::string>> forgeries = {
      {[](nlohmann::json& j) { j["step"] = -5; }, "integer >= 0, got -5"},
      {[](nlohmann::json& j) { j["step"] = 2.5; }, "integer >= 0, got 2.5"},
      {[](nlohmann::json& j) { j["step"] = "4"; }, "integer >= 0"},
      {[](nlohmann::json& j) { j["step"] = 999; }, "step 999 is beyond the run's 6 steps"},
      {[](nlohmann::json& j) { j["step"] = 5; }, "the checkpoint of step 5 lives in"},
      {[](nlohmann::json& j) { j["files"][1] = "/etc/passwd"; }, "(rank 1) is \"/etc/passwd\""},
      {[](nlohmann::json& j) { j["files"][0] = "checkpoints/step-000004/../../../x"; }, "(rank 0)"},
      {[](nlohmann::json& j) { j["files"][0] = "rank-0.pt"; }, "(rank 0)"},
      {[](nlohmann::json& j) { j["files"].push_back("x"); }, "a rank file per rank"},
      {[](nlohmann::json& j) { j["dir"] = "/tmp"; }, "\"dir\" is \"/tmp\""},
      {[](nlohmann::json& j) { j["file_digests"][0]["fnv1a64"] = "xyz"; }, "16 hex digits"},
      {[](nlohmann::json& j) { j["file_digests"].erase(1); }, "one entry per rank file"},
  };
  for (const auto& [forge, expected] : forgeries) {
    nlohmann::json json = valid_manifest();
    forge(json);
    const std::string error = error_of<std::invalid_argument>([&] { manifest_from_json(json); });
    EXPECT_NE(error.find(expected), std::string::npos)
        << "manifest " << json.dump() << "\nerror: " << error;
  }
  // A manifest of an older dualpipe (no digests) is read; its files load unchecked.
  nlohmann::json old = valid_manifest();
  old.erase("file_digests");
  EXPECT_TRUE(manifest_from_json(old).file_digests.empty());
}

TEST(Checkpoint, FailedAtomicWriteRemovesItsTemporaryFile) {
  const fs::path dir = temp_run("full");
  const SmallDisk disk(dir, "64k");
  if (!disk.mounted()) {
    GTEST_SKIP() << "cannot mount a tmpfs at " << dir << " (" << disk.error()
                 << "; needs root or CAP_SYS_ADMIN)";
  }
  const std::string path = (dir / "big.pt").string();
  const std::string error =
      error_of<std::runtime_error>([&] { write_file_atomic(path, std::string(1 << 20, 'x')); });
  EXPECT_NE(error.find("No space left on device"), std::string::npos) << error;
  EXPECT_TRUE(fs::is_empty(dir)) << "left behind: " << fs::directory_iterator(dir)->path();
}

TEST(Checkpoint, RemoveTemporaryFilesTakesOnlyTemporaryFiles) {
  const fs::path dir = temp_run("sweep");
  for (const char* name : {"checkpoint.json.tmp.12", "checkpoints/step-000002/rank-1.pt.tmp.345",
                           "checkpoints/step-000002/rank-0.pt", "metrics.jsonl", "notes.tmp.txt",
                           "checkpoints/step-000002/rank-2.pt.tmp."}) {
    write_file_atomic((dir / name).string(), "x");
  }
  remove_temporary_files(dir.string());
  EXPECT_FALSE(fs::exists(dir / "checkpoint.json.tmp.12"));
  EXPECT_FALSE(fs::exists(dir / "checkpoints/step-000002/rank-1.pt.tmp.345"));
  for (const char* kept : {"checkpoints/step-000002/rank-0.pt", "metrics.jsonl", "notes.tmp.txt",
                           "checkpoints/step-000002/rank-2.pt.tmp."}) {
    EXPECT_TRUE(fs::exists(dir / kept)) << kept;
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dualpipe::train
