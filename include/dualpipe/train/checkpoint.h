#pragma once
// Checkpoints of a training run. Layout inside the run folder:
//   checkpoints/step-000100/rank-0.pt ... rank-<R-1>.pt   every rank's tensors (weights, optimiser)
//   checkpoints/step-000100/manifest.json                 what the checkpoint holds
//   checkpoint.json                                        the latest complete checkpoint's
//   manifest
// Every file is written atomically (temporary file, fsync, rename), and checkpoint.json is
// written last, after every rank's file: a run killed at any moment leaves the previous
// checkpoint.json pointing at a complete checkpoint.
//
// Integrity: the manifest records each rank file's size and FNV-1a 64-bit checksum, and both are
// checked before a file is loaded. This catches corruption (a flipped byte, a truncated or
// overwritten file), not tampering: anyone who can edit a file can edit the manifest too. A
// manifest is also checked for what it may name: its step (an integer >= 0, at most the run's
// steps) and the files of exactly that step's folder, so a forged manifest cannot make dualpipe
// open a file outside the run folder. Manifests written before checksums existed are loaded
// with a warning.

#include <ATen/Tensor.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

namespace dualpipe::train {

using NamedTensors = std::map<std::string, at::Tensor>;

// Writes `bytes` to `path` through `path`.tmp.<pid> + fsync + rename, creating parent folders.
// Throws std::runtime_error naming the path and errno text on failure (a full disk: "No space
// left on device"), after removing the temporary file.
void write_file_atomic(const std::string& path, const std::string& bytes);

// Removes the temporary files (`*.tmp.<pid>`) of write_file_atomic calls that never finished
// (their process was killed) in `run_dir` and its checkpoint folders. Call only while holding
// the run folder's lock (run_lock.h), when no process of the job is writing.
void remove_temporary_files(const std::string& run_dir);

// What a rank file should be: its size and its FNV-1a 64-bit checksum.
struct FileDigest {
  std::uint64_t bytes = 0;
  std::uint64_t fnv1a64 = 0;
  bool operator==(const FileDigest& other) const {
    return bytes == other.bytes && fnv1a64 == other.fnv1a64;
  }
};
FileDigest digest_of(const std::string& bytes);

// Serialises `tensors` (CPU copies) with torch::serialize and writes them atomically; returns
// the digest of the bytes written.
FileDigest save_tensors(const std::string& path, const NamedTensors& tensors);
// Reads what save_tensors() wrote. Throws std::runtime_error naming the file when it is missing
// or unreadable (one line, no C++ backtrace), or, given `expected`, when its size or checksum
// differs from it ("... has 100 bytes, expected 200"); the bytes checked are the bytes loaded.
NamedTensors load_tensors(const std::string& path);
NamedTensors load_tensors(const std::string& path, const FileDigest& expected);

struct Manifest {
  int step = 0;  // optimiser steps done
  int num_ranks = 0;
  std::string schedule;
  std::string config_hash;
  std::string dir;                 // the step folder, relative to the run folder
  std::vector<std::string> files;  // rank files, relative to the run folder, index = rank
  // files[r]'s size and checksum; empty in manifests written before checksums existed.
  std::vector<FileDigest> file_digests;
  std::uint64_t data_position = 0;  // DataLoader::position() after `step` steps
  std::uint64_t data_seed = 0;
  nlohmann::json config;  // the run's TrainConfig (to_json)
  nlohmann::json losses;  // per-step train losses so far (for the resumed run's curve)
  // The expert placement (EPLB) in force: [layer][physical slot] -> logical expert, the same on
  // every rank. Empty when the checkpoint predates it (the trivial placement).
  std::vector<std::vector<int>> expert_placement;
  // How the state is laid out over the ranks (written by the trainer: the PP x EP x DP grid, the
  // ZeRO stage and each rank file's optimiser shard); an empty object in manifests written
  // before data parallelism (PP x EP x 1, every rank file holding its whole optimiser state).
  nlohmann::json layout = nlohmann::json::object();
};

nlohmann::json to_json(const Manifest& manifest);
// Throws std::invalid_argument naming a missing or mistyped key, a step that is not an integer
// >= 0 or beyond config.steps, a `dir` or `files` entry other than that step's folder and rank
// files (checkpoint_dir_name, rank_file_name: nothing absolute, no "..", nothing outside the run
// folder), or as many digests or num_ranks as files.
Manifest manifest_from_json(const nlohmann::json& json);

// "checkpoints/step-000100".
std::string checkpoint_dir_name(int step);
// "checkpoints/step-000100/rank-3.pt".
std::string rank_file_name(int step, int rank);

// Writes the step folder's manifest.json, then the run folder's checkpoint.json (the commit
// point), then deletes step folders older than the newest `keep`. Call once (rank 0) after every
// rank's file is on disk.
void commit_checkpoint(const std::string& run_dir, const Manifest& manifest, int keep = 2);

// The latest committed checkpoint of `run_dir`, or throws std::invalid_argument naming the
// folder when it has none (no checkpoint.json), when the manifest is malformed or forged (see
// manifest_from_json) or names a missing rank file. Reads only the manifest; see
// verify_checkpoint_files and load_rank_file for the rank files' contents.
Manifest read_latest_checkpoint(const std::string& run_dir);
// Checks every rank file of `manifest` against its recorded size and checksum; throws
// std::runtime_error naming the first file that is missing or differs, with expected and actual
// values. A manifest without digests (older dualpipe) passes with a warning on `warnings`.
void verify_checkpoint_files(const std::string& run_dir, const Manifest& manifest,
                             std::ostream& warnings);
// Loads rank `rank`'s file of `manifest`, checked against its digest when the manifest has one.
NamedTensors load_rank_file(const std::string& run_dir, const Manifest& manifest, int rank);
// Whether `run_dir` has a committed checkpoint.
bool has_checkpoint(const std::string& run_dir);

}  // namespace dualpipe::train
