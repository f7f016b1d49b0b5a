#include "dualpipe/train/checkpoint.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace dualpipe::train {
namespace {

namespace fs = std::filesystem;

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

}  // namespace
}  // namespace dualpipe::train
