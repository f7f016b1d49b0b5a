// `dualpipe sim`: build (or load) a schedule, simulate it under a cost model, and show its
// bubbles and memory beside the DualPipe paper's formulas, as a table, JSON, an SVG timeline or
// a Chrome trace.
#include <fmt/format.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "command.h"
#include "dualpipe/schedule/pytorch_csv.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/schedule/schedule_file.h"
#include "dualpipe/schedule/serialize.h"
#include "dualpipe/schedule/validator.h"
#include "dualpipe/sim/cost_model.h"
#include "dualpipe/sim/paper.h"
#include "dualpipe/sim/simulator.h"
#include "dualpipe/sim/svg.h"

namespace dualpipe::cli {
namespace {

struct SimOptions {
  std::string schedule = "dualpipe";
  bool schedule_given = false;  // --schedule on the command line (names a CSV file's family)
  int ranks = 8;
  int microbatches = 20;
  int stages_per_rank = 0;  // 0: each schedule's own (schedule::BuildOptions)
  std::string costs;
  std::string schedule_file;
  std::string save;
  std::string format = "table";
  std::string compare;
  std::string svg;
  std::string trace;
};

void write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  if (!out || !(out << content) || !out.flush()) {
    throw std::runtime_error("cannot write '" + path + "'");
  }
}

std::vector<std::string> split_names(const std::string& list) {
  std::vector<std::string> names;
  std::stringstream in(list);
  std::string name;
  while (std::getline(in, name, ',')) {
    if (name.empty())
      throw std::invalid_argument("empty schedule name in --compare '" + list + "'");
    names.push_back(name);
  }
  if (names.empty())
    throw std::invalid_argument("--compare needs schedule names, e.g. dualpipe,1f1b");
  return names;
}

std::string num(double value) {
  return fmt::format("{:g}", value);
}

nlohmann::json result_json(const schedule::Schedule& s, const sim::SimResult& result,
                           const sim::CostModel& costs) {
  nlohmann::json json;
  json["schedule"] = s.name;
  json["ranks"] = s.num_ranks();
  json["stages"] = s.num_stages();  // per direction (a V: 2 x ranks)
  json["microbatches"] = s.num_microbatches;
  json["costs"] = sim::to_string(costs);
  json["makespan"] = result.makespan;
  json["max_bubble"] = result.max_bubble();
  json["peak_activations"] = result.max_peak_activations();
  json["parameter_copies"] = result.max_parameter_copies();
  nlohmann::json per_rank = nlohmann::json::array();
  for (std::size_t r = 0; r < result.ranks.size(); ++r) {
    const sim::RankResult& rank = result.ranks[r];
    per_rank.push_back({{"rank", r},
                        {"busy", rank.busy},
                        {"bubble", rank.bubble},
                        {"peak_activations", rank.peak_activations},
                        {"parameter_copies", rank.parameter_copies}});
  }
  json["per_rank"] = per_rank;
  if (auto paper = sim::paper_figures(s, costs)) {
    json["paper"] = {{"bubble_formula", paper->bubble_formula},
                     {"pp", paper->pp_meaning},
                     {"bubble", paper->bubble},
                     {"parameters", paper->parameters_formula},
                     {"activations_formula", paper->activations_formula},
                     {"activations", paper->peak_activations}};
  }
  return json;
}

void print_table(const schedule::Schedule& s, const sim::SimResult& result,
                 const sim::CostModel& costs) {
  auto paper = sim::paper_figures(s, costs);
  const bool paper_bubble = paper && !paper->bubble_formula.empty();
  fmt::print("{}: {} ranks, {} micro-batches, costs {}\n", s.name, s.num_ranks(),
             s.num_microbatches, sim::to_string(costs));
  fmt::print("makespan {}  (bubble = makespan - busy, per rank)\n\n", num(result.makespan));
  fmt::print("{:>5} {:>10} {:>10} {:>13} {:>17} {:>16} {:>17}\n", "rank", "busy", "bubble",
             "paper bubble", "peak activations", "paper activ.", "parameter copies");
  for (std::size_t r = 0; r < result.ranks.size(); ++r) {
    const sim::RankResult& rank = result.ranks[r];
    fmt::print("{:>5} {:>10} {:>10} {:>13} {:>17} {:>16} {:>17}\n", r, num(rank.busy),
               num(rank.bubble), paper_bubble ? num(paper->bubble) : "-", rank.peak_activations,
               paper ? std::to_string(paper->peak_activations) : "-", rank.parameter_copies);
  }
  fmt::print("\nsimulated: max bubble {}, max peak activations {}, parameter copies {}x\n",
             num(result.max_bubble()), result.max_peak_activations(),
             result.max_parameter_copies());
  if (paper) {
    fmt::print(
        "paper ({}): bubble {}, parameters {}, activations {} = {} (stage x micro-batch "
        "units)\n",
        paper->pp_meaning,
        paper_bubble ? paper->bubble_formula + " = " + num(paper->bubble) : "not given",
        paper->parameters_formula, paper->activations_formula, paper->peak_activations);
  }
}

// --stages-per-rank goes to the schedules that take it; in --compare the others keep their own.
schedule::BuildOptions build_options(const SimOptions& options, const std::string& name) {
  schedule::BuildOptions build;
  if (options.compare.empty() || schedule::schedule_facts(name).stages_per_rank_choosable) {
    build.stages_per_rank = options.stages_per_rank;
  }
  return build;
}

int run_compare(const SimOptions& options, const sim::CostModel& costs) {
  nlohmann::json rows = nlohmann::json::array();
  std::vector<std::vector<std::string>> table;
  for (const std::string& name : split_names(options.compare)) {
    schedule::Schedule s = schedule::build_schedule(name, options.ranks, options.microbatches,
                                                    build_options(options, name));
    schedule::validate(s);
    sim::SimResult result = sim::simulate(s, costs);
    auto paper = sim::paper_figures(s, costs);
    nlohmann::json json = result_json(s, result, costs);
    json.erase("per_rank");
    rows.push_back(json);
    table.push_back(
        {name, num(result.makespan), num(result.max_bubble()),
         paper && !paper->bubble_formula.empty()
             ? paper->bubble_formula + " = " + num(paper->bubble)
             : "-",
         std::to_string(result.max_peak_activations()),
         paper ? paper->activations_formula + " = " + std::to_string(paper->peak_activations) : "-",
         std::to_string(result.max_parameter_copies()) + "x",
         paper ? paper->parameters_formula : "-"});
  }
  if (options.format == "json") {
    std::cout << nlohmann::json{{"ranks", options.ranks},
                                {"microbatches", options.microbatches},
                                {"costs", sim::to_string(costs)},
                                {"schedules", rows}}
                     .dump(2)
              << "\n";
    return 0;
  }
  fmt::print("{} ranks, {} micro-batches, costs {}; bubble = max over ranks of makespan - busy\n\n",
             options.ranks, options.microbatches, sim::to_string(costs));
  const char* header[] = {"schedule",     "makespan",         "max bubble",
                          "paper bubble", "peak activations", "paper activations",
                          "parameters",   "paper parameters"};
  std::vector<std::size_t> widths;
  for (const char* h : header) widths.push_back(std::string(h).size());
  for (const auto& row : table) {
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  auto print_row = [&](const std::vector<std::string>& row) {
    std::string line = "|";
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += fmt::format(" {:<{}} |", row[i], widths[i]);
    }
    fmt::print("{}\n", line);
  };
  print_row(std::vector<std::string>(std::begin(header), std::end(header)));
  std::vector<std::string> rule;
  for (std::size_t w : widths) rule.push_back(std::string(w, '-'));
  print_row(rule);
  for (const auto& row : table) print_row(row);
  return 0;
}

int run_sim(const SimOptions& options) {
  sim::CostModel costs = sim::parse_cost_model(options.costs);
  if (!options.compare.empty()) {
    if (!options.schedule_file.empty() || !options.save.empty() || !options.svg.empty() ||
        !options.trace.empty() || options.format == "oracle") {
      throw std::invalid_argument(
          "--compare takes only --ranks, --microbatches, --stages-per-rank, --costs and --format "
          "table|json");
    }
    return run_compare(options, costs);
  }
  schedule::Schedule s;
  if (options.schedule_file.empty()) {
    s = schedule::build_schedule(options.schedule, options.ranks, options.microbatches,
                                 build_options(options, options.schedule));
    schedule::validate(s);
  } else {
    s = schedule::read_schedule_file(options.schedule_file,
                                     options.schedule_given ? options.schedule : "");
  }
  if (!options.save.empty()) schedule::write_schedule_file(options.save, s);
  if (options.format == "oracle") {
    std::cout << schedule::to_oracle_json(s).dump(0) << "\n";
    return 0;
  }
  sim::SimResult result = sim::simulate(s, costs);
  if (!options.svg.empty()) write_file(options.svg, sim::render_svg(s, result, costs));
  if (!options.trace.empty()) write_file(options.trace, sim::chrome_trace(s, result));
  if (options.format == "json") {
    std::cout << result_json(s, result, costs).dump(2) << "\n";
  } else {
    print_table(s, result, costs);
  }
  return 0;
}

std::string schedule_list() {
  std::string list;
  for (const std::string& name : schedule::schedule_names())
    list += (list.empty() ? "" : ", ") + name;
  return list;
}

}  // namespace

