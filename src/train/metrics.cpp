#include "dualpipe/train/metrics.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace dualpipe::train {
namespace {

namespace fs = std::filesystem;

constexpr const char* kCsvHeader = "step,loss,held_out_loss,tokens_per_second,step_seconds";

nlohmann::json to_json(const StepMetrics& m) {
  nlohmann::json json{{"step", m.step},
                      {"loss", m.loss},
                      {"tokens_per_second", m.tokens_per_second},
                      {"step_seconds", m.step_seconds}};
  json["held_out_loss"] = m.held_out_loss ? nlohmann::json(*m.held_out_loss) : nlohmann::json();
  return json;
}

std::string csv_row(const StepMetrics& m) {
  char buffer[256];
  std::string held_out;
  if (m.held_out_loss) {
    char h[64];
    std::snprintf(h, sizeof(h), "%.9g", *m.held_out_loss);
    held_out = h;
  }
  std::snprintf(buffer, sizeof(buffer), "%d,%.9g,%s,%.6g,%.6g", m.step, m.loss, held_out.c_str(),
                m.tokens_per_second, m.step_seconds);
  return buffer;
}

void open_or_throw(std::ofstream& out, const fs::path& path) {
  out.open(path, std::ios::trunc);
  if (!out) {
    throw std::runtime_error("cannot write metrics file " + path.string() + ": " +
                             std::strerror(errno));
  }
}

// Flushes `out` and throws naming `path` when any write to it since it was opened failed (a full
// disk: ENOSPC), so a run never trains on without its metrics.
void flush_or_throw(std::ofstream& out, const std::string& path) {
  errno = 0;
  out.flush();
  if (!out) {
    const int error = errno;
    throw std::runtime_error("cannot write metrics file " + path + ": " +
                             (error != 0 ? std::strerror(error) : "write failed"));
  }
}

}  // namespace

MetricsWriter::MetricsWriter(const std::string& run_dir, int keep_through_step)
    : csv_path_((fs::path(run_dir) / "metrics.csv").string()),
      jsonl_path_((fs::path(run_dir) / "metrics.jsonl").string()) {
  fs::create_directories(run_dir);
  std::vector<StepMetrics> kept;
  if (keep_through_step > 0) {
    for (const StepMetrics& m : read_metrics(run_dir)) {
      if (m.step <= keep_through_step) kept.push_back(m);
    }
  }
  open_or_throw(csv_, csv_path_);
  open_or_throw(jsonl_, jsonl_path_);
  csv_ << kCsvHeader << "\n";
  for (const StepMetrics& m : kept) {
    csv_ << csv_row(m) << "\n";
    jsonl_ << to_json(m).dump() << "\n";
  }
  flush_or_throw(csv_, csv_path_);
  flush_or_throw(jsonl_, jsonl_path_);
}

void MetricsWriter::write(const StepMetrics& m) {
  csv_ << csv_row(m) << "\n";
  jsonl_ << to_json(m).dump() << "\n";
  flush_or_throw(csv_, csv_path_);
  flush_or_throw(jsonl_, jsonl_path_);
}

std::vector<StepMetrics> read_metrics(const std::string& run_dir) {
  std::vector<StepMetrics> rows;
  const fs::path path = fs::path(run_dir) / "metrics.jsonl";
  std::error_code ec;
  if (!fs::exists(path, ec)) return rows;
  // NOTE: a device (a link to /dev/zero or /dev/full) would be read without end.
  if (!fs::is_regular_file(path, ec)) {
    throw std::runtime_error("metrics file " + path.string() + " is not a regular file");
  }
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    nlohmann::json json;
    try {
      json = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      break;  // a torn last line of a killed run
    }
    StepMetrics m;
    m.step = json.value("step", 0);
    m.loss = json.value("loss", 0.0);
    if (json.contains("held_out_loss") && json["held_out_loss"].is_number()) {
      m.held_out_loss = json["held_out_loss"].get<double>();
    }
    m.tokens_per_second = json.value("tokens_per_second", 0.0);
    m.step_seconds = json.value("step_seconds", 0.0);
    rows.push_back(m);
  }
  return rows;
}

std::string format_duration(double seconds) {
  char buffer[64];
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  if (seconds < 60) {
    std::snprintf(buffer, sizeof(buffer), "%.1fs", seconds);
  } else if (seconds < 3600) {
    const long s = std::lround(seconds);
    std::snprintf(buffer, sizeof(buffer), "%ldm%02lds", s / 60, s % 60);
  } else {
    const long m = std::lround(seconds / 60);
    std::snprintf(buffer, sizeof(buffer), "%ldh%02ldm", m / 60, m % 60);
  }
  return buffer;
}

std::string format_progress(const StepMetrics& m, int total_steps, double eta_seconds) {
  const int width = static_cast<int>(std::to_string(total_steps).size());
  char buffer[256];
  std::string held_out;
  if (m.held_out_loss) {
    char h[48];
    std::snprintf(h, sizeof(h), "  held-out %.4f", *m.held_out_loss);
    held_out = h;
  }
  std::snprintf(buffer, sizeof(buffer), "step %*d/%d  loss %.4f%s  %.0f tok/s  %.2f s/step  ETA %s",
                width, m.step, total_steps, m.loss, held_out.c_str(), m.tokens_per_second,
                m.step_seconds, format_duration(eta_seconds).c_str());
  return buffer;
}

}  // namespace dualpipe::train
