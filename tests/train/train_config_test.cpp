#include "dualpipe/train/train_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "dualpipe/schedule/registry.h"

namespace dualpipe::train {
namespace {

TEST(TrainConfig, DefaultsAreValid) {
  TrainConfig c;
  EXPECT_NO_THROW(c.validate());
  EXPECT_EQ(c.schedule, "dualpipe");
  EXPECT_EQ(c.num_ranks, 4);
  EXPECT_EQ(c.num_stages(), 4);
  c.schedule = "dualpipev";
  EXPECT_EQ(c.num_stages(), 8);
}

TEST(TrainConfig, ValidationNamesTheValues) {
  TrainConfig c;
  c.num_layers = 6;
  try {
    c.validate();
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("num_layers=6"), std::string::npos) << e.what();
  }
  c = TrainConfig{};
  c.schedule = "interleaved";
  try {
    c.validate();
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(
        std::string(e.what()).find(
            "unknown schedule \"interleaved\", allowed: dualpipe, dualpipev, 1f1b, zb1p, gpipe"),
        std::string::npos)
        << e.what();
  }
  c = TrainConfig{};
  c.num_ranks = 3;  // DualPipe pairs rank r with R-1-r
  c.num_layers = 3;
  try {
    c.validate();
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of 2, got num_ranks=3"), std::string::npos)
        << e.what();
  }
  c.schedule = "1f1b";
  EXPECT_NO_THROW(c.validate());
  EXPECT_EQ(c.num_stages(), 3);
  c.schedule = "dualpipev";
  c.num_layers = 6;
  EXPECT_EQ(c.num_stages(), 6);
  c = TrainConfig{};
  c.top_k = 5;
  EXPECT_THROW(c.validate(), std::invalid_argument);
  c = TrainConfig{};
  c.ep = 2;
  c.redundant_experts = 1;
  try {
    c.validate();
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("num_experts=4 redundant_experts=1 ep=2"),
              std::string::npos)
        << e.what();
  }
  c.redundant_experts = 2;
  EXPECT_NO_THROW(c.validate());
  c.eplb_interval = -1;
  EXPECT_THROW(c.validate(), std::invalid_argument);
}

TEST(TrainConfig, JsonRoundTripAndUnknownKeys) {
  TrainConfig c;
  c.hidden_size = 96;
  c.learning_rate = 0.01;
  c.data = "/tmp/x";
  c.redundant_experts = 2;
  c.eplb_interval = 25;
  const TrainConfig back = config_from_json(to_json(c));
  EXPECT_EQ(to_json(back), to_json(c));
  EXPECT_THROW(config_from_json(nlohmann::json{{"hiden_size", 3}}), std::invalid_argument);
  EXPECT_THROW(config_from_json(nlohmann::json{{"hidden_size", "big"}}), std::invalid_argument);
}

TEST(TrainConfig, FileOverridesOnlyItsKeys) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("dualpipe_cfg_" + std::to_string(::getpid()) + ".json"))
                               .string();
  std::ofstream(path) << R"({"steps": 7, "schedule": "1f1b"})";
  TrainConfig base;
  base.hidden_size = 48;
  const TrainConfig c = load_config_file(path, base);
  EXPECT_EQ(c.steps, 7);
  EXPECT_EQ(c.schedule, "1f1b");
  EXPECT_EQ(c.hidden_size, 48);
  std::ofstream(path) << "{not json";
  EXPECT_THROW(load_config_file(path), std::invalid_argument);
  std::filesystem::remove(path);
}

TEST(TrainConfig, HashIgnoresRunLengthButNotArithmetic) {
  TrainConfig a, b;
  b.steps = a.steps + 100;
  b.run_dir = "elsewhere";
  b.checkpoint_interval = 3;
  EXPECT_EQ(config_hash(a), config_hash(b));
  b.seed = a.seed + 1;
  EXPECT_NE(config_hash(a), config_hash(b));
  b = a;
  b.redundant_experts = 4;
  EXPECT_NE(config_hash(a), config_hash(b));
  EXPECT_EQ(config_hash(a).size(), 16u);
}

