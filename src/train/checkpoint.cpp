#include "dualpipe/train/checkpoint.h"

#include <fcntl.h>
#include <torch/serialize.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "dualpipe/read_file.h"

namespace dualpipe::train {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail_io(const std::string& what, const std::string& path) {
  throw std::runtime_error(what + " " + path + ": " + std::strerror(errno));
}

void fsync_path(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0) return;  // best effort for folders on file systems that refuse O_RDONLY dirs
  ::fsync(fd);
  ::close(fd);
}

std::string read_text(const std::string& path) {
  return read_file_bounded(path, "checkpoint file " + path);
}

template <typename T>
T get(const nlohmann::json& json, const char* key) {
  auto it = json.find(key);
  if (it == json.end()) throw std::invalid_argument(std::string("manifest lacks \"") + key + "\"");
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    throw std::invalid_argument(std::string("manifest key \"") + key + "\" has the wrong type");
  }
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  const std::string temp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail_io("cannot create", temp);
  std::size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      fail_io("cannot write", temp);
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    fail_io("cannot fsync", temp);
  }
  ::close(fd);
  if (std::rename(temp.c_str(), path.c_str()) != 0) fail_io("cannot rename " + temp + " to", path);
  // NOTE: the rename is durable only once the folder entry is.
  fsync_path(target.has_parent_path() ? target.parent_path().string() : ".", O_RDONLY);
}

void save_tensors(const std::string& path, const NamedTensors& tensors) {
  torch::serialize::OutputArchive archive;
  for (const auto& [name, tensor] : tensors) archive.write(name, tensor.detach().cpu());
  std::ostringstream bytes;
  archive.save_to(bytes);
  write_file_atomic(path, bytes.str());
}

NamedTensors load_tensors(const std::string& path) {
  if (!fs::exists(path)) throw std::runtime_error("checkpoint file " + path + " is missing");
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot read checkpoint file " + path + ": " + e.what());
  }
  NamedTensors tensors;
  for (const std::string& key : archive.keys()) {
    at::Tensor t;
    archive.read(key, t);
    tensors.emplace(key, t);
  }
  return tensors;
}

nlohmann::json to_json(const Manifest& m) {
  return nlohmann::json{{"step", m.step},
                        {"num_ranks", m.num_ranks},
                        {"schedule", m.schedule},
                        {"config_hash", m.config_hash},
                        {"dir", m.dir},
                        {"files", m.files},
                        {"data_position", m.data_position},
                        {"data_seed", m.data_seed},
                        {"config", m.config},
                        {"losses", m.losses},
                        {"expert_placement", m.expert_placement}};
}

Manifest manifest_from_json(const nlohmann::json& json) {
  Manifest m;
  m.step = get<int>(json, "step");
  m.num_ranks = get<int>(json, "num_ranks");
  m.schedule = get<std::string>(json, "schedule");
  m.config_hash = get<std::string>(json, "config_hash");
  m.dir = get<std::string>(json, "dir");
  m.files = get<std::vector<std::string>>(json, "files");
  m.data_position = get<std::uint64_t>(json, "data_position");
  m.data_seed = get<std::uint64_t>(json, "data_seed");
  m.config = json.value("config", nlohmann::json::object());
  m.losses = json.value("losses", nlohmann::json::array());
  if (json.contains("expert_placement")) {
    m.expert_placement = get<std::vector<std::vector<int>>>(json, "expert_placement");
  }
  return m;
}

std::string checkpoint_dir_name(int step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%06d", step);
  return std::string("checkpoints/") + name;
}

std::string rank_file_name(int step, int rank) {
  return checkpoint_dir_name(step) + "/rank-" + std::to_string(rank) + ".pt";
}

void commit_checkpoint(const std::string& run_dir, const Manifest& manifest, int keep) {
  const std::string text = to_json(manifest).dump(2) + "\n";
  write_file_atomic((fs::path(run_dir) / manifest.dir / "manifest.json").string(), text);
  write_file_atomic((fs::path(run_dir) / "checkpoint.json").string(), text);
  std::vector<fs::path> steps;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path(run_dir) / "checkpoints", ec)) {
    if (entry.is_directory() && entry.path().filename().string().rfind("step-", 0) == 0) {
      steps.push_back(entry.path());
    }
  }
  std::sort(steps.begin(), steps.end());
  const fs::path current = fs::path(run_dir) / manifest.dir;
  for (std::size_t i = 0; i + static_cast<std::size_t>(keep) < steps.size(); ++i) {
    if (steps[i] != current) fs::remove_all(steps[i], ec);
  }
}

bool has_checkpoint(const std::string& run_dir) {
  return fs::exists(fs::path(run_dir) / "checkpoint.json");
}

Manifest read_latest_checkpoint(const std::string& run_dir) {
  const std::string path = (fs::path(run_dir) / "checkpoint.json").string();
  if (!fs::exists(path)) {
    throw std::invalid_argument("run folder " + run_dir + " has no checkpoint (no " + path + ")");
  }
  Manifest m;
  try {
    m = manifest_from_json(nlohmann::json::parse(read_text(path)));
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(path + " is not valid JSON: " + e.what());
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(path + ": " + e.what());
  }
  for (const std::string& file : m.files) {
    if (!fs::exists(fs::path(run_dir) / file)) {
      throw std::invalid_argument("checkpoint of step " + std::to_string(m.step) + " in " +
                                  run_dir + " names the missing file " + file);
    }
  }
  return m;
}

}  // namespace dualpipe::train
