#include "dualpipe/train/train_config.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <toml.hpp>

#include "dualpipe/read_file.h"
#include "dualpipe/schedule/registry.h"

namespace dualpipe::train {
namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw std::invalid_argument(message);
}

std::string hex64(std::uint64_t value) {
  static const char* kDigits = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, value >>= 4) out[static_cast<std::size_t>(i)] = kDigits[value & 15];
  return out;
}

[[noreturn]] void wrong_type(const char* key, const nlohmann::json& value,
                             const std::string& want) {
  throw std::invalid_argument(std::string("config key \"") + key + "\" = " + value.dump() +
                              ": expected " + want);
}

// NOTE: strict on purpose: nlohmann's get<int>() turns 64.5 into 64, true into 1 and
// 99999999999 into 1215752191, and get<uint64_t>() turns -1 into 2^64-1.
void read_key(const nlohmann::json& json, const char* key, int& value) {
  auto it = json.find(key);
  if (it == json.end()) return;
  const std::string want = "an integer in [" + std::to_string(std::numeric_limits<int>::min()) +
                           ", " + std::to_string(std::numeric_limits<int>::max()) + "]";
  if (!it->is_number_integer()) wrong_type(key, *it, want);
  if (it->is_number_unsigned()) {
    const auto v = it->get<std::uint64_t>();
    if (v > static_cast<std::uint64_t>(std::numeric_limits<int>::max())) wrong_type(key, *it, want);
    value = static_cast<int>(v);
    return;
  }
  const auto v = it->get<std::int64_t>();
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max()) {
    wrong_type(key, *it, want);
  }
  value = static_cast<int>(v);
}

void read_key(const nlohmann::json& json, const char* key, std::uint64_t& value) {
  auto it = json.find(key);
  if (it == json.end()) return;
  const char* want = "an integer in [0, 18446744073709551615]";
  if (!it->is_number_integer()) wrong_type(key, *it, want);
  if (!it->is_number_unsigned() && it->get<std::int64_t>() < 0) wrong_type(key, *it, want);
  value = it->get<std::uint64_t>();
}

void read_key(const nlohmann::json& json, const char* key, double& value) {
  auto it = json.find(key);
  if (it == json.end()) return;
  if (!it->is_number() || !std::isfinite(it->get<double>())) {
    wrong_type(key, *it, "a finite number");
  }
  value = it->get<double>();
}

void read_key(const nlohmann::json& json, const char* key, std::string& value) {
  auto it = json.find(key);
  if (it == json.end()) return;
  if (!it->is_string()) wrong_type(key, *it, "a string");
  value = it->get<std::string>();
}

// A flat TOML table of the same keys as the JSON form (strings, integers, floats, booleans).
nlohmann::json toml_to_json(const std::string& text, const std::string& path) {
  std::istringstream in(text);
  toml::value data;
  try {
    data = toml::parse(in, path);
  } catch (const std::exception& e) {
    throw std::invalid_argument("config file " + path + " is not valid TOML: " + e.what());
  }
  if (!data.is_table()) throw std::invalid_argument("config file " + path + " is not a table");
  nlohmann::json json = nlohmann::json::object();
  for (const auto& [key, value] : data.as_table()) {
    if (value.is_integer()) {
      json[key] = value.as_integer();
    } else if (value.is_floating()) {
      json[key] = value.as_floating();
    } else if (value.is_string()) {
      // NOTE: toml::get works on toml11 3.x (Debian 12) and 4.x (Debian 13), whose as_string()
      // return types differ.
      json[key] = toml::get<std::string>(value);
    } else if (value.is_boolean()) {
      json[key] = value.as_boolean();
    } else {
      throw std::invalid_argument("config file " + path + ": key \"" + key +
                                  "\" must be a string or a number");
    }
  }
  return json;
}

}  // namespace

int TrainConfig::num_stages() const {
  return schedule::schedule_placement(schedule, num_ranks, {stages_per_rank}).num_stages();
}

