#include "dualpipe/sim/exact_search.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "dualpipe/check.h"
#include "dualpipe/schedule/communication.h"
#include "dualpipe/schedule/placement.h"
#include "dualpipe/schedule/validator.h"
#include "dualpipe/sim/simulator.h"

namespace dualpipe::sim {
namespace {

constexpr double kUnknown = std::numeric_limits<double>::infinity();
constexpr double kEps = 1e-9;

enum class Kind { kForward, kInputGrad, kWeight };

struct Choice {
  int rank = -1;
  Kind kind = Kind::kForward;
  double start = 0.0;
  double end = 0.0;
};

class BranchAndBound {
 public:
  explicit BranchAndBound(const ExactSearchOptions& o)
      : o_(o),
        ranks_(o.num_ranks),
        microbatches_(o.num_microbatches),
        cap_(o.max_activations > 0 ? o.max_activations : o.num_microbatches),
        comm_(o.num_ranks > 1 ? o.costs.comm : 0.0),
        fe_(ranks_, std::vector<double>(microbatches_, kUnknown)),
        be_(fe_),
        nf_(ranks_, 0),
        nb_(ranks_, 0),
        nw_(ranks_, 0),
        free_(ranks_, 0.0),
        remaining_(ranks_, 0.0),
        programs_(ranks_),
        best_(o.faster_than > 0 ? o.faster_than : kUnknown) {
    for (int r = 0; r < ranks_; ++r) {
      forward_.push_back(op_cost(schedule::Op::forward(0, r, 0), o.costs));
      input_grad_.push_back(op_cost(schedule::Op::backward(0, r, 0, true), o.costs));
      weight_.push_back(op_cost(schedule::Op::weight(0, r, 0), o.costs));
      remaining_[r] = microbatches_ * (forward_[r] + input_grad_[r] + weight_[r]);
    }
  }

  ExactSearchResult run() {
    search();
    ExactSearchResult result;
    result.nodes = nodes_;
    result.complete = nodes_ < o_.most_nodes;
    if (!best_programs_.empty()) {
      schedule::Schedule s;
      s.name = "search";
      s.num_microbatches = microbatches_;
      s.placement = schedule::Placement::round_robin(ranks_, ranks_);
      s.programs = best_programs_;
      schedule::insert_communication(s);
      schedule::validate(s);
      result.makespan = simulate(s, o_.costs).makespan;
      result.schedule = std::move(s);
    }
    return result;
  }

 private:
  // The rank's next op of `kind` if its input is known: its start and end.
  bool eligible(int r, Kind kind, Choice& c) const {
    double ready = 0.0, duration = 0.0;
    if (kind == Kind::kForward) {
      const int m = nf_[r];
      if (m >= microbatches_ || nf_[r] - nb_[r] >= cap_) return false;
      if (r > 0) {
        if (fe_[r - 1][m] == kUnknown) return false;
        ready = fe_[r - 1][m] + comm_;
      }
      duration = forward_[r];
    } else if (kind == Kind::kInputGrad) {
      const int m = nb_[r];
      if (m >= nf_[r]) return false;
      if (r == ranks_ - 1) {
        ready = fe_[r][m];
      } else {
        if (be_[r + 1][m] == kUnknown) return false;
        ready = be_[r + 1][m] + comm_;
      }
      duration = input_grad_[r];
    } else {
      if (nw_[r] >= nb_[r]) return false;
      duration = weight_[r];
    }
    c.rank = r;
    c.kind = kind;
    c.start = std::max(free_[r], ready);
    c.end = c.start + duration;
    return true;
  }

  // No schedule below this node ends before this: each rank's remaining work after it is free,
  // and the dependency chains (ignoring other ops on the ranks) to every rank's last Bz and W.
  double lower_bound() {
    double bound = 0.0;
    for (int r = 0; r < ranks_; ++r) bound = std::max(bound, free_[r] + remaining_[r]);
    // Earliest ends of the forwards, then of the input-gradient backwards, in dependency order.
    for (int r = 0; r < ranks_; ++r) {
      double previous = free_[r];
      for (int m = 0; m < microbatches_; ++m) {
        double end = fe_[r][m];
        if (end == kUnknown) {
          const double ready = r > 0 ? chain_fe_[r - 1][m] + comm_ : 0.0;
          end = std::max(previous, ready) + forward_[r];
        }
        chain_fe_[r][m] = end;
        previous = std::max(previous, end);
      }
    }
    for (int r = ranks_ - 1; r >= 0; --r) {
      double previous = free_[r];
      for (int m = 0; m < microbatches_; ++m) {
        double end = be_[r][m];
        if (end == kUnknown) {
          const double ready = r == ranks_ - 1 ? chain_fe_[r][m] : chain_be_[r + 1][m] + comm_;
          end = std::max({previous, ready, chain_fe_[r][m]}) + input_grad_[r];
        }
        chain_be_[r][m] = end;
        previous = std::max(previous, end);
      }
      const double last_weight = nw_[r] < microbatches_ ? weight_[r] : 0.0;
      bound = std::max(bound, chain_be_[r][microbatches_ - 1] + last_weight);
    }
    return bound;
  }

