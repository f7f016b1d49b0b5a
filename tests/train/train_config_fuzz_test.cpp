// Seeded fuzzing of config files: mutations of a valid TOML (and JSON) config (flipped digits,
// deleted keys, swapped types, truncation, stray bytes) are either read and validated or
// rejected with std::invalid_argument: no crash, no other exception, no silent coercion.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "dualpipe/train/train_config.h"

namespace dualpipe::train {
namespace {

constexpr unsigned kSeed = 15;
constexpr int kMutations = 300;

// A TOML file of every key of `config`.
std::string to_toml(const TrainConfig& config) {
  std::ostringstream out;
  const nlohmann::json json = to_json(config);  // NOTE: items() of a temporary would dangle
  for (const auto& item : json.items()) out << item.key() << " = " << item.value() << "\n";
  return out.str();
}

enum class Outcome { kAccepted, kRejected };

Outcome load(const std::string& text, const std::string& extension, TrainConfig* out = nullptr) {
  const std::filesystem::path path = std::filesystem::temp_directory_path() /
                                     ("dualpipe_fuzz_" + std::to_string(::getpid()) + extension);
  std::ofstream(path, std::ios::binary) << text;
  Outcome outcome = Outcome::kRejected;
  try {
    const TrainConfig config = load_config_file(path.string());
    config.validate();
    if (out != nullptr) *out = config;
    outcome = Outcome::kAccepted;
  } catch (const std::invalid_argument&) {
  } catch (const std::exception& e) {
    ADD_FAILURE() << typeid(e).name() << ": " << e.what() << "\n" << text;
  }
  std::filesystem::remove(path);
  return outcome;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string join(const std::vector<std::string>& lines) {
  std::string text;
  for (const std::string& line : lines) text += line + "\n";
  return text;
}

std::string mutate(const std::string& valid, std::mt19937& rng) {
  std::vector<std::string> lines = lines_of(valid);
  std::string& line = lines[rng() % lines.size()];
  const std::size_t eq = line.find(" = ");
  const char* swaps[] = {"true",  "64.5", "-1",          "99999999999",
                         "\"x\"", "[1]",  "{a = 1}",     "1e400",
                         "nan",   "0",    "-2147483649", "18446744073709551616"};
  switch (rng() % 5) {
    case 0: {  // flip a digit
      std::vector<std::size_t> digits;
      for (std::size_t i = 0; i < line.size(); ++i) {
        if (std::isdigit(static_cast<unsigned char>(line[i]))) digits.push_back(i);
      }
      if (!digits.empty()) line[digits[rng() % digits.size()]] = char('0' + rng() % 10);
      return join(lines);
    }
    case 1:  // delete a key
      line.clear();
      return join(lines);
    case 2:  // swap the type
      line = line.substr(0, eq) + " = " + swaps[rng() % std::size(swaps)];
      return join(lines);
    case 3:  // truncate
      return valid.substr(0, rng() % (valid.size() + 1));
    default: {  // a stray byte
      std::string text = valid;
      const char bytes[] = {'\0', '\n', '[', ']', '=', '"', '#', '.', '\xff'};
      text.insert(rng() % (text.size() + 1), 1, bytes[rng() % sizeof(bytes)]);
      return text;
    }
  }
}

TEST(ConfigFuzz, MutatedTomlIsReadOrRejectedWithInvalidArgument) {
  TrainConfig base;
  base.run_dir = "fuzz-run";
  const std::string valid = to_toml(base);
  TrainConfig read;
  ASSERT_EQ(load(valid, ".toml", &read), Outcome::kAccepted) << valid;
  EXPECT_EQ(to_json(read), to_json(base));
  std::mt19937 rng(kSeed);
  int accepted = 0;
  for (int i = 0; i < kMutations; ++i) {
    const std::string text = mutate(valid, rng);
    TrainConfig config;
    if (load(text, i % 2 == 0 ? ".toml" : ".json", &config) == Outcome::kAccepted) {
      ++accepted;
      // Whatever was accepted kept its types: every integer is an integer of the file.
      EXPECT_GE(config.seed, 0u);
    }
  }
  EXPECT_GT(accepted, 0);
  EXPECT_LT(accepted, kMutations);
}

TEST(ConfigFuzz, MutatedJsonIsReadOrRejectedWithInvalidArgument) {
  const std::string valid = to_json(TrainConfig{}).dump(1);
  ASSERT_EQ(load(valid, ".json"), Outcome::kAccepted);
  std::mt19937 rng(kSeed + 1);
  for (int i = 0; i < 100; ++i) {
    std::string text = valid;
    if (rng() % 2 == 0) {
      text = text.substr(0, rng() % (text.size() + 1));
    } else {
      text[rng() % text.size()] = "0129-.e\"{}[],:"[rng() % 15];
    }
    load(text, ".json");
  }
}

// The known-bad class of issue 15: coerced types are rejected whatever the fuzzer draws.
TEST(ConfigFuzz, CoercedTypesAreRejected) {
  for (const char* bad : {"num_layers = 64.5", "num_layers = true", "seed = -1",
                          "num_layers = 99999999999", "microbatch_size = \"4\""}) {
    EXPECT_EQ(load(std::string(bad) + "\n", ".toml"), Outcome::kRejected) << bad;
  }
}

}  // namespace
}  // namespace dualpipe::train
