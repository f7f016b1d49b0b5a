// Seeded fuzzing of the schedule readers: mutations of valid JSON and text schedule files
// (flipped digits, deleted keys, swapped types, truncation, stray bytes) are either read as a
// valid schedule or rejected with std::invalid_argument: no crash, no hang, no other exception.
#include <gtest/gtest.h>

#include <cctype>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "dualpipe/schedule/registry.h"
#include "dualpipe/schedule/serialize.h"
#include "dualpipe/schedule/validator.h"

namespace dualpipe::schedule {
namespace {

constexpr unsigned kSeed = 20261201;
constexpr int kMutationsPerFile = 60;

enum class Outcome { kAccepted, kRejected };

// Reads `text` as sim's load_schedule does (JSON when it starts with '{'), then validates.
// Anything but success or std::invalid_argument fails the test.
Outcome read_and_validate(const std::string& text, const std::string& context) {
  try {
    const std::size_t first = text.find_first_not_of(" \t\r\n");
    const Schedule s = first != std::string::npos && text[first] == '{' ? parse_schedule_json(text)
                                                                        : parse_schedule_text(text);
    validate(s);
    return Outcome::kAccepted;
  } catch (const std::invalid_argument&) {
    return Outcome::kRejected;
  } catch (const std::exception& e) {
    ADD_FAILURE() << context << ": " << typeid(e).name() << ": " << e.what() << "\n" << text;
  }
  return Outcome::kRejected;
}

std::string flip_digit(std::string text, std::mt19937& rng) {
  std::vector<std::size_t> digits;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (std::isdigit(static_cast<unsigned char>(text[i]))) digits.push_back(i);
  }
  if (digits.empty()) return text;
  const std::size_t at = digits[rng() % digits.size()];
  text[at] = static_cast<char>('0' + rng() % 10);
  if (rng() % 4 == 0) text.insert(at, std::string(1 + rng() % 10, '9'));  // a huge number
  return text;
}

std::string truncate(const std::string& text, std::mt19937& rng) {
  return text.substr(0, rng() % (text.size() + 1));
}

std::string stray_byte(std::string text, std::mt19937& rng) {
  const char bytes[] = {'\0', '\n', '{', '}', '[', ']', ',', ':', '"', '-', '.', ' ', '\xff'};
  text.insert(rng() % (text.size() + 1), 1, bytes[rng() % sizeof(bytes)]);
  return text;
}

std::string delete_line(const std::string& text, std::mt19937& rng) {
  std::vector<std::size_t> starts = {0};
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n') starts.push_back(i + 1);
  }
  const std::size_t line = rng() % starts.size();
  const std::size_t end = line + 1 < starts.size() ? starts[line + 1] : text.size();
  return text.substr(0, starts[line]) + text.substr(end);
}

const nlohmann::json kSwaps[] = {
    true, 64.5, -1, 99999999999LL, "x", nullptr, nlohmann::json::array(), nlohmann::json::object()};

// Deletes a key or gives it a value of another type (possibly deep inside "placement").
std::string mutate_json(nlohmann::json json, std::mt19937& rng) {
  nlohmann::json* target = &json;
  if (json.contains("placement") && rng() % 3 == 0) target = &json["placement"];
  std::vector<std::string> keys;
  for (const auto& item : target->items()) keys.push_back(item.key());
  const std::string key = keys[rng() % keys.size()];
  if (rng() % 3 == 0) {
    target->erase(key);
  } else if ((*target)[key].is_array() && !(*target)[key].empty() && rng() % 2 == 0) {
    nlohmann::json& array = (*target)[key];
    nlohmann::json& element = array[rng() % array.size()];
    if (element.is_array() && !element.empty()) {
      element[rng() % element.size()] = kSwaps[rng() % std::size(kSwaps)];
    } else {
      element = kSwaps[rng() % std::size(kSwaps)];
    }
  } else {
    (*target)[key] = kSwaps[rng() % std::size(kSwaps)];
  }
  return json.dump(rng() % 2 == 0 ? -1 : 1);
}

struct Counts {
  int accepted = 0;
  int rejected = 0;
};

void fuzz_text(const std::string& valid, bool json, std::mt19937& rng, Counts& counts) {
  ASSERT_EQ(read_and_validate(valid, "valid"), Outcome::kAccepted);
  for (int i = 0; i < kMutationsPerFile; ++i) {
    std::string mutated;
    switch (rng() % 5) {
      case 0: mutated = flip_digit(valid, rng); break;
      case 1: mutated = truncate(valid, rng); break;
      case 2: mutated = stray_byte(valid, rng); break;
      case 3: mutated = delete_line(valid, rng); break;
      default:
        mutated = json ? mutate_json(nlohmann::json::parse(valid), rng) : flip_digit(valid, rng);
    }
    const Outcome outcome = read_and_validate(mutated, "mutation " + std::to_string(i));
    ++(outcome == Outcome::kAccepted ? counts.accepted : counts.rejected);
  }
}

TEST(ScheduleFuzz, MutatedFilesAreReadOrRejectedWithInvalidArgument) {
  std::mt19937 rng(kSeed);
  Counts counts;
  for (const char* name : {"dualpipe", "dualpipev", "zb1p"}) {
    const Schedule s = build_schedule(name, 4, 8);
    fuzz_text(to_json(s).dump(1), true, rng, counts);
    fuzz_text(to_oracle_json(s).dump(), true, rng, counts);
    fuzz_text(to_text(s), false, rng, counts);
  }
  EXPECT_EQ(counts.accepted + counts.rejected, 9 * kMutationsPerFile);
  EXPECT_GT(counts.rejected, 0);
}

// The known-bad classes of issue 15, whatever the fuzzer happens to draw.
TEST(ScheduleFuzz, KnownBadClassesAreRejected) {
  const Schedule s = build_schedule("dualpipe", 4, 8);
  nlohmann::json chunks = to_oracle_json(s);
  chunks["chunks"] = 9;  // the ops use 8
  EXPECT_EQ(read_and_validate(chunks.dump(), "chunks"), Outcome::kRejected);
  nlohmann::json name = to_json(s);
  name["schedule"] = "dualpipe2";
  EXPECT_EQ(read_and_validate(name.dump(), "name"), Outcome::kRejected);
  nlohmann::json huge = to_oracle_json(s);
  huge["chunks"] = 2000000000;  // would size the validator's tables by it
  EXPECT_EQ(read_and_validate(huge.dump(), "huge chunks"), Outcome::kRejected);
}

}  // namespace
}  // namespace dualpipe::schedule