int default_num_layers(const TrainConfig& config) {
  const int stages = config.num_stages();
  const int layers = TrainConfig{}.num_layers;
  return (layers + stages - 1) / stages * stages;
}

void TrainConfig::validate() const {
  require(num_ranks >= 1, "num_ranks must be >= 1, got " + std::to_string(num_ranks));
  // The schedule registry names the allowed schedules and the rank counts each accepts.
  schedule::schedule_placement(schedule, num_ranks, {stages_per_rank});
  require(ep >= 1, "ep must be >= 1, got " + std::to_string(ep));
  require(dp >= 1 && (zero == 0 || zero == 1),
          "dp must be >= 1 and zero 0 or 1, got dp=" + std::to_string(dp) +
              " zero=" + std::to_string(zero));
  require(num_layers >= 1 && num_layers % num_stages() == 0,
          "num_layers must be a positive multiple of the " + std::to_string(num_stages()) +
              " pipeline stages of " + schedule + " on " + std::to_string(num_ranks) +
              " ranks, got num_layers=" + std::to_string(num_layers) +
              " (num_layers=" + std::to_string(default_num_layers(*this)) + " would do)");
  require(hidden_size >= 1 && num_heads >= 1 && hidden_size % num_heads == 0,
          "hidden_size must be a positive multiple of num_heads, got hidden_size=" +
              std::to_string(hidden_size) + " num_heads=" + std::to_string(num_heads));
  require(redundant_experts >= 0 && eplb_interval >= 0,
          "redundant_experts and eplb_interval must be >= 0, got " +
              std::to_string(redundant_experts) + " and " + std::to_string(eplb_interval));
  require(num_experts >= 1 && num_physical_experts() % ep == 0,
          redundant_experts == 0
              ? "num_experts must be a positive multiple of ep, got num_experts=" +
                    std::to_string(num_experts) + " ep=" + std::to_string(ep)
              : "num_experts + redundant_experts (the physical experts) must be a multiple of ep, "
                "got num_experts=" +
                    std::to_string(num_experts) + " redundant_experts=" +
                    std::to_string(redundant_experts) + " ep=" + std::to_string(ep));
  require(top_k >= 1 && top_k <= num_experts,
          "top_k must be in [1, num_experts], got top_k=" + std::to_string(top_k) +
              " num_experts=" + std::to_string(num_experts));
  require(num_microbatches >= 1 && microbatch_size >= 1 && seq_len >= 1,
          "num_microbatches, microbatch_size and seq_len must be >= 1, got " +
              std::to_string(num_microbatches) + ", " + std::to_string(microbatch_size) + ", " +
              std::to_string(seq_len));
  require(microbatch_size % dp == 0,
          "microbatch_size must be a multiple of dp (each replica takes microbatch_size/dp "
          "sequences of every micro-batch), got microbatch_size=" +
              std::to_string(microbatch_size) + " dp=" + std::to_string(dp));
  require(steps >= 1, "steps must be >= 1, got " + std::to_string(steps));
  require(learning_rate > 0.0, "learning_rate must be > 0, got " + std::to_string(learning_rate));
  require(warmup_steps >= 0 && weight_decay >= 0.0,
          "warmup_steps and weight_decay must be >= 0, got " + std::to_string(warmup_steps) +
              " and " + std::to_string(weight_decay));
  require(checkpoint_interval >= 1 && eval_interval >= 1 && eval_windows >= 1,
          "checkpoint_interval, eval_interval and eval_windows must be >= 1, got " +
              std::to_string(checkpoint_interval) + ", " + std::to_string(eval_interval) + ", " +
              std::to_string(eval_windows));
  require(!run_dir.empty(), "run_dir must not be empty");
}

