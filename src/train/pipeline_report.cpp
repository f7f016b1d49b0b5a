#include "dualpipe/train/pipeline_report.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <ostream>
#include <thread>

#include "dualpipe/sim/svg.h"
#include "dualpipe/train/checkpoint.h"

namespace dualpipe::train {
namespace {

namespace fs = std::filesystem;

bool is_compute(schedule::OpKind kind) {
  return kind == schedule::OpKind::kForward || kind == schedule::OpKind::kBackward ||
         kind == schedule::OpKind::kWeight || kind == schedule::OpKind::kForwardBackward;
}

std::vector<const runtime::TraceEvent*> compute_events(const RankReport& rank) {
  std::vector<const runtime::TraceEvent*> out;
  for (const auto& e : rank.events) {
    if (e.category == "compute") out.push_back(&e);
  }
  std::stable_sort(out.begin(), out.end(),
                   [](auto* a, auto* b) { return a->start_us < b->start_us; });
  return out;
}

nlohmann::json to_json(const RankReport& r) {
  nlohmann::json events = nlohmann::json::array();
  for (const auto& e : r.events) {
    events.push_back({e.name, e.category, e.start_us, e.duration_us});
  }
  return {{"events", events}, {"activation_peak", r.activation_peak}, {"rss", r.peak_rss_mib}};
}

RankReport rank_report_from_json(const nlohmann::json& json) {
  RankReport r;
  for (const auto& e : json.at("events")) {
    r.events.push_back({e[0].get<std::string>(), e[1].get<std::string>(), e[2].get<std::int64_t>(),
                        e[3].get<std::int64_t>()});
  }
  r.activation_peak = json.at("activation_peak").get<int>();
  r.peak_rss_mib = json.at("rss").get<double>();
  return r;
}

// Measured durations of the compute ops, by kind (deferred backwards apart), in seconds.
class KindDurations {
 public:
  void add(const schedule::Op& op, double seconds) {
    const int k = kind_of(op);
    sum_[k] += seconds;
    ++count_[k];
  }

  // The cost model of the mean durations. A kind never measured gets a stand-in: F 1 ms, W 0,
  // B as Bz + W (else 2F + W), FB as F + B.
  sim::CostModel mean_costs() const {
    const double f = mean(kForward, 1e-3);
    const double w = mean(kWeight, 0.0);
    const double b = mean(kBackward, mean(kBackwardInput, 2 * f) + w);
    sim::CostModel costs;
    costs.forward = f;
    costs.backward = std::max(b, w);
    costs.weight = w;
    costs.forward_backward = mean(kForwardBackward, f + b);
    return costs;
  }

 private:
  enum Kind { kForward, kBackward, kBackwardInput, kWeight, kForwardBackward, kNumKinds };

  static Kind kind_of(const schedule::Op& op) {
    switch (op.kind) {
      case schedule::OpKind::kForward: return kForward;
      case schedule::OpKind::kBackward: return op.defer_weight_grad ? kBackwardInput : kBackward;
      case schedule::OpKind::kWeight: return kWeight;
      default: return kForwardBackward;
    }
  }

  double mean(Kind k, double fallback) const { return count_[k] ? sum_[k] / count_[k] : fallback; }

