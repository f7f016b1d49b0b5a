#include "dualpipe/schedule/list_schedule.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <string>
#include <vector>

#include "dualpipe/check.h"
#include "dualpipe/schedule/communication.h"

namespace dualpipe::schedule {
namespace {

constexpr double kUnknown = std::numeric_limits<double>::infinity();

// One stage instance a rank holds, and how far its micro-batches have come.
struct Instance {
  int direction = 0;
  int stage = 0;
  bool first_visit = true;  // no earlier stage of its direction is on this rank
  int next_forward = 0;
  int next_backward = 0;
};

// One greedy walk (see the header).
class Walk {
 public:
  Walk(const Placement& placement, int num_microbatches, const ListPolicy& policy,
       const ListCosts& costs)
      : placement_(placement),
        policy_(policy),
        costs_(costs),
        per_direction_(num_microbatches / placement.num_directions()),
        forward_end_(placement.num_directions() * placement.num_stages(),
                     std::vector<double>(per_direction_, kUnknown)),
        backward_end_(forward_end_),
        ranks_(placement.num_ranks()) {
    for (int r = 0; r < placement.num_ranks(); ++r) {
      RankState& rank = ranks_[r];
      rank.in_flight.assign(placement.num_directions(), 0);
      for (const StageId& id : placement.stages_on(r)) {
        Instance instance;
        instance.direction = id.direction;
        instance.stage = id.stage;
        for (int s = 0; s < id.stage; ++s) {
          if (placement.rank_of(id.direction, s) == r) instance.first_visit = false;
        }
        rank.instances.push_back(instance);
      }
    }
  }

  ListSchedule run(const std::string& name, bool with_communication) {
    // NOTE: a rank's decision depends on its own state and on the end times of the stages next
    // to its own; after a step only the rank that acted and the ranks it feeds decide again.
    std::vector<Step> decided(placement_.num_ranks());
    std::vector<bool> stale(placement_.num_ranks(), true);
    for (;;) {
      int best_rank = -1;
      for (int r = 0; r < placement_.num_ranks(); ++r) {
        if (stale[r]) {
          decided[r] = decide(r);
          stale[r] = false;
        }
        if (decided[r].kind != Kind::kNone &&
            (best_rank < 0 || decided[r].key < decided[best_rank].key)) {
          best_rank = r;
        }
      }
      if (best_rank < 0) break;
      const Step step = decided[best_rank];
      execute(best_rank, step);
      stale[best_rank] = true;
      const RankState& rank = ranks_[best_rank];
      for (int i : {step.forward, step.backward}) {
        if (i < 0) continue;
        const Instance& in = rank.instances[i];
        for (int neighbour : {in.stage - 1, in.stage + 1}) {
          if (neighbour >= 0 && neighbour < placement_.num_stages()) {
            stale[placement_.rank_of(in.direction, neighbour)] = true;
          }
        }
      }
    }
    ListSchedule result;
    result.schedule.name = name;
    result.schedule.num_microbatches = per_direction_ * placement_.num_directions();
    result.schedule.placement = placement_;
    for (RankState& rank : ranks_) {
      for (const Instance& instance : rank.instances) {
        DUALPIPE_ASSERT(instance.next_backward == per_direction_ && rank.weights.empty(),
                        "the list schedule's walk stopped before the end under policy ",
                        policy_.describe());
      }
      result.makespan = std::max(result.makespan, rank.free_at);
      result.peak_activations = std::max(result.peak_activations, rank.peak);
      result.schedule.programs.push_back(std::move(rank.program));
    }
    if (with_communication) insert_communication(result.schedule);
    return result;
  }

 private:
  enum class Kind { kNone, kForward, kBackward, kPair, kWeight };
  struct Step {
    Kind kind = Kind::kNone;
    double start = kUnknown;
    // When the walk may commit the step: its start, or for a W while this rank's next input
    // is not yet known, its end (every step of another rank that starts earlier goes first and
    // may reveal an input arriving during the W).
    double key = kUnknown;
    int forward = -1;   // index into the rank's instances
    int backward = -1;  // index into the rank's instances
  };
  struct RankState {
    double free_at = 0.0;
    std::vector<Instance> instances;
    std::vector<int> in_flight;  // per direction: micro-batch stage instances F done, B not
    int peak = 0;
    std::deque<Op> weights;  // pending W ops, oldest first
    Program program;
  };

