#pragma once
// Checkpoints of a training run. Layout inside the run folder:
//   checkpoints/step-000100/rank-0.pt ... rank-<R-1>.pt   every rank's tensors (weights, optimiser)
//   checkpoints/step-000100/manifest.json                 what the checkpoint holds
//   checkpoint.json                                        the latest complete checkpoint's
//   manifest
// Every file is written atomically (temporary file, fsync, rename), and checkpoint.json is
// written last, after every rank's file: a run killed at any moment leaves the previous
// checkpoint.json pointing at a complete checkpoint.

#include <ATen/Tensor.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dualpipe::train {

using NamedTensors = std::map<std::string, at::Tensor>;

// Writes `bytes` to `path` through `path`.tmp.<pid> + fsync + rename, creating parent folders.
// Throws std::runtime_error naming the path and errno text on failure.
void write_file_atomic(const std::string& path, const std::string& bytes);

// Serialises `tensors` (CPU copies) with torch::serialize and writes them atomically.
void save_tensors(const std::string& path, const NamedTensors& tensors);
// Reads what save_tensors() wrote. Throws std::runtime_error naming the file when it is missing
// or unreadable.
NamedTensors load_tensors(const std::string& path);

struct Manifest {
  int step = 0;  // optimiser steps done
  int num_ranks = 0;
  std::string schedule;
  std::string config_hash;
  std::string dir;                  // the step folder, relative to the run folder
  std::vector<std::string> files;   // rank files, relative to the run folder, index = rank
  std::uint64_t data_position = 0;  // DataLoader::position() after `step` steps
  std::uint64_t data_seed = 0;
  nlohmann::json config;  // the run's TrainConfig (to_json)
  nlohmann::json losses;  // per-step train losses so far (for the resumed run's curve)
  // The expert placement (EPLB) in force: [layer][physical slot] -> logical expert, the same on
  // every rank. Empty when the checkpoint predates it (the trivial placement).
  std::vector<std::vector<int>> expert_placement;
};

nlohmann::json to_json(const Manifest& manifest);
// Throws std::invalid_argument naming a missing or mistyped key.
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
// folder when it has none (no checkpoint.json) or the manifest names a missing rank file.
Manifest read_latest_checkpoint(const std::string& run_dir);
// Whether `run_dir` has a committed checkpoint.
bool has_checkpoint(const std::string& run_dir);

}  // namespace dualpipe::train