  void apply(const Choice& c) {
    const int r = c.rank;
    if (c.kind == Kind::kForward) {
      fe_[r][nf_[r]] = c.end;
      programs_[r].push_back(schedule::Op::forward(0, r, nf_[r]++));
    } else if (c.kind == Kind::kInputGrad) {
      be_[r][nb_[r]] = c.end;
      programs_[r].push_back(schedule::Op::backward(0, r, nb_[r]++, true));
    } else {
      programs_[r].push_back(schedule::Op::weight(0, r, nw_[r]++));
    }
    saved_free_.push_back(free_[r]);
    free_[r] = c.end;
    remaining_[r] -= c.end - c.start;
  }

  void undo(const Choice& c) {
    const int r = c.rank;
    if (c.kind == Kind::kForward) {
      fe_[r][--nf_[r]] = kUnknown;
    } else if (c.kind == Kind::kInputGrad) {
      be_[r][--nb_[r]] = kUnknown;
    } else {
      --nw_[r];
    }
    programs_[r].pop_back();
    free_[r] = saved_free_.back();
    saved_free_.pop_back();
    remaining_[r] += c.end - c.start;
  }

  void search() {
    if (++nodes_ >= o_.most_nodes) return;
    // The op that can end first, over all ranks (Giffler-Thompson).
    Choice first;
    first.end = kUnknown;
    for (int r = 0; r < ranks_; ++r) {
      for (Kind kind : {Kind::kInputGrad, Kind::kForward, Kind::kWeight}) {
        Choice c;
        if (eligible(r, kind, c) && c.end < first.end) first = c;
      }
    }
    if (first.rank < 0) {  // every op placed
      double makespan = 0.0;
      for (double f : free_) makespan = std::max(makespan, f);
      if (makespan < best_ - kEps) {
        best_ = makespan;
        best_programs_ = programs_;
      }
      return;
    }
    if (lower_bound() >= best_ - kEps) return;
    // Each op of that rank that could start before that end, the first one first.
    std::vector<Choice> conflict{first};
    for (Kind kind : {Kind::kInputGrad, Kind::kForward, Kind::kWeight}) {
      Choice c;
      if (kind != first.kind && eligible(first.rank, kind, c) && c.start < first.end - kEps) {
        conflict.push_back(c);
      }
    }
    for (const Choice& c : conflict) {
      apply(c);
      search();
      undo(c);
      if (nodes_ >= o_.most_nodes) return;
    }
  }

  const ExactSearchOptions& o_;
  const int ranks_;
  const int microbatches_;
  const int cap_;
  const double comm_;
  std::vector<double> forward_, input_grad_, weight_;  // op times per rank
  std::vector<std::vector<double>> fe_, be_;           // [rank][microbatch] ends, kUnknown
  std::vector<std::vector<double>> chain_fe_{fe_}, chain_be_{fe_};  // lower_bound()'s scratch
  std::vector<int> nf_, nb_, nw_;
  std::vector<double> free_;
  std::vector<double> remaining_;
  std::vector<double> saved_free_;
  std::vector<schedule::Program> programs_;
  double best_;
  std::vector<schedule::Program> best_programs_;
  long long nodes_ = 0;
};

}  // namespace

ExactSearchResult exact_search(const ExactSearchOptions& options) {
  DUALPIPE_CHECK(
      options.num_ranks >= 1 && options.num_microbatches >= 1 &&
          options.num_ranks * options.num_microbatches <= kExactSearchMostRankMicrobatches,
      "exact search takes 1 <= num_ranks * num_microbatches <= ", kExactSearchMostRankMicrobatches,
      ", got num_ranks=", options.num_ranks, ", num_microbatches=", options.num_microbatches);
  DUALPIPE_CHECK(options.max_activations >= 0,
                 "exact search needs max_activations >= 0 (0: no limit), got ",
                 options.max_activations);
  DUALPIPE_CHECK(options.most_nodes >= 1, "exact search needs most_nodes >= 1, got ",
                 options.most_nodes);
  options.costs.check();
  return BranchAndBound(options).run();
}

}  // namespace dualpipe::sim
