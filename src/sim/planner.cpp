#include "dualpipe/sim/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <limits>

#include "dualpipe/check.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/schedule/validator.h"
#include "dualpipe/sim/list_scheduler.h"

namespace dualpipe::sim {
namespace {

// One (pipeline size, micro-batch count, micro-batch size) the request allows.
struct Size {
  int num_ranks = 0;
  int num_microbatches = 0;
  int micro_batch_size = 0;
  int data_parallel = 1;
};

void check_request(const PlanRequest& r) {
  DUALPIPE_CHECK(!r.pipeline_sizes.empty(), "plan needs at least one pipeline size");
  DUALPIPE_CHECK(!r.micro_batch_sizes.empty(), "plan needs at least one micro-batch size");
  for (int p : r.pipeline_sizes) {
    DUALPIPE_CHECK(p >= 1 && p <= schedule::kMaxRanks, "pipeline size (ranks) must be in [1, ",
                   schedule::kMaxRanks, "], got ", p);
    DUALPIPE_CHECK(r.gpus == 0 || r.gpus % p == 0, "pipeline size ", p,
                   " does not divide gpus=", r.gpus);
  }
  DUALPIPE_CHECK(r.gpus >= 0, "gpus must be >= 0 (0: one pipeline), got ", r.gpus);
  DUALPIPE_CHECK(r.global_batch >= 0, "global batch must be >= 0 (0: use micro-batch counts), got ",
                 r.global_batch);
  for (int m : r.microbatch_counts) {
    DUALPIPE_CHECK(m >= 1, "micro-batch count must be >= 1, got ", m);
  }
  for (int b : r.micro_batch_sizes) {
    DUALPIPE_CHECK(b >= 1, "micro-batch size must be >= 1, got ", b);
  }
  const std::pair<const char*, double> limits[] = {{"max activations", r.max_activations},
                                                   {"memory bytes", r.memory_bytes},
                                                   {"activation bytes", r.activation_bytes},
                                                   {"param bytes", r.param_bytes}};
  for (const auto& [what, value] : limits) {
    DUALPIPE_CHECK(std::isfinite(value) && value >= 0, what, " must be finite and >= 0, got ",
                   value);
  }
  DUALPIPE_CHECK(r.memory_bytes == 0 || r.activation_bytes > 0 || r.param_bytes > 0,
                 "a memory limit in bytes (", r.memory_bytes,
                 ") needs activation bytes and/or param bytes to count against it");
  r.costs.check();
  DUALPIPE_CHECK(r.costs.stage_scale.empty() ||
                     static_cast<int>(r.costs.stage_scale.size()) == r.pipeline_sizes[0],
                 "stage multipliers (scale=) have one entry per rank of the reference pipeline "
                 "size ",
                 r.pipeline_sizes[0], ", got ", r.costs.stage_scale.size(), " entries");
  for (const std::string& name : r.schedules) schedule::schedule_facts(name);  // names checked
}

std::vector<Size> sizes_of(const PlanRequest& r) {
  std::vector<Size> sizes;
  for (int p : r.pipeline_sizes) {
    const int dp = r.gpus == 0 ? 1 : r.gpus / p;
    if (r.global_batch == 0) {
      for (int m : r.microbatch_counts) sizes.push_back({p, m, r.micro_batch_sizes[0], dp});
      continue;
    }
    for (int b : r.micro_batch_sizes) {
      const long long per_step = static_cast<long long>(dp) * b;
      if (r.global_batch % per_step == 0) {
        sizes.push_back({p, static_cast<int>(r.global_batch / per_step), b, dp});
      }
    }
  }
  DUALPIPE_CHECK(!sizes.empty(), "global batch ", r.global_batch,
                 " does not split into micro-batches of any allowed size over any pipeline "
                 "size's data-parallel replicas (gpus=",
                 r.gpus, ")");
  for (const Size& s : sizes) schedule::check_size_limits(s.num_ranks, s.num_microbatches);
  return sizes;
}

// Reference rank shares one stage of a schedule with `num_stages` stages per direction holds.
double stage_share(const PlanRequest& r, int num_stages) {
  return static_cast<double>(r.pipeline_sizes[0]) / num_stages;
}

double batch_factor(const PlanRequest& r, int micro_batch_size) {
  return static_cast<double>(micro_batch_size) / r.micro_batch_sizes[0];
}

struct Usage {
  double activation_units = 0.0;
  double memory_bytes = 0.0;
};

// The most a rank of `s` holds under `result`, in reference units and bytes.
Usage usage_of(const PlanRequest& r, const schedule::Schedule& s, const SimResult& result,
               int micro_batch_size) {
  const double share = stage_share(r, s.num_stages());
  const double k = batch_factor(r, micro_batch_size);
  Usage most;
  for (int rank = 0; rank < s.num_ranks(); ++rank) {
    const double units = result.ranks[rank].peak_activations * share * k;
    const double bytes =
        units * r.activation_bytes + s.placement.num_slots(rank) * share * r.param_bytes;
    most.activation_units = std::max(most.activation_units, units);
    most.memory_bytes = std::max(most.memory_bytes, bytes);
  }
  return most;
}

std::string num(double v) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", v);
  return text;
}

std::string gib(double bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.3g GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return text;
}

// "" when `c` fits the limits, else which limit it breaks.
std::string memory_verdict(const PlanRequest& r, const PlanCandidate& c) {
  constexpr double kSlack = 1e-9;
  if (r.max_activations > 0 && c.activation_units > r.max_activations + kSlack) {
    return "memory: " + num(c.activation_units) + " activation units > limit " +
           num(r.max_activations);
  }
  if (r.memory_bytes > 0 && c.memory_bytes > r.memory_bytes * (1 + kSlack)) {
    return "memory: " + gib(c.memory_bytes) + " > limit " + gib(r.memory_bytes);
  }
  return "";
}

PlanCandidate candidate_of(const PlanRequest& r, const Size& size, const std::string& name,
                           const schedule::Schedule& s, const SimResult& result) {
  PlanCandidate c;
  c.schedule = name;
  c.num_ranks = size.num_ranks;
  c.num_microbatches = size.num_microbatches;
  c.micro_batch_size = size.micro_batch_size;
  c.data_parallel = size.data_parallel;
  c.makespan = result.makespan;
  c.max_bubble = result.max_bubble();
  for (const RankResult& rank : result.ranks) c.max_busy = std::max(c.max_busy, rank.busy);
  c.peak_activations = result.max_peak_activations();
  c.parameter_copies = result.max_parameter_copies();
  const Usage usage = usage_of(r, s, result, size.micro_batch_size);
  c.activation_units = usage.activation_units;
  c.memory_bytes = usage.memory_bytes;
  c.why = memory_verdict(r, c);
  c.fits = c.why.empty();
  return c;
}

// The most stage micro-batches in flight per rank a searched `placement` of `size` may hold
// under the limits (0: no limit); at least 1, so the search always yields its least-memory
// schedule.
int search_cap(const PlanRequest& r, const Size& size, const schedule::Placement& placement) {
  const double share = stage_share(r, placement.num_stages());
  const double unit = share * batch_factor(r, size.micro_batch_size);
  double cap = std::numeric_limits<double>::infinity();
  if (r.max_activations > 0) cap = std::min(cap, std::floor(r.max_activations / unit + 1e-9));
  if (r.memory_bytes > 0 && r.activation_bytes > 0) {
    int slots = 0;
    for (int rank = 0; rank < placement.num_ranks(); ++rank) {
      slots = std::max(slots, placement.num_slots(rank));
    }
    const double params = slots * share * r.param_bytes;
    cap = std::min(cap, std::floor((r.memory_bytes - params) / (unit * r.activation_bytes) + 1e-9));
  }
  if (std::isinf(cap)) return 0;
  return static_cast<int>(std::clamp(cap, 1.0, 2.0 * size.num_microbatches));
}

// The searched placements the request asks for: those its schedule list names, else all of
// them when it searches.
std::vector<std::string> searched_layouts(const PlanRequest& r) {
  std::vector<std::string> named;
  for (const std::string& name : r.schedules) {
    if (is_searched_schedule(name)) named.push_back(name);
  }
  if (!named.empty() || !r.search) return named;
  return {std::begin(kSearchedScheduleNames), std::end(kSearchedScheduleNames)};
}

// Why a fitting loser lost to `winner`: the larger of its bubble and compute differences.
std::string loss_reason(const PlanCandidate& c, const PlanCandidate& winner) {
  const double slower = c.makespan - winner.makespan;
  if (slower <= 0) return "tie: same step time as the winner";
  const double bubble = c.max_bubble - winner.max_bubble;
  const double busy = c.max_busy - winner.max_busy;
  const std::string head = "+" + num(slower) + " step time; ";
  if (bubble >= busy) {
    return head + "bubble: max bubble " + num(c.max_bubble) + " vs the winner's " +
           num(winner.max_bubble);
  }
  return head + "compute: busiest rank " + num(c.max_busy) + " vs the winner's " +
         num(winner.max_busy);
}

// Throws naming the smallest limit any candidate meets.
[[noreturn]] void no_fit(const PlanRequest& r, const std::vector<PlanCandidate>& all) {
  DUALPIPE_CHECK(!all.empty(), "no schedule accepts any of the requested sizes");
  const bool by_units = r.max_activations > 0;
  auto need = [&](const PlanCandidate& c) {
    return by_units ? c.activation_units : c.memory_bytes;
  };
  const PlanCandidate& least = *std::min_element(
      all.begin(), all.end(),
      [&](const PlanCandidate& a, const PlanCandidate& b) { return need(a) < need(b); });
  const std::string limit = by_units
                                ? "max activations " + num(r.max_activations) + " units per rank"
                                : "memory limit " + gib(r.memory_bytes) + " per rank";
  const std::string smallest =
      by_units ? num(least.activation_units) + " units"
               : gib(least.memory_bytes) + " (" + num(least.memory_bytes) + " bytes)";
  throw std::invalid_argument("no schedule fits the " + limit + "; the smallest memory that " +
                              "works is " + smallest + " (" + least.schedule + " on " +
                              std::to_string(least.num_ranks) + " ranks, " +
                              std::to_string(least.num_microbatches) + " micro-batches)");
}

}  // namespace

