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
  void offer(Candidate&& c) {
    const bool better =
        fits(c.peak) != fits(best_.peak)
            ? fits(c.peak)
            : (fits(c.peak) ? c.makespan < best_.makespan ||
                                  (c.makespan == best_.makespan && c.peak < best_.peak)
                            : c.peak < best_.peak);
    if (better) best_ = std::move(c);
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
  // behind them: those the caller built (SearchOptions::built_families), else built here.
  void seed_with_families() {
    if (options_.built_families != nullptr) {
      for (const schedule::Schedule* built : *options_.built_families) {
        if (built->placement == placement_ && !is_searched_schedule(built->name))
          offer_family(*built);
      }
      return;
    }
    for (const std::string& name : schedule::schedule_names()) {
      if (is_searched_schedule(name)) continue;
      const schedule::ScheduleFacts facts = schedule::schedule_facts(name);
      if (!facts.accepts(options_.num_ranks, options_.num_microbatches)) continue;
      if (!(schedule::schedule_placement(name, options_.num_ranks) == placement_)) continue;
      offer_family(schedule::build_schedule(name, options_.num_ranks, options_.num_microbatches));
    }
  }

  void offer_family(const schedule::Schedule& built) {
    const SimResult timed = simulate(built, options_.costs);
    schedule::Schedule compute = compute_only(built);
    compute.name = options_.layout;
    offer({std::move(compute), timed.makespan, timed.max_peak_activations(),
           built.name + "'s order"});
  }

  // `compute` with communication, simulated; nothing when it is not a valid schedule (the
  // validator or the simulator refuse it).
  std::optional<std::pair<schedule::Schedule, SimResult>> time(
      const schedule::Schedule& compute) const {
    schedule::Schedule s = compute;
    try {
      schedule::insert_communication(s);
      schedule::validate(s);
      SimResult timed = simulate(s, options_.costs);
      return std::make_pair(std::move(s), std::move(timed));
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }

  // Where a rank idles before a compute op: the rank, the op's index in the compute program and
  // how long.
  struct Gap {
    int rank = 0;
    int index = 0;
    double length = 0.0;
  };

  // The idle gaps of `timed` (a schedule with communication), longest first.
  static std::vector<Gap> gaps_of(const schedule::Schedule& s, const SimResult& timed) {
    std::vector<Gap> gaps;
    for (int r = 0; r < s.num_ranks(); ++r) {
      double free_at = 0.0;
      for (std::size_t k = 0; k < timed.ranks[r].timeline.size(); ++k) {
        const TimedOp& op = timed.ranks[r].timeline[k];
        if (op.start > free_at + 1e-9) {
          gaps.push_back({r, static_cast<int>(k), op.start - free_at});
        }
        free_at = op.end;
      }
    }
    std::stable_sort(gaps.begin(), gaps.end(),
                     [](const Gap& a, const Gap& b) { return a.length > b.length; });
    return gaps;
  }

  // First-improvement local search from the best candidate: into each idle gap of the
  // simulated timeline (longest first), one of the next kLookahead ops of that rank is moved
  // (a W, a forward or a backward that could run earlier); a move is kept when the schedule
  // stays valid, within the limit and strictly faster. Budget: kMoveBudgetOps simulated ops.
  void improve_with_moves() {
    constexpr int kLookahead = 6;
    if (!fits(best_.peak)) return;
    auto timed = time(best_.compute);
    if (!timed) return;
    long long ops = 0;
    for (const schedule::Program& p : timed->first.programs) ops += p.size();
    int budget =
        static_cast<int>(std::min<long long>(kMostMoves, kMoveBudgetOps / std::max(1LL, ops)));
    int taken = 0;
    bool improved = true;
    while (improved && budget > 0) {
      improved = false;
      for (const Gap& gap : gaps_of(timed->first, timed->second)) {
        const schedule::Program& program = best_.compute.programs[gap.rank];
        const int n = static_cast<int>(program.size());
        for (int j = gap.index + 1; j < std::min(n, gap.index + 1 + kLookahead); ++j) {
          if (budget-- <= 0) break;
          schedule::Schedule trial = best_.compute;
          schedule::Program& q = trial.programs[gap.rank];
          std::rotate(q.begin() + gap.index, q.begin() + j, q.begin() + j + 1);
          auto result = time(trial);
          if (!result) continue;
          const double makespan = result->second.makespan;
          const int peak = result->second.max_peak_activations();
          if (!fits(peak) || makespan >= best_.makespan - 1e-9) continue;
          best_.compute = std::move(trial);
          best_.makespan = makespan;
          best_.peak = peak;
          timed = std::move(result);
          improved = true;
          ++taken;
          break;
        }
        if (improved || budget <= 0) break;
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