Command add_sim_command(CLI::App& app) {
  auto options = std::make_shared<SimOptions>();
  CLI::App* sub = app.add_subcommand(
      "sim", "Simulate a pipeline schedule: per-rank busy time, bubble, peak activations");
  CLI::Option* schedule_option =
      sub->add_option("--schedule", options->schedule,
                      "Schedule to build (" + schedule_list() +
                          "); with a PyTorch CSV --schedule-file, the family the file is")
          ->capture_default_str();
  sub->add_option("--ranks", options->ranks, "Pipeline ranks")
      ->capture_default_str()
      ->check(integer_in_range<int>());
  sub->add_option("--microbatches", options->microbatches,
                  "Micro-batches (total over both directions for dualpipe)")
      ->capture_default_str()
      ->check(integer_in_range<int>());
  sub->add_option("--stages-per-rank", options->stages_per_rank,
                  "Stages per rank v for the schedules that take it (interleaved-1f1b; default "
                  "2); 0: each schedule's own")
      ->capture_default_str()
      ->check(integer_in_range<int>());
  sub->add_option("--costs", options->costs,
                  "Op costs over the defaults F=1,B=2,W=1,FB=3,comm=0 (a Bz costs B-W; "
                  "scale=k0:k1:... multiplies each stage)");
  sub->add_option("--schedule-file", options->schedule_file,
                  "Load a schedule saved with --save (JSON, text or PyTorch CSV) or an oracle "
                  "file; a CSV names no schedule: --schedule names its family, else the "
                  "registered schedule with its compute order");
  sub->add_option("--save", options->save,
                  "Write the schedule to FILE: PyTorch's CSV if FILE ends in .csv, the text form "
                  "if .txt, else JSON");
  sub->add_option("--format", options->format, "Output: table, json, or oracle (the programs)")
      ->check(CLI::IsMember({"table", "json", "oracle"}))
      ->capture_default_str();
  sub->add_option("--compare", options->compare,
                  "Comma-separated schedules to compare side by side on the same costs");
  sub->add_option("--svg", options->svg, "Write the simulated timeline as SVG to FILE");
  sub->add_option("--trace", options->trace, "Write a Chrome/Perfetto trace JSON to FILE");
  return Command{sub, [options, schedule_option] {
                   options->schedule_given = schedule_option->count() > 0;
                   return run_sim(*options);
                 }};
}

}  // namespace dualpipe::cli