TEST(TrainConfig, TomlFileHoldsTheSameKeys) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("dualpipe_cfg_" + std::to_string(::getpid()) + ".toml"))
                               .string();
  std::ofstream(path) << "schedule = \"zb1p\"\nsteps = 9\nlearning_rate = 0.002\n";
  const TrainConfig c = load_config_file(path);
  EXPECT_EQ(c.schedule, "zb1p");
  EXPECT_EQ(c.steps, 9);
  EXPECT_DOUBLE_EQ(c.learning_rate, 0.002);
  std::ofstream(path) << "steps = [1, 2]\n";
  EXPECT_THROW(load_config_file(path), std::invalid_argument);
  std::ofstream(path) << "steps = = 3\n";
  EXPECT_THROW(load_config_file(path), std::invalid_argument);
  std::ofstream(path) << "stepz = 3\n";
  EXPECT_THROW(load_config_file(path), std::invalid_argument);
  std::filesystem::remove(path);
}

std::string toml_error(const std::string& text) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("dualpipe_types_" + std::to_string(::getpid()) + ".toml"))
                               .string();
  std::ofstream(path) << text;
  try {
    load_config_file(path);
  } catch (const std::invalid_argument& e) {
    std::filesystem::remove(path);
    return e.what();
  }
  std::filesystem::remove(path);
  return "";
}

// Before: 64.5 -> 64, true -> 1, -1 -> 18446744073709551615, 99999999999 -> 1215752191.
TEST(TrainConfig, TomlValuesKeepTheirTypes) {
  const std::string int_range = "expected an integer in [-2147483648, 2147483647]";
  EXPECT_NE(toml_error("num_layers = 64.5\n").find("\"num_layers\" = 64.5: " + int_range),
            std::string::npos)
      << toml_error("num_layers = 64.5\n");
  EXPECT_NE(toml_error("num_layers = true\n").find("\"num_layers\" = true: " + int_range),
            std::string::npos);
  EXPECT_NE(toml_error("num_layers = 99999999999\n").find("= 99999999999: " + int_range),
            std::string::npos);
  EXPECT_NE(toml_error("seed = -1\n").find("\"seed\" = -1: expected an integer in [0, "),
            std::string::npos)
      << toml_error("seed = -1\n");
  EXPECT_NE(toml_error("learning_rate = true\n").find("expected a finite number"),
            std::string::npos);
  EXPECT_NE(toml_error("learning_rate = inf\n").find("expected a finite number"),
            std::string::npos);
  EXPECT_NE(toml_error("schedule = 1\n").find("\"schedule\" = 1: expected a string"),
            std::string::npos);
  EXPECT_EQ(toml_error("learning_rate = 1\nseed = 7\nnum_layers = 8\n"), "");
  // The JSON form reads through the same checks.
  EXPECT_THROW(config_from_json({{"num_layers", 64.5}}), std::invalid_argument);
  EXPECT_THROW(config_from_json({{"seed", -1}}), std::invalid_argument);
  EXPECT_EQ(config_from_json({{"seed", 18446744073709551615ULL}}).seed, 18446744073709551615ULL);
}

// Before: dualpipev stopped with "num_layers must be a positive multiple of the 8 stages".
TEST(TrainConfig, DefaultLayerCountFitsEverySchedule) {
  for (const std::string& name : schedule::schedule_names()) {
    TrainConfig c;
    c.schedule = name;
    c.num_layers = default_num_layers(c);
    EXPECT_NO_THROW(c.validate()) << name;
    EXPECT_GE(c.num_layers, TrainConfig{}.num_layers);
  }
  TrainConfig v;
  v.schedule = "dualpipev";
  EXPECT_EQ(default_num_layers(v), 8);
  try {
    v.validate();
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("num_layers=8 would do"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dualpipe::train
