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
  std::int64_t t0 = std::numeric_limits<std::int64_t>::max(), t1 = 0;
  // Mean measured duration per op kind (deferred backwards apart).
  double sum[5] = {0, 0, 0, 0, 0};
  int count[5] = {0, 0, 0, 0, 0};
  c.timeline_matches_program = num_ranks == schedule.num_ranks();
  c.measured.ranks.resize(static_cast<std::size_t>(schedule.num_ranks()));
  for (int r = 0; r < num_ranks; ++r) {
    const auto events = compute_events(report.ranks[r]);
    for (const auto* e : events) {
      t0 = std::min(t0, e->start_us);
      t1 = std::max(t1, e->start_us + e->duration_us);
    }
    const schedule::Program& program = schedule.programs[r];
    std::size_t next = 0;
    for (std::size_t i = 0; i < program.size(); ++i) {
      const schedule::Op& op = program[i];
      if (!is_compute(op.kind)) continue;
      if (next >= events.size()) {
        c.timeline_matches_program = false;
        break;
      }
      const runtime::TraceEvent* e = events[next++];
      int k = 0;
      switch (op.kind) {
        case schedule::OpKind::kForward: k = 0; break;
        case schedule::OpKind::kBackward: k = op.defer_weight_grad ? 2 : 1; break;
        case schedule::OpKind::kWeight: k = 3; break;
        default: k = 4; break;
      }
      sum[k] += e->duration_us * 1e-6;
      ++count[k];
      c.measured.ranks[r].timeline.push_back(
          {static_cast<int>(i), e->start_us * 1e-6, (e->start_us + e->duration_us) * 1e-6});
    }
    if (next != events.size()) c.timeline_matches_program = false;
  }
  if (t1 <= t0) return c;
  c.makespan_s = (t1 - t0) * 1e-6;
  c.measured.makespan = c.makespan_s;
  for (auto& rank : c.measured.ranks) {
    for (auto& op : rank.timeline) {
      op.start -= t0 * 1e-6;
      op.end -= t0 * 1e-6;
      rank.busy += op.end - op.start;
    }
    rank.bubble = c.makespan_s - rank.busy;
  }
  auto mean = [&](int k, double fallback) { return count[k] ? sum[k] / count[k] : fallback; };
  const double f = mean(0, 1e-3);
  const double w = mean(3, 0.0);
  const double b = mean(1, mean(2, 2 * f) + w);
  c.costs.forward = f;
  c.costs.backward = std::max(b, w);
  c.costs.weight = w;
  c.costs.forward_backward = mean(4, f + b);
  const sim::SimResult predicted = sim::simulate(schedule, c.costs);
  c.predicted_makespan_s = predicted.makespan;
  for (int r = 0; r < schedule.num_ranks(); ++r) {
    RankComparison rc;
    rc.busy_s = c.measured.ranks[r].busy;
    rc.measured_bubble_s = c.measured.ranks[r].bubble;
    rc.predicted_bubble_s = predicted.ranks[r].bubble;
    rc.predicted_peak_activations = predicted.ranks[r].peak_activations;
    if (r < num_ranks) {
      rc.measured_peak_activations = report.ranks[r].activation_peak;
      rc.peak_rss_mib = report.ranks[r].peak_rss_mib;
    }
    c.ranks.push_back(rc);
  }
  return c;
}

void write_pipeline_report(const PipelineReport& report, const schedule::Schedule& schedule,
                           const std::string& run_dir, std::ostream& out, nlohmann::json& summary) {
  std::vector<std::vector<runtime::TraceEvent>> events;
  for (const RankReport& r : report.ranks) events.push_back(r.events);
  runtime::write_chrome_trace((fs::path(run_dir) / "trace.json").string(), events);
  const Comparison c = compare_with_simulator(report, schedule);
  if (c.timeline_matches_program && c.makespan_s > 0) {
    sim::SvgOptions options;
    options.title = "measured: " + schedule.name + ", step " + std::to_string(report.step) + ", " +
                    std::to_string(schedule.num_ranks()) + " ranks, " +
                    std::to_string(schedule.num_microbatches) + " micro-batches (milliseconds)";
    // NOTE: the renderer's scale and ticks expect cost-model-sized numbers, so draw in ms.
    sim::SimResult ms = c.measured;
    ms.makespan *= 1e3;
    for (auto& rank : ms.ranks) {
      rank.busy *= 1e3;
      rank.bubble *= 1e3;
      for (auto& op : rank.timeline) op.start *= 1e3, op.end *= 1e3;
    }
    sim::CostModel costs_ms = c.costs;
    costs_ms.forward *= 1e3;
    costs_ms.backward *= 1e3;
    costs_ms.weight *= 1e3;
    costs_ms.forward_backward *= 1e3;
    write_file_atomic((fs::path(run_dir) / "timeline.svg").string(),
                      sim::render_svg(schedule, ms, costs_ms, options));
  }
  char line[256];
  std::snprintf(line, sizeof(line),
                "  pipeline, step %d: makespan %.3f s measured, %.3f s simulated with the measured "
                "op times (F %.1f ms, B %.1f ms, W %.1f ms, FB %.1f ms)\n",
                report.step, c.makespan_s, c.predicted_makespan_s, c.costs.forward * 1e3,
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
  // NOTE: the simulator gives each rank its own core. Where ranks outnumber the cores their
  // compute ops take turns, so the measured makespan and bubbles are larger by about that much.
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const std::size_t processes = report.ranks.size();
  if (processes > cores && c.predicted_makespan_s > 0) {
    std::snprintf(line, sizeof(line),
                  "  (%zu ranks share %u cores here: the measured makespan is %.2fx the simulated "
                  "one, which assumes a core per rank; ops of ranks sharing a core wait for each "
                  "other, which the measured bubbles include)\n",
                  processes, cores, c.makespan_s / c.predicted_makespan_s);
    out << line;
  }
  summary["pipeline"] = {{"step", report.step},
                         {"makespan_measured_s", c.makespan_s},
                         {"makespan_simulated_s", c.predicted_makespan_s},
                         {"costs", sim::to_string(c.costs)},
                         {"processes", processes},
                         {"cores", cores},
                         {"ranks", ranks}};
}

}  // namespace dualpipe::train
