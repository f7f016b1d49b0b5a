#pragma once
// Per-step metrics of a training run: metrics.csv and metrics.jsonl in the run folder, and the
// one-line progress report printed while training.

#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace dualpipe::train {

struct StepMetrics {
  int step = 0;                         // 1-based: the optimiser step just done
  double loss = 0.0;                    // mean training loss over the step's micro-batches
  std::optional<double> held_out_loss;  // when evaluated after this step
  double tokens_per_second = 0.0;
  double step_seconds = 0.0;
};

// Appends one row per step to <run_dir>/metrics.csv and <run_dir>/metrics.jsonl.
class MetricsWriter {
 public:
  // Opens (creating) both files. Rows of steps > keep_through_step already there (written by a
  // run that died after its last checkpoint) are dropped, so a resumed run's files hold each
  // step once; keep_through_step = 0 starts afresh. Throws std::runtime_error naming the file
  // when it cannot be written.
  MetricsWriter(const std::string& run_dir, int keep_through_step);
  // Writes and flushes one row to each file. Throws std::runtime_error naming the file and the
  // error (e.g. "No space left on device") when a write fails.
  void write(const StepMetrics& metrics);

 private:
  std::string csv_path_;
  std::string jsonl_path_;
  std::ofstream csv_;
  std::ofstream jsonl_;
};

// Reads metrics.jsonl back (all rows, in file order). Missing file: empty; not a regular file
// (a device): throws std::runtime_error.
std::vector<StepMetrics> read_metrics(const std::string& run_dir);

// "1h02m", "3m05s", "12.3s".
std::string format_duration(double seconds);

// "step  40/300  loss 2.3456  held-out 2.4012  1234 tok/s  0.52 s/step  ETA 2m15s".
std::string format_progress(const StepMetrics& metrics, int total_steps, double eta_seconds);

}  // namespace dualpipe::train
