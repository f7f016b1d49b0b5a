#include "dualpipe/sim/list_scheduler.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "dualpipe/check.h"
#include "dualpipe/schedule/communication.h"
#include "dualpipe/schedule/list_schedule.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/schedule/validator.h"
#include "dualpipe/sim/exact_search.h"
#include "dualpipe/sim/simulator.h"

namespace dualpipe::sim {
namespace {

constexpr double kNever = std::numeric_limits<double>::infinity();
// Ops the local moves may simulate in all (each move inserts communication, validates and
// simulates the whole schedule): about a quarter of a second here.
constexpr long long kMoveBudgetOps = 400000;
constexpr int kMostMoves = 400;

// A schedule the search holds: compute programs only, with its simulated step time and peak.
struct Candidate {
  schedule::Schedule compute;
  double makespan = kNever;
  int peak = std::numeric_limits<int>::max();
  std::string how;
};

schedule::Schedule compute_only(schedule::Schedule s) {
  for (schedule::Program& program : s.programs) {
    program.erase(std::remove_if(program.begin(), program.end(),
                                 [](const schedule::Op& op) { return op.is_communication(); }),
                  program.end());
  }
  return s;
}

class Search {
 public:
  explicit Search(const SearchOptions& options)
      : options_(options),
        placement_(schedule::schedule_placement(options.layout, options.num_ranks)) {}

  SearchResult run() {
    SearchResult result;
    walk_policies(result);
    seed_with_families();
    improve_with_moves();
    search_exactly();
    schedule::Schedule s = best_.compute;
    schedule::insert_communication(s);
    schedule::validate(s);
    const SimResult timed = simulate(s, options_.costs);
    result.schedule = std::move(s);
    result.makespan = timed.makespan;
    result.peak_activations = timed.max_peak_activations();
    result.policy = best_.how;
    return result;
  }

 private:
  bool fits(int peak) const {
    return options_.max_activations == 0 || peak <= options_.max_activations;
  }

  // Keeps `c` when it fits and is faster (ties: smaller peak), or while nothing fits, when it
  // needs less memory.
  bool offer(Candidate&& c) {
    const bool better =
        fits(c.peak) != fits(best_.peak)
            ? fits(c.peak)
            : (fits(c.peak) ? c.makespan < best_.makespan ||
                                  (c.makespan == best_.makespan && c.peak < best_.peak)
                            : c.peak < best_.peak);
    if (better) best_ = std::move(c);
    return better;
  }

  // The walk of every policy, timed by the walk itself (the simulator's timing: tested).
  void walk_policies(SearchResult& result) {
    schedule::ListCosts costs;
    costs.op_time = [this](const schedule::Op& op) { return op_cost(op, options_.costs); };
    costs.comm = options_.num_ranks > 1 ? options_.costs.comm : 0.0;
    for (const schedule::ListPolicy& policy :
         schedule::list_policies(placement_, options_.num_microbatches, options_.max_activations)) {
      schedule::ListSchedule walked =
          schedule::list_schedule(options_.layout, placement_, options_.num_microbatches, policy,
                                  costs, /*with_communication=*/false);
      ++result.policies_tried;
      offer({std::move(walked.schedule), walked.makespan, walked.peak_activations,
             policy.describe()});
    }
  }

  // The fixed families on the same placement start the moves too, so the search is never
  // behind them.
  void seed_with_families() {
    for (const std::string& name : schedule::schedule_names()) {
      if (is_searched_schedule(name)) continue;
      const schedule::ScheduleFacts facts = schedule::schedule_facts(name);
      if (!facts.accepts(options_.num_ranks, options_.num_microbatches)) continue;
      if (!(schedule::schedule_placement(name, options_.num_ranks) == placement_)) continue;
      schedule::Schedule built =
          schedule::build_schedule(name, options_.num_ranks, options_.num_microbatches);
      const SimResult timed = simulate(built, options_.costs);
      schedule::Schedule compute = compute_only(std::move(built));
      compute.name = options_.layout;
      offer({std::move(compute), timed.makespan, timed.max_peak_activations(), name + "'s order"});
    }
  }