  int index(int direction, int stage) const { return direction * placement_.num_stages() + stage; }
  double latency(int rank, int direction, int stage) const {
    return placement_.rank_of(direction, stage) == rank ? 0.0 : costs_.comm;
  }
  double forward_ready(int r, const Instance& in) const {
    const RankState& rank = ranks_[r];
    const int m = in.next_forward;
    if (m >= per_direction_) return kUnknown;
    if (in.first_visit) {
      const int cap = policy_.staggered ? std::min(policy_.cap, placement_.num_stages() - in.stage)
                                        : policy_.cap;
      if (rank.in_flight[in.direction] >= cap) return kUnknown;
    }
    if (in.stage == 0) return 0.0;
    return forward_end_[index(in.direction, in.stage - 1)][m] +
           latency(r, in.direction, in.stage - 1);
  }

  double backward_ready(int r, const Instance& in) const {
    const int m = in.next_backward;
    if (m >= in.next_forward) return kUnknown;
    if (in.stage == placement_.num_stages() - 1) {
      return forward_end_[index(in.direction, in.stage)][m];
    }
    return backward_end_[index(in.direction, in.stage + 1)][m] +
           latency(r, in.direction, in.stage + 1);
  }

  // The best ready forward and backward at `at` (-1: none): backwards the earliest ready, then
  // the later stage; forwards later visits first (they finish micro-batches), then the earliest.
  Step pick(int r, double at) const {
    const RankState& rank = ranks_[r];
    int f = -1, b = -1;
    double f_ready = kUnknown, b_ready = kUnknown;
    for (int i = 0; i < static_cast<int>(rank.instances.size()); ++i) {
      const Instance& in = rank.instances[i];
      const double fr = forward_ready(r, in);
      if (fr <= at && (f < 0 || (rank.instances[f].first_visit && !in.first_visit) ||
                       (rank.instances[f].first_visit == in.first_visit && fr < f_ready))) {
        f = i;
        f_ready = fr;
      }
      const double br = backward_ready(r, in);
      if (br <= at && (b < 0 || br < b_ready)) {
        b = i;
        b_ready = br;
      }
    }
    Step step;
    step.start = step.key = at;
    if (f >= 0 && b >= 0 && f != b && policy_.pair_forward_backward) {
      step.kind = Kind::kPair;
      step.forward = f;
      step.backward = b;
    } else if (b >= 0 && (f < 0 || !policy_.forward_first)) {
      step.kind = Kind::kBackward;
      step.backward = b;
    } else {
      step.kind = Kind::kForward;
      step.forward = f;
    }
    return step;
  }

  Step decide(int r) const {
    const RankState& rank = ranks_[r];
    const double t = rank.free_at;
    double earliest = kUnknown;
    bool backwards_left = false;
    for (const Instance& in : rank.instances) {
      earliest = std::min({earliest, forward_ready(r, in), backward_ready(r, in)});
      backwards_left |= in.next_backward < per_direction_;
    }
    if (earliest <= t) return pick(r, t);
    using Weights = ListPolicy::Weights;
    const bool hold_weights = policy_.weights == Weights::kLast && r > 0 && backwards_left;
    if (!rank.weights.empty() && !hold_weights) {
      const double w = costs_.op_time(rank.weights.front());
      Step weight;
      weight.kind = Kind::kWeight;
      weight.start = weight.key = t;
      if (policy_.weights != Weights::kLookahead) return weight;
      // NOTE: lookahead: a W only where it delays nothing that is known to arrive.
      if (earliest == kUnknown) {
        weight.key = t + w;
        return weight;
      }
      if (earliest - t >= w) return weight;
    }
    if (earliest < kUnknown) return pick(r, earliest);
    return {};
  }

  // The ops of `in`'s next forward and backward, with the rank's counts and W queue updated.
  Op start_forward(RankState& rank, Instance& in) {
    if (in.first_visit) ++rank.in_flight[in.direction];
    return Op::forward(in.direction, in.stage, in.next_forward);
  }
  Op start_backward(RankState& rank, Instance& in) {
    const bool defer = policy_.defer_weight_grad;
    if (defer) rank.weights.push_back(Op::weight(in.direction, in.stage, in.next_backward));
    return Op::backward(in.direction, in.stage, in.next_backward, defer);
  }

