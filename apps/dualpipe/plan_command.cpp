// `dualpipe plan`: the best schedule for your costs and memory. Every registered family at every
// valid size plus a searched schedule, simulated and ranked by step time under the limits (see
// include/dualpipe/sim/planner.h), with the winner's picture and why the others lost.
#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "command.h"
#include "dualpipe/schedule/schedule_file.h"
#include "dualpipe/sim/cost_model.h"
#include "dualpipe/sim/planner.h"
#include "dualpipe/sim/svg.h"

namespace dualpipe::cli {
namespace {

struct PlanOptions {
  std::string ranks = "8";
  int gpus = 0;
  std::string microbatches = "20";
  int global_batch = 0;
  std::string mbs = "1";
  std::string costs;
  double max_activations = 0;
  std::string memory;
  std::string activation_bytes;
  std::string param_bytes;
  std::string schedules;
  bool no_search = false;
  std::string format = "table";
  std::string svg;
  std::string save;
};

std::vector<int> int_list(const std::string& text, const char* flag) {
  std::vector<int> values;
  std::stringstream in(text);
  std::string piece;
  while (std::getline(in, piece, ',')) {
    int value = 0;
    const char* end = piece.data() + piece.size();
    const auto [ptr, error] = std::from_chars(piece.data(), end, value);
    if (piece.empty() || error != std::errc() || ptr != end) {
      throw std::invalid_argument(std::string(flag) + " takes integers separated by commas, got '" +
                                  piece + "' in '" + text + "'");
    }
    values.push_back(value);
  }
  if (values.empty()) throw std::invalid_argument(std::string(flag) + " needs a value");
  return values;
}

std::vector<std::string> name_list(const std::string& text) {
  std::vector<std::string> names;
  std::stringstream in(text);
  std::string name;
  while (std::getline(in, name, ',')) {
    if (name.empty())
      throw std::invalid_argument("empty schedule name in --schedules '" + text + "'");
    names.push_back(name);
  }
  return names;
}

// "80GiB", "80G", "512MiB", "1.5e9": bytes (K, M, G, T are powers of 1024, with or without "iB").
double parse_bytes(const std::string& text, const char* flag) {
  if (text.empty()) return 0;
  std::size_t pos = 0;
  double value = 0;
  try {
    value = std::stod(text, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  std::string unit = text.substr(pos);
  if (unit.size() > 1 && (unit == "KiB" || unit == "MiB" || unit == "GiB" || unit == "TiB")) {
    unit = unit.substr(0, 1);
  }
  const std::string units = "KMGT";
  double scale = 1;
  if (!unit.empty()) {
    const std::size_t i = unit.size() == 1 ? units.find(unit[0]) : std::string::npos;
    if (i == std::string::npos || pos == 0) {
      throw std::invalid_argument(std::string(flag) +
                                  " takes bytes such as 80GiB, 512M or 1.5e9, got '" + text + "'");
    }
    scale = std::pow(1024.0, static_cast<double>(i + 1));
  }
  if (pos == 0 || !std::isfinite(value) || value < 0) {
    throw std::invalid_argument(std::string(flag) + " takes bytes >= 0 such as 80GiB, got '" +
                                text + "'");
  }
  return value * scale;
}

std::string num(double value) {
  return fmt::format("{:g}", value);
}

std::string gib(double bytes) {
  return fmt::format("{:.3g} GiB", bytes / (1024.0 * 1024.0 * 1024.0));
}

// The winner's timeline as text: one line per rank, F/B/W per op kind (b: input-gradient-only
// backward, X: an overlapped FB pair), '.' idle.
std::string ascii_timeline(const sim::Plan& plan, int width = 100) {
  const double makespan = plan.winner_result.makespan;
  std::string text;
  for (std::size_t r = 0; r < plan.winner_result.ranks.size(); ++r) {
    std::string line(width, '.');
    for (const sim::TimedOp& timed : plan.winner_result.ranks[r].timeline) {
      const schedule::Op& op = plan.winner.programs[r][timed.op_index];
      char c = 'F';
      if (op.kind == schedule::OpKind::kBackward) c = op.defer_weight_grad ? 'b' : 'B';
      if (op.kind == schedule::OpKind::kWeight) c = 'W';
      if (op.kind == schedule::OpKind::kForwardBackward) c = 'X';
      const int from = static_cast<int>(timed.start / makespan * width);
      const int to = std::max(from + 1, static_cast<int>(timed.end / makespan * width));
      for (int i = from; i < to && i < width; ++i) line[i] = c;
    }
    text += fmt::format("  rank {:>2} |{}|\n", r, line);
  }
  return text;
}

nlohmann::json candidate_json(const sim::PlanCandidate& c) {
  return {{"schedule", c.schedule},
          {"ranks", c.num_ranks},
          {"microbatches", c.num_microbatches},
          {"micro_batch_size", c.micro_batch_size},
          {"data_parallel", c.data_parallel},
          {"step_time", c.makespan},
          {"max_bubble", c.max_bubble},
          {"max_busy", c.max_busy},
          {"peak_activations", c.peak_activations},
          {"activation_units", c.activation_units},
          {"parameter_copies", c.parameter_copies},
          {"memory_bytes", c.memory_bytes},
          {"fits", c.fits},
          {"note", c.note},
          {"why", c.why}};
}

void print_table(const sim::PlanRequest& request, const sim::Plan& plan) {
  const bool bytes = request.activation_bytes > 0 || request.param_bytes > 0;
  fmt::print("costs {} (one micro-batch of {} through one rank's share at {} ranks)\n",
             sim::to_string(request.costs), request.micro_batch_sizes[0],
             request.pipeline_sizes[0]);
  std::string limits;
  if (request.max_activations > 0)
    limits += " " + num(request.max_activations) + " activation units";
  if (request.memory_bytes > 0) limits += " " + gib(request.memory_bytes);
  fmt::print("memory limit per rank:{}\n\n", limits.empty() ? " none" : limits);
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"#", "schedule", "ranks", "micro-batches", "mbs", "dp", "step time", "max bubble",
                  "activations", bytes ? "memory" : "param copies", "why not first"});
  for (std::size_t i = 0; i < plan.candidates.size(); ++i) {
    const sim::PlanCandidate& c = plan.candidates[i];
    rows.push_back({std::to_string(i + 1), c.schedule, std::to_string(c.num_ranks),
                    std::to_string(c.num_microbatches), std::to_string(c.micro_batch_size),
                    std::to_string(c.data_parallel), num(c.makespan), num(c.max_bubble),
                    num(c.activation_units),
                    bytes ? gib(c.memory_bytes) : std::to_string(c.parameter_copies) + "x",
                    i == 0 ? "winner" : c.why});
  }
  std::vector<std::size_t> widths(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (std::size_t r = 0; r < rows.size(); ++r) {
    std::string line = "|";
    for (std::size_t i = 0; i < rows[r].size(); ++i) {
      line += fmt::format(" {:<{}} |", rows[r][i], widths[i]);
    }
    fmt::print("{}\n", line);
    if (r == 0) {
      std::string rule = "|";
      for (std::size_t w : widths) rule += std::string(w + 2, '-') + "|";
      fmt::print("{}\n", rule);
    }
  }
  const sim::PlanCandidate& w = plan.candidates.front();
  fmt::print(
      "\nwinner: {} on {} ranks, {} micro-batches of {}{}: step time {}, max bubble {}, "
      "{} activation units per rank{}\n",
      w.schedule, w.num_ranks, w.num_microbatches, w.micro_batch_size,
      w.data_parallel > 1 ? fmt::format(" x {} replicas", w.data_parallel) : "", num(w.makespan),
      num(w.max_bubble), num(w.activation_units), w.note.empty() ? "" : " (" + w.note + ")");
  fmt::print("{}", ascii_timeline(plan));
  fmt::print(
      "  (F forward, B backward, b input-gradient backward, W weight gradient, X F&B pair)\n");
}

int run_plan(const PlanOptions& o) {
  sim::PlanRequest request;
  request.pipeline_sizes = int_list(o.ranks, "--ranks");
  request.gpus = o.gpus;
  request.microbatch_counts = int_list(o.microbatches, "--microbatches");
  request.global_batch = o.global_batch;
  request.micro_batch_sizes = int_list(o.mbs, "--mbs");
  request.costs = sim::parse_cost_model(o.costs);
  request.max_activations = o.max_activations;
  request.memory_bytes = parse_bytes(o.memory, "--memory");
  request.activation_bytes = parse_bytes(o.activation_bytes, "--activation-bytes");
  request.param_bytes = parse_bytes(o.param_bytes, "--param-bytes");
  if (!o.schedules.empty()) request.schedules = name_list(o.schedules);
  request.search = !o.no_search;
  const sim::Plan plan = sim::plan(request);
  if (!o.svg.empty()) {
    std::ofstream out(o.svg, std::ios::binary);
    if (!out || !(out << sim::render_svg(plan.winner, plan.winner_result, plan.winner_costs)) ||
        !out.flush()) {
      throw std::runtime_error("cannot write '" + o.svg + "'");
    }
  }
  if (!o.save.empty()) schedule::write_schedule_file(o.save, plan.winner);
  if (o.format == "json") {
    nlohmann::json candidates = nlohmann::json::array();
    for (const sim::PlanCandidate& c : plan.candidates) candidates.push_back(candidate_json(c));
    std::cout << nlohmann::json{{"costs", sim::to_string(request.costs)},
                                {"max_activations", request.max_activations},
                                {"memory_bytes", request.memory_bytes},
                                {"candidates", candidates},
                                {"winner", candidate_json(plan.candidates.front())}}
                     .dump(2)
              << "\n";
    return 0;
  }
  print_table(request, plan);
  return 0;
}

}  // namespace

Command add_plan_command(CLI::App& app) {
  auto o = std::make_shared<PlanOptions>();
  CLI::App* sub = app.add_subcommand(
      "plan",
      "Rank every schedule family (and a searched one) by simulated step time under "
      "your costs and memory limits");
  sub->add_option("--ranks,--pp", o->ranks,
                  "Pipeline sizes, e.g. 8 or 2,4,8 (the first is the "
                  "costs' reference)")
      ->capture_default_str();
  sub->add_option("--gpus", o->gpus,
                  "GPUs in all (0: one pipeline); each pipeline size must "
                  "divide it, the rest is data parallelism")
      ->check(integer_in_range<int>());
  sub->add_option("--microbatches", o->microbatches, "Micro-batches per step, e.g. 20 or 16,32")
      ->capture_default_str();
  sub->add_option("--global-batch", o->global_batch,
                  "Samples per step over all replicas (instead of --microbatches)")
      ->check(integer_in_range<int>());
  sub->add_option("--mbs", o->mbs,
                  "Micro-batch sizes in samples, e.g. 1,2,4 (the first is the "
                  "costs' reference)")
      ->capture_default_str();
  sub->add_option("--costs", o->costs,
                  "Costs of one micro-batch through one rank's share, over F=1,B=2,W=1,FB=3,comm=0 "
                  "(scale=k0:k1:... per rank)");
  sub->add_option("--max-activations", o->max_activations,
                  "Activation limit per rank, in micro-batch x rank-share units (1F1B peaks at "
                  "PP)");
  sub->add_option("--memory", o->memory, "Memory limit per rank in bytes (80GiB, 512M, 1e9)");
  sub->add_option("--activation-bytes", o->activation_bytes,
                  "Bytes of one micro-batch's activations on one rank's share");
  sub->add_option("--param-bytes", o->param_bytes,
                  "Bytes of one rank's share of parameters with gradients and optimiser state "
                  "(DualPipe holds two copies)");
  sub->add_option("--schedules", o->schedules, "Families to consider (default: all registered)");
  sub->add_flag("--no-search", o->no_search, "Rank the fixed families only");
  sub->add_option("--format", o->format, "Output: table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  sub->add_option("--svg", o->svg, "Write the winner's simulated timeline as SVG to FILE");
  sub->add_option("--save", o->save,
                  "Write the winner's schedule to FILE (.csv PyTorch CSV, .txt text, else JSON) "
                  "for `dualpipe sim --schedule-file` and the executor");
  return Command{sub, [o] { return run_plan(*o); }};
}

}  // namespace dualpipe::cli
