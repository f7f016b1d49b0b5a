#include "dualpipe/train/checkpoint.h"

#include <c10/util/Exception.h>
#include <fcntl.h>
#include <torch/serialize.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "dualpipe/check.h"
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

std::string first_line(const std::string& text) {
  return text.substr(0, text.find('\n'));
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

// write_file_atomic's temporary names: "<name>.tmp.<pid>".
bool is_temporary_name(const std::string& name) {
  const std::size_t at = name.rfind(".tmp.");
  if (at == std::string::npos || at + 5 == name.size()) return false;
  return name.find_first_not_of("0123456789", at + 5) == std::string::npos;
}

std::string read_rank_file(const std::string& path) {
  if (!fs::exists(path)) throw std::runtime_error("checkpoint file " + path + " is missing");
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  if (!in.good() && !in.eof()) fail_io("cannot read checkpoint file", path);
  return s.str();
}

std::string hex(std::uint64_t value) {
  char text[24];
  std::snprintf(text, sizeof(text), "%016" PRIx64, value);
  return text;
}

void check_digest(const std::string& path, const FileDigest& actual, const FileDigest& expected) {
  if (actual.bytes != expected.bytes) {
    throw std::runtime_error("checkpoint file " + path + " is damaged: it has " +
                             std::to_string(actual.bytes) + " bytes, the manifest expects " +
                             std::to_string(expected.bytes) + " (truncated or overwritten)");
  }
  if (actual.fnv1a64 != expected.fnv1a64) {
    throw std::runtime_error("checkpoint file " + path + " is damaged: its FNV-1a-64 checksum is " +
                             hex(actual.fnv1a64) + ", the manifest expects " +
                             hex(expected.fnv1a64) + " (same size, " +
                             std::to_string(actual.bytes) + " bytes: corrupted contents)");
  }
}

NamedTensors tensors_from_bytes(const std::string& path, const std::string& bytes) {
  // NOTE: c10::Error's what() carries a C++ backtrace; users get what_without_backtrace().
  try {
    torch::serialize::InputArchive archive;
    std::istringstream in(bytes);
    archive.load_from(in);
    NamedTensors tensors;
    for (const std::string& key : archive.keys()) {
      at::Tensor t;
      archive.read(key, t);
      tensors.emplace(key, t);
    }
    return tensors;
  } catch (const c10::Error& e) {
    throw std::runtime_error("cannot read checkpoint file " + path + ": " +
                             first_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot read checkpoint file " + path + ": " + first_line(e.what()));
  }
}

std::vector<FileDigest> digests_from_json(const nlohmann::json& json) {
  DUALPIPE_CHECK(json.is_array(), "manifest \"file_digests\" must be an array, got ", json.dump());
  std::vector<FileDigest> digests;
  for (const nlohmann::json& d : json) {
    const bool ok =
        d.is_object() && d.contains("bytes") && d["bytes"].is_number_unsigned() &&
        d.contains("fnv1a64") && d["fnv1a64"].is_string() &&
        d["fnv1a64"].get<std::string>().size() == 16 &&
        d["fnv1a64"].get<std::string>().find_first_not_of("0123456789abcdef") == std::string::npos;
    DUALPIPE_CHECK(ok,
                   "manifest \"file_digests\" entries must be {\"bytes\": N, \"fnv1a64\": "
                   "\"<16 hex digits>\"}, got ",
                   d.dump());
    digests.push_back(FileDigest{d["bytes"].get<std::uint64_t>(),
                                 std::stoull(d["fnv1a64"].get<std::string>(), nullptr, 16)});
  }
  return digests;
}

// What a manifest may name: its own step's folder and rank files, nothing else. The step is at
// most the run's steps (a checkpoint is written after a step is done).
void check_consistent(const Manifest& m) {
  if (m.config.is_object() && m.config.contains("steps") && m.config["steps"].is_number_integer()) {
    const int steps = m.config["steps"].get<int>();
    DUALPIPE_CHECK(m.step <= steps, "manifest step ", m.step, " is beyond the run's ", steps,
                   " steps (config.steps)");
  }
  DUALPIPE_CHECK_EQ(m.files.size(), static_cast<std::size_t>(m.num_ranks),
                    "manifest lists a rank file per rank");
  DUALPIPE_CHECK(m.dir == checkpoint_dir_name(m.step), "manifest \"dir\" is \"", m.dir,
                 "\"; the checkpoint of step ", m.step, " lives in ", checkpoint_dir_name(m.step));
  for (std::size_t r = 0; r < m.files.size(); ++r) {
    const std::string want = rank_file_name(m.step, static_cast<int>(r));
    DUALPIPE_CHECK(m.files[r] == want, "manifest \"files\"[", r, "] (rank ", r, ") is \"",
                   m.files[r], "\"; the rank file of the checkpoint of step ", m.step, " must be ",
                   want,
                   " (relative to the run folder: nothing absolute, no \"..\", no other file)");
  }
  if (!m.file_digests.empty()) {
    DUALPIPE_CHECK_EQ(m.file_digests.size(), m.files.size(),
                      "manifest \"file_digests\" has one entry per rank file");
  }
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  const std::string temp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) fail_io("cannot create", temp);
  // Every failure below closes the file, removes it and throws with the first error's errno.
  const auto fail = [&](const std::string& what, bool open) {
    const int error = errno;
    if (open) ::close(fd);
    ::unlink(temp.c_str());
    errno = error;
    fail_io(what, temp);
  };
  std::size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot write", true);
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) fail("cannot fsync", true);
  if (::close(fd) != 0) fail("cannot close", false);
  if (std::rename(temp.c_str(), path.c_str()) != 0)
    fail("cannot rename to " + path + " from", false);
  // NOTE: the rename is durable only once the folder entry is.
  fsync_path(target.has_parent_path() ? target.parent_path().string() : ".", O_RDONLY);
}