nlohmann::json to_json(const TrainConfig& c) {
  return nlohmann::json{{"schedule", c.schedule},
                        {"num_ranks", c.num_ranks},
                        {"stages_per_rank", c.stages_per_rank},
                        {"ep", c.ep},
                        {"dp", c.dp},
                        {"zero", c.zero},
                        {"num_layers", c.num_layers},
                        {"hidden_size", c.hidden_size},
                        {"num_heads", c.num_heads},
                        {"num_experts", c.num_experts},
                        {"top_k", c.top_k},
                        {"redundant_experts", c.redundant_experts},
                        {"eplb_interval", c.eplb_interval},
                        {"num_microbatches", c.num_microbatches},
                        {"microbatch_size", c.microbatch_size},
                        {"seq_len", c.seq_len},
                        {"steps", c.steps},
                        {"learning_rate", c.learning_rate},
                        {"warmup_steps", c.warmup_steps},
                        {"weight_decay", c.weight_decay},
                        {"seed", c.seed},
                        {"checkpoint_interval", c.checkpoint_interval},
                        {"eval_interval", c.eval_interval},
                        {"eval_windows", c.eval_windows},
                        {"run_dir", c.run_dir},
                        {"data", c.data}};
}

TrainConfig config_from_json(const nlohmann::json& json, const TrainConfig& base) {
  if (!json.is_object()) throw std::invalid_argument("a config must be a JSON object");
  const nlohmann::json known = to_json(base);
  for (const auto& item : json.items()) {
    if (!known.contains(item.key())) {
      std::string allowed;
      for (const auto& k : known.items()) allowed += (allowed.empty() ? "" : ", ") + k.key();
      throw std::invalid_argument("unknown config key \"" + item.key() + "\"; allowed: " + allowed);
    }
  }
  TrainConfig c = base;
  read_key(json, "schedule", c.schedule);
  read_key(json, "num_ranks", c.num_ranks);
  read_key(json, "stages_per_rank", c.stages_per_rank);
  read_key(json, "ep", c.ep);
  read_key(json, "dp", c.dp);
  read_key(json, "zero", c.zero);
  read_key(json, "num_layers", c.num_layers);
  read_key(json, "hidden_size", c.hidden_size);
  read_key(json, "num_heads", c.num_heads);
  read_key(json, "num_experts", c.num_experts);
  read_key(json, "top_k", c.top_k);
  read_key(json, "redundant_experts", c.redundant_experts);
  read_key(json, "eplb_interval", c.eplb_interval);
  read_key(json, "num_microbatches", c.num_microbatches);
  read_key(json, "microbatch_size", c.microbatch_size);
  read_key(json, "seq_len", c.seq_len);
  read_key(json, "steps", c.steps);
  read_key(json, "learning_rate", c.learning_rate);
  read_key(json, "warmup_steps", c.warmup_steps);
  read_key(json, "weight_decay", c.weight_decay);
  read_key(json, "seed", c.seed);
  read_key(json, "checkpoint_interval", c.checkpoint_interval);
  read_key(json, "eval_interval", c.eval_interval);
  read_key(json, "eval_windows", c.eval_windows);
  read_key(json, "run_dir", c.run_dir);
  read_key(json, "data", c.data);
  return c;
}

TrainConfig load_config_file(const std::string& path, const TrainConfig& base) {
  const std::string text = read_file_bounded(path, "config file " + path);
  nlohmann::json json;
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".toml") == 0) {
    json = toml_to_json(text, path);
  } else {
    try {
      json = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw std::invalid_argument("config file " + path + " is not valid JSON: " + e.what());
    }
  }
  try {
    return config_from_json(json, base);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("config file " + path + ": " + e.what());
  }
}

std::string config_hash(const TrainConfig& config) {
  nlohmann::json json = to_json(config);
  for (const char* key :
       {"steps", "checkpoint_interval", "eval_interval", "eval_windows", "run_dir", "dp", "zero"}) {
    json.erase(key);
  }
  // FNV-1a over the canonical (sorted-key) dump.
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (unsigned char ch : json.dump()) {
    hash ^= ch;
    hash *= 0x100000001b3ULL;
  }
  return hex64(hash);
}

}  // namespace dualpipe::train
