#include "dualpipe/sim/list_scheduler.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <string>
#include <vector>

#include "dualpipe/check.h"
#include "dualpipe/schedule/communication.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/schedule/validator.h"
#include "dualpipe/sim/simulator.h"

namespace dualpipe::sim {
namespace {

constexpr double kUnknown = std::numeric_limits<double>::infinity();

struct Policy {
  int cap = 1;
  // Rank r holds at most min(cap, num_ranks - r) in flight (1F1B's warm-up depth) instead of cap.
  bool staggered = false;
  bool forward_first = false;
  bool defer_weight_grad = true;
  // When a pending W runs while no forward or backward is ready:
  //   kLookahead  only where it delays nothing known to arrive within W;
  //   kEager      at once (a W in every gap, as ZB1P's first ranks do);
  //   kLast       only once the rank's backwards are done, except on rank 0, eagerly.
  enum class Weights { kLookahead, kEager, kLast } weights = Weights::kLookahead;

  int cap_of(int rank, int num_ranks) const {
    return staggered ? std::min(cap, num_ranks - rank) : cap;
  }

  std::string describe() const {
    return "cap=" + std::to_string(cap) + (staggered ? " staggered" : "") +
           (forward_first ? ", forward first" : ", backward first") +
           (!defer_weight_grad               ? ", full backwards"
            : weights == Weights::kLookahead ? ", W deferred with lookahead"
            : weights == Weights::kEager     ? ", W deferred into every gap"
                                             : ", W deferred to the end");
  }
};

// One greedy walk of the pipeline under `policy`: stage r on rank r, micro-batches in order.
class GreedyWalk {
 public:
  GreedyWalk(const SearchOptions& options, const Policy& policy)
      : options_(options),
        policy_(policy),
        num_ranks_(options.num_ranks),
        num_microbatches_(options.num_microbatches),
        comm_(options.num_ranks > 1 ? options.costs.comm : 0.0),
        forward_end_(num_ranks_, std::vector<double>(num_microbatches_, kUnknown)),
        backward_end_(num_ranks_, std::vector<double>(num_microbatches_, kUnknown)),
        ranks_(num_ranks_) {}

  // The compute programs, one per rank.
  std::vector<schedule::Program> run() {
    for (;;) {
      int best_rank = -1;
      Step best;
      for (int r = 0; r < num_ranks_; ++r) {
        const Step step = decide(r);
        if (step.kind != StepKind::kNone && step.key < best.key) {
          best = step;
          best_rank = r;
        }
      }
      if (best_rank < 0) break;
      execute(best_rank, best);
    }
    std::vector<schedule::Program> programs;
    for (RankState& rank : ranks_) {
      DUALPIPE_ASSERT(rank.next_backward == num_microbatches_ && rank.weights.empty(),
                      "the greedy walk stopped before the end");
      programs.push_back(std::move(rank.program));
    }
    return programs;
  }

 private:
  enum class StepKind { kNone, kForward, kBackward, kWeight };
  struct Step {
    StepKind kind = StepKind::kNone;
    double start = kUnknown;
    // When the walk may commit the step: its start, or for a W while this rank's next input
    // is not yet known, its end (every step of another rank that starts earlier goes first and
    // may reveal an input arriving during the W).
    double key = kUnknown;
  };
  struct RankState {
    double free_at = 0.0;
    int next_forward = 0;
    int next_backward = 0;
    int in_flight = 0;
    std::deque<int> weights;  // micro-batches whose W is pending, oldest first
    schedule::Program program;
  };

  double forward_ready(int r) const {
    const RankState& rank = ranks_[r];
    if (rank.next_forward >= num_microbatches_ || rank.in_flight >= policy_.cap_of(r, num_ranks_))
      return kUnknown;
    if (r == 0) return 0.0;
    return forward_end_[r - 1][rank.next_forward] + comm_;
  }

  double backward_ready(int r) const {
    const RankState& rank = ranks_[r];
    if (rank.next_backward >= rank.next_forward) return kUnknown;
    if (r == num_ranks_ - 1) return forward_end_[r][rank.next_backward];
    return backward_end_[r + 1][rank.next_backward] + comm_;
  }