  double sum_[kNumKinds] = {};
  int count_[kNumKinds] = {};
};

// The earliest start and the latest end of the compute events seen, in microseconds.
struct Span {
  std::int64_t start_us = std::numeric_limits<std::int64_t>::max();
  std::int64_t end_us = 0;
};

// Pairs `rank`'s compute events, in time order, with `program`'s compute ops, in program order:
// each pair's interval (seconds, on the trace's clock) goes into `measured.timeline` and its
// duration into `durations`; `span` grows to hold all of the rank's compute events. Returns
// whether events and ops pair up one to one.
bool lay_events_on_program(const RankReport& rank, const schedule::Program& program,
                           sim::RankResult& measured, KindDurations& durations, Span& span) {
  const auto events = compute_events(rank);
  for (const auto* e : events) {
    span.start_us = std::min(span.start_us, e->start_us);
    span.end_us = std::max(span.end_us, e->start_us + e->duration_us);
  }
  std::size_t next = 0;
  for (std::size_t i = 0; i < program.size(); ++i) {
    const schedule::Op& op = program[i];
    if (!is_compute(op.kind)) continue;
    if (next >= events.size()) return false;
    const runtime::TraceEvent* e = events[next++];
    durations.add(op, e->duration_us * 1e-6);
    measured.timeline.push_back(
        {static_cast<int>(i), e->start_us * 1e-6, (e->start_us + e->duration_us) * 1e-6});
  }
  return next == events.size();
}

// Moves the measured intervals so that the step starts at 0 and sets each rank's busy time and
// bubble.
void start_at_zero(sim::SimResult& measured, std::int64_t start_us, double makespan_s) {
  measured.makespan = makespan_s;
  for (auto& rank : measured.ranks) {
    for (auto& op : rank.timeline) {
      op.start -= start_us * 1e-6;
      op.end -= start_us * 1e-6;
      rank.busy += op.end - op.start;
    }
    rank.bubble = makespan_s - rank.busy;
  }
}

// Measured next to predicted, for every rank of `measured` (all of the schedule's); what only a
// report gives (peak activations, RSS) stays 0 for the ranks past `num_reported`.
std::vector<RankComparison> compare_ranks(const PipelineReport& report, int num_reported,
                                          const sim::SimResult& measured,
                                          const sim::SimResult& predicted) {
  std::vector<RankComparison> ranks;
  for (std::size_t r = 0; r < measured.ranks.size(); ++r) {
    RankComparison rc;
    rc.busy_s = measured.ranks[r].busy;
    rc.measured_bubble_s = measured.ranks[r].bubble;
    rc.predicted_bubble_s = predicted.ranks[r].bubble;
    rc.predicted_peak_activations = predicted.ranks[r].peak_activations;
    if (static_cast<int>(r) < num_reported) {
      rc.measured_peak_activations = report.ranks[r].activation_peak;
      rc.peak_rss_mib = report.ranks[r].peak_rss_mib;
    }
    ranks.push_back(rc);
  }
  return ranks;
}

// NOTE: the renderer's scale and ticks expect cost-model-sized numbers, so draw in ms.
sim::SimResult in_milliseconds(sim::SimResult result) {
  result.makespan *= 1e3;
  for (auto& rank : result.ranks) {
    rank.busy *= 1e3;
    rank.bubble *= 1e3;
    for (auto& op : rank.timeline) op.start *= 1e3, op.end *= 1e3;
  }
  return result;
}

sim::CostModel in_milliseconds(sim::CostModel costs) {
  costs.forward *= 1e3;
  costs.backward *= 1e3;
  costs.weight *= 1e3;
  costs.forward_backward *= 1e3;
  return costs;
}

// timeline.svg: the measured step drawn by the simulator's renderer.
void write_measured_timeline(const Comparison& c, const PipelineReport& report,
                             const schedule::Schedule& schedule, const std::string& run_dir) {
  sim::SvgOptions options;
  options.title = "measured: " + schedule.name + ", step " + std::to_string(report.step) + ", " +
                  std::to_string(schedule.num_ranks()) + " ranks, " +
                  std::to_string(schedule.num_microbatches) + " micro-batches (milliseconds)";
  write_file_atomic(
      (fs::path(run_dir) / "timeline.svg").string(),
      sim::render_svg(schedule, in_milliseconds(c.measured), in_milliseconds(c.costs), options));
}

// Prints the makespans, the op times and one line per rank to `out`; returns the ranks' entries
// for summary.json.
nlohmann::json print_rank_table(const Comparison& c, int step, std::ostream& out) {
  char line[256];
  std::snprintf(line, sizeof(line),
                "  pipeline, step %d: makespan %.3f s measured, %.3f s simulated with the measured "
                "op times (F %.1f ms, B %.1f ms, W %.1f ms, FB %.1f ms)\n",
                step, c.makespan_s, c.predicted_makespan_s, c.costs.forward * 1e3,
                c.costs.backward * 1e3, c.costs.weight * 1e3, c.costs.forward_backward * 1e3);
  out << line;
  out << "  rank  bubble measured  bubble simulated  peak activations (measured/sim)  peak RSS\n";
  nlohmann::json ranks = nlohmann::json::array();
  for (std::size_t r = 0; r < c.ranks.size(); ++r) {
    const RankComparison& rc = c.ranks[r];
    std::snprintf(line, sizeof(line),
                  "  %4zu  %7.3f s (%2.0f%%)  %7.3f s (%2.0f%%)  %15d / %-3d  %6.0f MiB\n", r,
                  rc.measured_bubble_s, 100 * rc.measured_bubble_s / c.makespan_s,
                  rc.predicted_bubble_s,
                  100 * rc.predicted_bubble_s / std::max(1e-12, c.predicted_makespan_s),
                  rc.measured_peak_activations, rc.predicted_peak_activations, rc.peak_rss_mib);
    out << line;
    ranks.push_back({{"rank", r},
                     {"busy_s", rc.busy_s},
                     {"bubble_measured_s", rc.measured_bubble_s},
                     {"bubble_simulated_s", rc.predicted_bubble_s},
                     {"peak_activations_measured", rc.measured_peak_activations},
                     {"peak_activations_simulated", rc.predicted_peak_activations},
                     {"peak_rss_mib", rc.peak_rss_mib}});
  }
  out << "  (peak activations: micro-batch stage instances whose forward ran and backward not yet;"
         " RSS: whole process)\n";
  return ranks;
}

// NOTE: the simulator gives each rank its own core. Where ranks outnumber the cores their
// compute ops take turns, so the measured makespan and bubbles are larger by about that much.
void print_core_sharing(const Comparison& c, std::size_t processes, unsigned cores,
                        std::ostream& out) {
  if (processes <= cores || c.predicted_makespan_s <= 0) return;
  char line[256];
  std::snprintf(line, sizeof(line),
                "  (%zu ranks share %u cores here: the measured makespan is %.2fx the simulated "
                "one, which assumes a core per rank; ops of ranks sharing a core wait for each "
                "other, which the measured bubbles include)\n",
                processes, cores, c.makespan_s / c.predicted_makespan_s);
  out << line;
}

}  // namespace

PipelineReport gather_pipeline_report(runtime::DistributedContext& context,
                                      const std::vector<runtime::TraceEvent>& events,
                                      int activation_peak, double peak_rss_mib, int step) {
  PipelineReport report;
  report.step = step;
  const int rank = context.env.rank;
  const int world = context.world ? context.world->getSize() : 1;
  RankReport mine{events, activation_peak, peak_rss_mib};
  if (world == 1 || !context.store) {
    report.ranks.push_back(mine);
    return report;
  }
  const std::string prefix = "dualpipe/train/report/" + std::to_string(step) + "/";
  if (rank != 0) {
    const std::string text = to_json(mine).dump();
    context.store->set(prefix + std::to_string(rank),
                       std::vector<uint8_t>(text.begin(), text.end()));
    return report;
  }
  report.ranks.push_back(mine);
  for (int r = 1; r < world; ++r) {
    const std::vector<uint8_t> bytes = context.store->get(prefix + std::to_string(r));
    report.ranks.push_back(
        rank_report_from_json(nlohmann::json::parse(std::string(bytes.begin(), bytes.end()))));
  }
  return report;
}

Comparison compare_with_simulator(const PipelineReport& report,
                                  const schedule::Schedule& schedule) {
  Comparison c;
  const int num_ranks = std::min<int>(schedule.num_ranks(), static_cast<int>(report.ranks.size()));
  c.timeline_matches_program = num_ranks == schedule.num_ranks();
  c.measured.ranks.resize(static_cast<std::size_t>(schedule.num_ranks()));
  KindDurations durations;
  Span span;
  for (int r = 0; r < num_ranks; ++r) {
    if (!lay_events_on_program(report.ranks[r], schedule.programs[r], c.measured.ranks[r],
                               durations, span)) {
      c.timeline_matches_program = false;
    }
  }
  if (span.end_us <= span.start_us) return c;
  c.makespan_s = (span.end_us - span.start_us) * 1e-6;
  start_at_zero(c.measured, span.start_us, c.makespan_s);
  c.costs = durations.mean_costs();
  const sim::SimResult predicted = sim::simulate(schedule, c.costs);
  c.predicted_makespan_s = predicted.makespan;
  c.ranks = compare_ranks(report, num_ranks, c.measured, predicted);
  return c;
}

void write_pipeline_report(const PipelineReport& report, const schedule::Schedule& schedule,
                           const std::string& run_dir, std::ostream& out, nlohmann::json& summary) {
  std::vector<std::vector<runtime::TraceEvent>> events;
  for (const RankReport& r : report.ranks) events.push_back(r.events);
  runtime::write_chrome_trace((fs::path(run_dir) / "trace.json").string(), events);
  const Comparison c = compare_with_simulator(report, schedule);
  if (c.timeline_matches_program && c.makespan_s > 0) {
    write_measured_timeline(c, report, schedule, run_dir);
  }
  nlohmann::json ranks = print_rank_table(c, report.step, out);
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const std::size_t processes = report.ranks.size();
  print_core_sharing(c, processes, cores, out);
  summary["pipeline"] = {{"step", report.step},
                         {"makespan_measured_s", c.makespan_s},
                         {"makespan_simulated_s", c.predicted_makespan_s},
                         {"costs", sim::to_string(c.costs)},
                         {"processes", processes},
                         {"cores", cores},
                         {"ranks", ranks}};
}

}  // namespace dualpipe::train