  void execute(int r, const Step& step) {
    RankState& rank = ranks_[r];
    Op op;
    if (step.kind == Kind::kWeight) {
      op = rank.weights.front();
      rank.weights.pop_front();
    } else if (step.kind == Kind::kPair) {
      Instance& f = rank.instances[step.forward];
      Instance& b = rank.instances[step.backward];
      const Op fop = start_forward(rank, f);
      const Op bop = start_backward(rank, b);
      op = Op::forward_backward(fop.direction, fop.stage, fop.microbatch, bop.direction, bop.stage,
                                bop.microbatch);
      op.defer_weight_grad = bop.defer_weight_grad;
    } else if (step.kind == Kind::kForward) {
      op = start_forward(rank, rank.instances[step.forward]);
    } else {
      op = start_backward(rank, rank.instances[step.backward]);
    }
    const double end = step.start + costs_.op_time(op);
    if (step.forward >= 0) {
      Instance& in = rank.instances[step.forward];
      forward_end_[index(in.direction, in.stage)][in.next_forward++] = end;
    }
    if (step.backward >= 0) {
      Instance& in = rank.instances[step.backward];
      backward_end_[index(in.direction, in.stage)][in.next_backward++] = end;
      // NOTE: a micro-batch leaves a rank's count at the backward of its first visit there.
      if (in.first_visit) --rank.in_flight[in.direction];
    }
    rank.peak = std::max(rank.peak, occupancy(rank));
    rank.free_at = end;
    rank.program.push_back(op);
  }

  // Stage micro-batches on the rank with forward done and backward not (the simulator's count).
  static int occupancy(const RankState& rank) {
    int n = 0;
    for (const Instance& in : rank.instances) n += in.next_forward - in.next_backward;
    return n;
  }