CostModel scaled_costs(const PlanRequest& r, int micro_batch_size, int num_stages) {
  const double share = stage_share(r, num_stages);
  const double k = batch_factor(r, micro_batch_size);
  CostModel c = r.costs;
  c.forward *= share * k;
  c.backward *= share * k;
  c.weight *= share * k;
  c.forward_backward *= share * k;
  c.comm *= k;
  c.stage_scale.clear();
  if (!r.costs.stage_scale.empty()) {
    // NOTE: stage s covers reference shares [s*share, (s+1)*share); its multiplier is their mean.
    const std::vector<double>& scale = r.costs.stage_scale;
    for (int s = 0; s < num_stages; ++s) {
      const double lo = s * share, hi = (s + 1) * share;
      double sum = 0;
      for (int i = static_cast<int>(lo); i < static_cast<int>(scale.size()) && i < hi; ++i) {
        sum += scale[i] * (std::min<double>(hi, i + 1) - std::max<double>(lo, i));
      }
      c.stage_scale.push_back(sum / share);
    }
  }
  return c;
}

Plan plan(const PlanRequest& request) {
  check_request(request);
  const std::vector<std::string> names =
      request.schedules.empty() ? schedule::schedule_names() : request.schedules;
  struct Built {
    PlanCandidate candidate;
    schedule::Schedule schedule;
    CostModel costs;
    SimResult result;
  };
  std::vector<Built> built;
  for (const Size& size : sizes_of(request)) {
    for (const std::string& name : names) {
      // NOTE: the searched placements are searched on the request's costs below; their
      // registry builds (default costs) would only repeat them.
      if (is_searched_schedule(name)) continue;
      if (!schedule::schedule_facts(name).accepts(size.num_ranks, size.num_microbatches)) continue;
      schedule::Schedule s = schedule::build_schedule(name, size.num_ranks, size.num_microbatches);
      schedule::validate(s);
      CostModel costs = scaled_costs(request, size.micro_batch_size, s.num_stages());
      SimResult result = simulate(s, costs);
      PlanCandidate c = candidate_of(request, size, name, s, result);
      built.push_back({std::move(c), std::move(s), std::move(costs), std::move(result)});
    }
    // NOTE: the families of this size just built, for the searches of their placements (when
    // the request asks for every family; else each search builds its placement's own). The
    // searched rows go to `searched` first: `built` must not reallocate under these pointers.
    std::vector<const schedule::Schedule*> families;
    std::vector<Built> searched;
    for (const Built& b : built) {
      if (b.candidate.num_ranks == size.num_ranks &&
          b.candidate.num_microbatches == size.num_microbatches &&
          b.candidate.micro_batch_size == size.micro_batch_size) {
        families.push_back(&b.schedule);
      }
    }
    for (const std::string& layout : searched_layouts(request)) {
      if (!schedule::schedule_facts(layout).accepts(size.num_ranks, size.num_microbatches)) {
        continue;
      }
      const schedule::Placement placement = schedule::schedule_placement(layout, size.num_ranks);
      SearchOptions options;
      options.layout = layout;
      options.num_ranks = size.num_ranks;
      options.num_microbatches = size.num_microbatches;
      options.costs = scaled_costs(request, size.micro_batch_size, placement.num_stages());
      options.max_activations = search_cap(request, size, placement);
      options.built_families = request.schedules.empty() ? &families : nullptr;
      SearchResult found = search_schedule(options);
      SimResult result = simulate(found.schedule, options.costs);
      PlanCandidate c = candidate_of(request, size, layout, found.schedule, result);
      c.note = found.policy + " (" + std::to_string(found.policies_tried) + " policies tried)";
      searched.push_back(
          {std::move(c), std::move(found.schedule), options.costs, std::move(result)});
    }
    std::move(searched.begin(), searched.end(), std::back_inserter(built));
  }
  DUALPIPE_CHECK(!built.empty(), "no schedule accepts any of the requested sizes");
  std::stable_sort(built.begin(), built.end(), [](const Built& a, const Built& b) {
    if (a.candidate.fits != b.candidate.fits) return a.candidate.fits;
    if (a.candidate.makespan != b.candidate.makespan) {
      return a.candidate.makespan < b.candidate.makespan;
    }
    return a.candidate.activation_units < b.candidate.activation_units;
  });
  if (!built.front().candidate.fits) {
    std::vector<PlanCandidate> all;
    for (const Built& b : built) all.push_back(b.candidate);
    no_fit(request, all);
  }
  Plan plan;
  const PlanCandidate& winner = built.front().candidate;
  for (Built& b : built) {
    if (b.candidate.fits && &b.candidate != &winner)
      b.candidate.why = loss_reason(b.candidate, winner);
    plan.candidates.push_back(b.candidate);
  }
  plan.winner = std::move(built.front().schedule);
  plan.winner_costs = std::move(built.front().costs);
  plan.winner_result = std::move(built.front().result);
  return plan;
}

}  // namespace dualpipe::sim