  // The step time and peak of `compute` with communication, or nothing when it is not a valid
  // schedule (the validator or the simulator refuse it).
  std::optional<std::pair<double, int>> time(const schedule::Schedule& compute) const {
    schedule::Schedule s = compute;
    try {
      schedule::insert_communication(s);
      schedule::validate(s);
      const SimResult timed = simulate(s, options_.costs);
      return std::make_pair(timed.makespan, timed.max_peak_activations());
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }

  // The programs after one move on `rank` at `i`: kind 0 swaps ops i and i+1, 1 moves op i
  // two places later, 2 splits an F&B pair (forward first), 3 splits it backward first, 4 pairs
  // a forward with the backward after it. Nothing when the move does not apply there.
  static std::optional<schedule::Program> moved(const schedule::Program& p, int i, int kind) {
    using schedule::Op;
    using schedule::OpKind;
    const int n = static_cast<int>(p.size());
    schedule::Program q = p;
    switch (kind) {
      case 0:
        if (i + 1 >= n || (p[i].kind == OpKind::kWeight && p[i + 1].kind == OpKind::kWeight)) {
          return std::nullopt;
        }
        std::swap(q[i], q[i + 1]);
        return q;
      case 1:
        if (i + 2 >= n) return std::nullopt;
        std::rotate(q.begin() + i, q.begin() + i + 1, q.begin() + i + 3);
        return q;
      case 2:
      case 3: {
        if (p[i].kind != OpKind::kForwardBackward) return std::nullopt;
        const Op f = Op::forward(p[i].direction, p[i].stage, p[i].microbatch);
        const Op b = Op::backward(p[i].backward_direction, p[i].backward_stage,
                                  p[i].backward_microbatch, p[i].defer_weight_grad);
        q[i] = kind == 2 ? f : b;
        q.insert(q.begin() + i + 1, kind == 2 ? b : f);
        return q;
      }
      default: {
        if (i + 1 >= n || p[i].kind != OpKind::kForward || p[i + 1].kind != OpKind::kBackward ||
            (p[i].direction == p[i + 1].direction && p[i].stage == p[i + 1].stage)) {
          return std::nullopt;
        }
        Op fb = Op::forward_backward(p[i].direction, p[i].stage, p[i].microbatch,
                                     p[i + 1].direction, p[i + 1].stage, p[i + 1].microbatch);
        fb.defer_weight_grad = p[i + 1].defer_weight_grad;
        q[i] = fb;
        q.erase(q.begin() + i + 1);
        return q;
      }
    }
  }

  // First-improvement local search from the best candidate: single moves on one rank's program,
  // kept when the schedule stays valid, within the limit and strictly faster, within a budget of
  // simulated ops (kMoveBudgetOps) and moves.
  void improve_with_moves() {
    if (!fits(best_.peak)) return;
    long long ops = 0;
    for (const schedule::Program& p : best_.compute.programs) ops += 3 * p.size();
    int budget =
        static_cast<int>(std::min<long long>(kMostMoves, kMoveBudgetOps / std::max(1LL, ops)));
    int taken = 0;
    const int ranks = best_.compute.num_ranks();
    bool improved = true;
    while (improved && budget > 0) {
      improved = false;
      for (int r = 0; r < ranks && !improved && budget > 0; ++r) {
        const int n = static_cast<int>(best_.compute.programs[r].size());
        for (int i = 0; i < n && !improved && budget > 0; ++i) {
          for (int kind = 0; kind < 5 && !improved && budget > 0; ++kind) {
            std::optional<schedule::Program> q = moved(best_.compute.programs[r], i, kind);
            if (!q) continue;
            --budget;
            schedule::Schedule trial = best_.compute;
            trial.programs[r] = std::move(*q);
            const auto timed = time(trial);
            if (!timed || !fits(timed->second) || timed->first >= best_.makespan) continue;
            best_.compute = std::move(trial);
            best_.makespan = timed->first;
            best_.peak = timed->second;
            improved = true;
            ++taken;
          }
        }
      }
    }
    if (taken > 0) best_.how += ", then " + std::to_string(taken) + " improving move(s)";
  }

  // On one stage per rank at small sizes, the exact search (exact_search.h) either finds a
  // faster schedule or proves there is none.
  void search_exactly() {
    if (options_.layout != "search" ||
        options_.num_ranks * options_.num_microbatches > kExactSearchMostRankMicrobatches) {
      return;
    }
    ExactSearchOptions exact;
    exact.num_ranks = options_.num_ranks;
    exact.num_microbatches = options_.num_microbatches;
    exact.costs = options_.costs;
    exact.max_activations = options_.max_activations;
    exact.faster_than = fits(best_.peak) ? best_.makespan : 0.0;
    ExactSearchResult found = exact_search(exact);
    const std::string nodes = std::to_string(found.nodes) + " nodes";
    if (found.schedule) {
      const SimResult timed = simulate(*found.schedule, options_.costs);
      best_ = {compute_only(std::move(*found.schedule)), timed.makespan,
               timed.max_peak_activations(),
               std::string("exact search") + (found.complete ? ", optimal" : ", best found") +
                   " (" + nodes + ")"};
    } else if (found.complete) {
      best_.how += "; optimal: the exact search finds nothing faster (" + nodes + ")";
    } else {
      best_.how += "; the exact search found nothing faster within " + nodes + " (not exhaustive)";
    }
  }

  const SearchOptions& options_;
  const schedule::Placement placement_;
  Candidate best_;
};

}  // namespace

bool is_searched_schedule(const std::string& name) {
  for (const char* searched : kSearchedScheduleNames) {
    if (name == searched) return true;
  }
  return false;
}

SearchResult search_schedule(const SearchOptions& options) {
  DUALPIPE_CHECK(is_searched_schedule(options.layout), "search layout must be search, search-v or ",
                 "search-dual, got \"", options.layout, "\"");
  schedule::check_size_limits(options.num_ranks, options.num_microbatches);
  DUALPIPE_CHECK(options.num_microbatches >= 1, "search needs num_microbatches >= 1, got ",
                 options.num_microbatches);
  DUALPIPE_CHECK(options.max_activations >= 0,
                 "search needs max_activations >= 0 (0: no limit), got ", options.max_activations);
  const schedule::ScheduleFacts facts = schedule::schedule_facts(options.layout);
  DUALPIPE_CHECK(facts.accepts(options.num_ranks, options.num_microbatches), "search layout ",
                 options.layout, " accepts ", facts.accepted_sizes(options.num_ranks), ", got ",
                 "num_ranks=", options.num_ranks, ", num_microbatches=", options.num_microbatches);
  options.costs.check();
  return Search(options).run();
}

}  // namespace dualpipe::sim