void remove_temporary_files(const std::string& run_dir) {
  std::vector<fs::path> folders = {fs::path(run_dir)};
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::path(run_dir) / "checkpoints", ec)) {
    if (entry.is_directory(ec)) folders.push_back(entry.path());
  }
  for (const fs::path& folder : folders) {
    for (const auto& entry : fs::directory_iterator(folder, ec)) {
      if (is_temporary_name(entry.path().filename().string()) && entry.is_regular_file(ec)) {
        fs::remove(entry.path(), ec);
      }
    }
  }
}

FileDigest digest_of(const std::string& bytes) {
  // FNV-1a, 64 bits (http://www.isthe.com/chongo/tech/comp/fnv/): a checksum against corruption,
  // not a cryptographic hash.
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (const char c : bytes) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ULL;
  }
  return FileDigest{bytes.size(), hash};
}

FileDigest save_tensors(const std::string& path, const NamedTensors& tensors) {
  torch::serialize::OutputArchive archive;
  for (const auto& [name, tensor] : tensors) archive.write(name, tensor.detach().cpu());
  std::ostringstream out;
  archive.save_to(out);
  const std::string bytes = out.str();
  write_file_atomic(path, bytes);
  return digest_of(bytes);
}

NamedTensors load_tensors(const std::string& path) {
  return tensors_from_bytes(path, read_rank_file(path));
}

NamedTensors load_tensors(const std::string& path, const FileDigest& expected) {
  const std::string bytes = read_rank_file(path);
  check_digest(path, digest_of(bytes), expected);
  return tensors_from_bytes(path, bytes);
}

nlohmann::json to_json(const Manifest& m) {
  nlohmann::json digests = nlohmann::json::array();
  for (const FileDigest& d : m.file_digests) {
    digests.push_back({{"bytes", d.bytes}, {"fnv1a64", hex(d.fnv1a64)}});
  }
  nlohmann::json json{{"step", m.step},
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
  if (!m.layout.empty()) json["layout"] = m.layout;
  if (!m.file_digests.empty()) json["file_digests"] = digests;
  return json;
}

Manifest manifest_from_json(const nlohmann::json& json) {
  Manifest m;
  const auto step = json.find("step");
  DUALPIPE_CHECK(step != json.end() && step->is_number_integer() && step->get<int64_t>() >= 0 &&
                     step->get<int64_t>() <= std::numeric_limits<int>::max(),
                 "manifest \"step\" must be an integer >= 0, got ",
                 step == json.end() ? std::string("nothing") : step->dump());
  m.step = step->get<int>();
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
  if (json.contains("file_digests")) m.file_digests = digests_from_json(json["file_digests"]);
  if (json.contains("layout")) {
    DUALPIPE_CHECK(json["layout"].is_object(), "manifest \"layout\" must be an object, got ",
                   json["layout"].dump());
    m.layout = json["layout"];
  }
  check_consistent(m);
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

void verify_checkpoint_files(const std::string& run_dir, const Manifest& manifest,
                             std::ostream& warnings) {
  if (manifest.file_digests.empty()) {
    warnings << "warning: the checkpoint of step " << manifest.step << " in " << run_dir
             << " records no checksums (written by an older dualpipe); its rank files are "
                "loaded unchecked\n";
    return;
  }
  for (std::size_t r = 0; r < manifest.files.size(); ++r) {
    const std::string path = (fs::path(run_dir) / manifest.files[r]).string();
    check_digest(path, digest_of(read_rank_file(path)), manifest.file_digests[r]);
  }
}

NamedTensors load_rank_file(const std::string& run_dir, const Manifest& manifest, int rank) {
  DUALPIPE_CHECK(rank >= 0 && static_cast<std::size_t>(rank) < manifest.files.size(),
                 "the checkpoint of step ", manifest.step, " has ", manifest.files.size(),
                 " rank files, no file of rank ", rank);
  const auto r = static_cast<std::size_t>(rank);
  const std::string path = (fs::path(run_dir) / manifest.files[r]).string();
  if (manifest.file_digests.empty()) return load_tensors(path);
  return load_tensors(path, manifest.file_digests[r]);
}

}  // namespace dualpipe::train
