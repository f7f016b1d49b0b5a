#pragma once
// Every option of `dualpipe train`: the model, the pipeline, the data and the run. The same
// options can come from a JSON or TOML file (`--config FILE`, TOML when it ends in .toml); the
// command line overrides the file.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace dualpipe::train {

struct TrainConfig {
  // Pipeline.
  std::string schedule = "dualpipe";  // a name of schedule::schedule_names()
  int num_ranks = 4;                  // pipeline ranks
  // Stages per rank for the schedules that take it (interleaved-1f1b's v); 0: the schedule's own.
  int stages_per_rank = 0;
  int ep = 1;  // expert-parallel ranks per pipeline rank
  // Data parallelism: dp pipeline replicas, each taking 1/dp of every micro-batch's sequences
  // (the global batch does not depend on dp). zero = 1 (ZeRO-1): each DP rank holds the AdamW
  // moments of 1/dp of its parameters; 0: every replica holds all of them. No effect at dp = 1.
  int dp = 1;
  int zero = 1;
  // Model: a byte-level MoE decoder.
  int num_layers = 4;  // decoder blocks, spread evenly over the pipeline stages
  int hidden_size = 64;
  int num_heads = 4;
  int num_experts = 4;
  int top_k = 2;
  // Expert-parallel load balancing (EPLB): extra physical expert slots per layer for replicas of
  // hot experts, and the steps between rebalances from the tokens counted since the last one
  // (0: never; the placement stays trivial).
  int redundant_experts = 0;
  int eplb_interval = 0;
  // Batch.
  int num_microbatches = 8;  // per step, in total (DualPipe: half per direction)
  int microbatch_size = 4;   // sequences per micro-batch
  int seq_len = 64;          // tokens per sequence
  // Optimisation.
  int steps = 600;
  double learning_rate = 3e-3;
  int warmup_steps = 20;
  double weight_decay = 0.0;
  std::uint64_t seed = 1;
  // Run.
  int checkpoint_interval = 200;  // steps; a checkpoint is also written at the end
  int eval_interval = 50;         // steps between held-out evaluations (and at the start/end)
  int eval_windows = 16;          // held-out sequences per evaluation
  std::string run_dir = "dualpipe-run";
  std::string data;  // file or folder of text; empty: the fortunes corpus

  // Number of pipeline stages the schedule cuts the model into (2 * num_ranks for dualpipev).
  int num_stages() const;
  // Expert slots per MoE layer: the routed experts plus the redundant ones.
  int num_physical_experts() const { return num_experts + redundant_experts; }
  // Processes of the job: num_ranks * ep * dp.
  int world_size() const { return num_ranks * ep * dp; }
  // Whether the optimiser state is sharded over the DP group (ZeRO-1 with dp > 1).
  bool sharded_optimizer() const { return dp > 1 && zero == 1; }
  // Throws std::invalid_argument naming the offending values and what is allowed.
  void validate() const;
};

// The num_layers `dualpipe train` uses when none is given: TrainConfig's 4, rounded up to a
// multiple of config.num_stages() (8 for dualpipev on 4 ranks), so every schedule runs on the
// defaults. Throws std::invalid_argument when the schedule does not accept config.num_ranks.
int default_num_layers(const TrainConfig& config);

nlohmann::json to_json(const TrainConfig& config);
// Reads the keys present in `json` over `base` (absent keys keep base's values). Throws
// std::invalid_argument naming an unknown key or a value of the wrong type.
TrainConfig config_from_json(const nlohmann::json& json, const TrainConfig& base = {});
// Reads a config file: TOML when `path` ends in .toml (a flat table), JSON otherwise. Throws
// std::invalid_argument naming the file and the problem.
TrainConfig load_config_file(const std::string& path, const TrainConfig& base = {});

// Hex digest of the options that change the arithmetic of training (model, pipeline, batch,
// optimiser, seed, data): a checkpoint may be resumed only by a run with the same hash. Steps,
// intervals and the run folder are left out, so a resumed run may train longer; so are dp and
// zero, the layout of the state, which a resume reshards.
std::string config_hash(const TrainConfig& config);

}  // namespace dualpipe::train