  const Placement& placement_;
  const ListPolicy policy_;
  const ListCosts& costs_;
  const int per_direction_;
  std::vector<std::vector<double>> forward_end_;   // [direction * stages + stage][microbatch]
  std::vector<std::vector<double>> backward_end_;  // [direction * stages + stage][microbatch]
  std::vector<RankState> ranks_;
};

}  // namespace

std::string ListPolicy::describe() const {
  return "cap=" + std::to_string(cap) + (staggered ? " staggered" : "") +
         (forward_first ? ", forward first" : ", backward first") +
         (pair_forward_backward ? ", F&B paired" : "") +
         (!defer_weight_grad               ? ", full backwards"
          : weights == Weights::kLookahead ? ", W deferred with lookahead"
          : weights == Weights::kEager     ? ", W deferred into every gap"
                                           : ", W deferred to the end");
}

std::vector<ListPolicy> list_policies(const Placement& placement, int num_microbatches,
                                      int max_cap) {
  const int per_direction = num_microbatches / std::max(1, placement.num_directions());
  const int most = max_cap > 0 ? std::min(max_cap, per_direction) : per_direction;
  // NOTE: every cap up to 8, then the depths that matter for a pipeline of S stages (around S,
  // 1F1B's; 3S/2; 2S, beyond which one gains nothing but GPipe's all-forwards-first order,
  // which cap = all micro-batches covers): the walks cost time linear in the ops, and a plan of
  // 16 ranks x 64 micro-batches tries every placement.
  const int stages = placement.num_stages();
  std::vector<int> caps;
  for (int cap = 1; cap <= 8; ++cap) caps.push_back(cap);
  for (int cap :
       {stages / 2, stages - 1, stages, stages + 1, stages + 2, 3 * stages / 2, 2 * stages, most}) {
    caps.push_back(cap);
  }
  std::sort(caps.begin(), caps.end());
  caps.erase(std::unique(caps.begin(), caps.end()), caps.end());
  caps.erase(
      std::remove_if(caps.begin(), caps.end(), [&](int cap) { return cap < 1 || cap > most; }),
      caps.end());
  bool pairs = false;
  for (int r = 0; r < placement.num_ranks(); ++r) pairs |= placement.num_slots(r) > 1;
  std::vector<ListPolicy> all;
  for (int cap : caps) {
    for (bool staggered : {false, true}) {
      if (staggered && cap < 2) continue;  // the same as cap=1
      for (bool forward_first : {false, true}) {
        for (bool pair : {false, true}) {
          if (pair && !pairs) continue;
          for (ListPolicy::Weights w : {ListPolicy::Weights::kLookahead,
                                        ListPolicy::Weights::kEager, ListPolicy::Weights::kLast}) {
            all.push_back(ListPolicy{cap, staggered, forward_first, pair, true, w});
          }
          all.push_back(ListPolicy{cap, staggered, forward_first, pair, false});
        }
      }
    }
  }
  return all;
}

ListSchedule list_schedule(const std::string& name, const Placement& placement,
                           int num_microbatches, const ListPolicy& policy, const ListCosts& costs,
                           bool with_communication) {
  DUALPIPE_CHECK(placement.num_directions() >= 1 &&
                     num_microbatches >= placement.num_directions() &&
                     num_microbatches % placement.num_directions() == 0,
                 "list schedule \"", name, "\": num_microbatches=", num_microbatches,
                 " must be a positive multiple of the placement's ", placement.num_directions(),
                 " direction(s)");
  DUALPIPE_CHECK(policy.cap >= 1, "list schedule \"", name, "\": cap must be >= 1, got ",
                 policy.cap);
  DUALPIPE_CHECK(static_cast<bool>(costs.op_time), "list schedule \"", name,
                 "\": no op costs given");
  return Walk(placement, num_microbatches, policy, costs).run(name, with_communication);
}

ListSchedule fastest_list_schedule(const std::string& name, const Placement& placement,
                                   int num_microbatches, const ListCosts& costs,
                                   int max_activations) {
  ListSchedule best;
  best.makespan = kUnknown;
  int smallest_peak = std::numeric_limits<int>::max();
  for (const ListPolicy& policy : list_policies(placement, num_microbatches)) {
    ListSchedule found = list_schedule(name, placement, num_microbatches, policy, costs, false);
    smallest_peak = std::min(smallest_peak, found.peak_activations);
    if (found.peak_activations > max_activations) continue;
    if (found.makespan < best.makespan ||
        (found.makespan == best.makespan && found.peak_activations < best.peak_activations)) {
      best = std::move(found);
    }
  }
  DUALPIPE_CHECK(best.makespan < kUnknown, "list schedule \"", name, "\": no policy keeps within ",
                 max_activations, " activations per rank; the smallest peak found is ",
                 smallest_peak);
  insert_communication(best.schedule);
  return best;
}

ListCosts default_list_costs() {
  ListCosts costs;
  costs.op_time = [](const Op& op) {
    switch (op.kind) {
      case OpKind::kForward: return 1.0;
      case OpKind::kBackward: return op.defer_weight_grad ? 1.0 : 2.0;
      case OpKind::kWeight: return 1.0;
      case OpKind::kForwardBackward: return op.defer_weight_grad ? 2.0 : 3.0;
      default: return 0.0;
    }
  };
  return costs;
}

}  // namespace dualpipe::schedule

namespace dualpipe::schedule {
namespace {

void check_search_sizes(const char* name, int num_ranks, int num_microbatches, int multiple) {
  DUALPIPE_CHECK(num_ranks >= multiple && num_ranks % multiple == 0 &&
                     num_microbatches >= multiple && num_microbatches % multiple == 0,
                 name, " needs num_ranks and num_microbatches positive multiples of ", multiple,
                 ", got num_ranks=", num_ranks, ", num_microbatches=", num_microbatches);
}

}  // namespace

Schedule build_search(int num_ranks, int num_microbatches) {
  check_search_sizes("search", num_ranks, num_microbatches, 1);
  return fastest_list_schedule("search", Placement::round_robin(num_ranks, num_ranks),
                               num_microbatches, default_list_costs(), num_ranks)
      .schedule;
}

Schedule build_search_v(int num_ranks, int num_microbatches) {
  check_search_sizes("search-v", num_ranks, num_microbatches, 1);
  return fastest_list_schedule("search-v", Placement::v_shape(num_ranks), num_microbatches,
                               default_list_costs(), 2 * num_ranks)
      .schedule;
}

Schedule build_search_dual(int num_ranks, int num_microbatches) {
  check_search_sizes("search-dual", num_ranks, num_microbatches, 2);
  return fastest_list_schedule("search-dual", Placement::bidirectional(num_ranks), num_microbatches,
                               default_list_costs(), num_ranks + 1)
      .schedule;
}

}  // namespace dualpipe::schedule