  Step decide(int r) const {
    const RankState& rank = ranks_[r];
    const double t = rank.free_at;
    const double f = forward_ready(r);
    const double b = backward_ready(r);
    const double earliest = std::min(f, b);
    auto pick = [&](double at) {
      const bool f_ok = f <= at, b_ok = b <= at;
      if (f_ok && (!b_ok || policy_.forward_first)) return Step{StepKind::kForward, at, at};
      return Step{StepKind::kBackward, at, at};
    };
    if (earliest <= t) return pick(t);
    using Weights = Policy::Weights;
    const bool hold_weights =
        policy_.weights == Weights::kLast && r > 0 && rank.next_backward < num_microbatches_;
    if (!rank.weights.empty() && !hold_weights) {
      const double w = op_cost(schedule::Op::weight(0, r, rank.weights.front()), options_.costs);
      if (policy_.weights != Weights::kLookahead) return Step{StepKind::kWeight, t, t};
      // NOTE: lookahead: a W only where it delays nothing that is known to arrive.
      if (earliest == kUnknown) return Step{StepKind::kWeight, t, t + w};
      if (earliest - t >= w) return Step{StepKind::kWeight, t, t};
    }
    if (earliest < kUnknown) return pick(earliest);
    return {};
  }

  void execute(int r, const Step& step) {
    RankState& rank = ranks_[r];
    schedule::Op op;
    if (step.kind == StepKind::kForward) {
      op = schedule::Op::forward(0, r, rank.next_forward);
    } else if (step.kind == StepKind::kBackward) {
      op = schedule::Op::backward(0, r, rank.next_backward, policy_.defer_weight_grad);
    } else {
      op = schedule::Op::weight(0, r, rank.weights.front());
    }
    const double end = step.start + op_cost(op, options_.costs);
    if (step.kind == StepKind::kForward) {
      forward_end_[r][rank.next_forward++] = end;
      ++rank.in_flight;
    } else if (step.kind == StepKind::kBackward) {
      if (policy_.defer_weight_grad) rank.weights.push_back(rank.next_backward);
      backward_end_[r][rank.next_backward++] = end;
      --rank.in_flight;
    } else {
      rank.weights.pop_front();
    }
    rank.free_at = end;
    rank.program.push_back(op);
  }

  const SearchOptions& options_;
  const Policy policy_;
  const int num_ranks_;
  const int num_microbatches_;
  const double comm_;
  std::vector<std::vector<double>> forward_end_;   // [stage][microbatch]
  std::vector<std::vector<double>> backward_end_;  // [stage][microbatch]
  std::vector<RankState> ranks_;
};

std::vector<Policy> policies(const SearchOptions& options) {
  // NOTE: beyond 2 * num_ranks in flight a one-stage-per-rank pipeline gains nothing but
  // GPipe's all-forwards-first order, which cap = num_microbatches covers.
  const int most = options.max_activations > 0
                       ? std::min(options.max_activations, options.num_microbatches)
                       : options.num_microbatches;
  std::vector<int> caps;
  for (int cap = 1; cap <= std::min(most, 2 * options.num_ranks); ++cap) caps.push_back(cap);
  if (most > 2 * options.num_ranks) caps.push_back(most);
  std::vector<Policy> all;
  for (int cap : caps) {
    for (bool staggered : {false, true}) {
      if (staggered && cap < 2) continue;  // the same as cap=1
      for (bool forward_first : {false, true}) {
        for (Policy::Weights w :
             {Policy::Weights::kLookahead, Policy::Weights::kEager, Policy::Weights::kLast}) {
          all.push_back(Policy{cap, staggered, forward_first, true, w});
        }
        all.push_back(Policy{cap, staggered, forward_first, false});
      }
    }
  }
  return all;
}

}  // namespace

SearchResult search_schedule(const SearchOptions& options) {
  schedule::check_size_limits(options.num_ranks, options.num_microbatches);
  DUALPIPE_CHECK(options.num_microbatches >= 1, "search needs num_microbatches >= 1, got ",
                 options.num_microbatches);
  DUALPIPE_CHECK(options.max_activations >= 0,
                 "search needs max_activations >= 0 (0: no limit), got ", options.max_activations);
  options.costs.check();
  SearchResult best;
  best.makespan = kUnknown;
  for (const Policy& policy : policies(options)) {
    schedule::Schedule s;
    s.name = kSearchedScheduleName;
    s.num_microbatches = options.num_microbatches;
    s.placement = schedule::Placement::round_robin(options.num_ranks, options.num_ranks);
    s.programs = GreedyWalk(options, policy).run();
    schedule::insert_communication(s);
    const double makespan = simulate(s, options.costs).makespan;
    ++best.policies_tried;
    if (makespan < best.makespan) {
      best.makespan = makespan;
      best.schedule = std::move(s);
      best.policy = policy.describe();
    }
  }
  schedule::validate(best.schedule);
  return best;
}

}  // namespace dualpipe::sim
