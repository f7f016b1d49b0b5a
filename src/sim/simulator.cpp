#include "dualpipe/sim/simulator.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>

#include "dualpipe/schedule/item.h"

namespace dualpipe::sim {
namespace {

using schedule::Op;
using schedule::OpKind;
using schedule::Schedule;

enum ItemType { kActivation = 0, kGrad = 1 };

// Dense indexing of (direction, stage, microbatch) and of transferred items, so the
// simulation is a few flat arrays and no maps.
class Index {
 public:
  Index(int directions, int stages, int microbatches)
      : directions_(directions), stages_(stages), microbatches_(microbatches) {}
  std::size_t unit(int d, int s, int m) const {
    return (static_cast<std::size_t>(d) * stages_ + s) * microbatches_ + m;
  }
  std::size_t item(ItemType type, int d, int s, int m) const {
    return static_cast<std::size_t>(type) * num_units() + unit(d, s, m);
  }
  std::size_t num_units() const {
    return static_cast<std::size_t>(directions_) * stages_ * microbatches_;
  }
  bool contains(int d, int s, int m) const {
    return d >= 0 && d < directions_ && s >= 0 && s < stages_ && m >= 0 && m < microbatches_;
  }

 private:
  int directions_, stages_, microbatches_;
};

std::string where(int rank, std::size_t index, const Op& op) {
  std::ostringstream out;
  out << "rank " << rank << ", op " << index << " " << schedule::describe(op);
  return out.str();
}

// One input a compute op needs: the item, or -1 when it is produced on the same rank.
struct Input {
  bool needed = false;
  bool remote = false;
  std::size_t key = 0;
  int producer_rank = -1;
  const char* what = "";
  int d = 0, s = 0, m = 0;
};

class Simulation {
 public:
  Simulation(const Schedule& schedule, const CostModel& costs)
      : schedule_(schedule),
        costs_(costs),
        num_ranks_(schedule.num_ranks()),
        num_stages_(schedule.num_stages()),
        index_(schedule.num_directions(), schedule.num_stages(),
               schedule.microbatches_per_direction()) {
    stage_rank_.resize(static_cast<std::size_t>(schedule.num_directions()) * num_stages_);
    for (int d = 0; d < schedule.num_directions(); ++d) {
      for (int s = 0; s < num_stages_; ++s) {
        stage_rank_[d * num_stages_ + s] = schedule.placement.rank_of(d, s);
      }
    }
    sent_at_.assign(2 * index_.num_units(), -1.0);
    waiter_.assign(2 * index_.num_units(), -1);
    forward_done_.assign(index_.num_units(), 0);
    backward_done_.assign(index_.num_units(), 0);
    pc_.assign(num_ranks_, 0);
    now_.assign(num_ranks_, 0.0);
    live_.assign(num_ranks_, 0);
    blocked_on_.assign(num_ranks_, Input{});
  }

  SimResult run() {
    SimResult result;
    result.ranks.resize(num_ranks_);
    for (int r = 0; r < num_ranks_; ++r) {
      const schedule::Program& program = schedule_.programs[r];
      result.ranks[r].timeline.reserve(std::count_if(program.begin(), program.end(),
                                                     [](const Op& op) { return op.is_compute(); }));
      result.ranks[r].parameter_copies = schedule_.placement.num_slots(r);
    }
    // NOTE: a rank runs until it needs an item not yet sent, then parks on that item; the send
    // wakes it. Each op is stepped once and each park is undone by one send, so the loop is
    // linear in ops. Timing does not depend on the order ranks are stepped in.
    std::vector<int> runnable;
    for (int r = num_ranks_ - 1; r >= 0; --r) runnable.push_back(r);
    while (!runnable.empty()) {
      int r = runnable.back();
      runnable.pop_back();
      step_rank(r, result.ranks[r], runnable);
    }
    report_deadlock();
    for (const RankResult& rank : result.ranks) {
      if (!rank.timeline.empty())
        result.makespan = std::max(result.makespan, rank.timeline.back().end);
    }
    for (RankResult& rank : result.ranks) rank.bubble = result.makespan - rank.busy;
    return result;
  }

 private:
  int rank_of(int d, int s) const { return stage_rank_[d * num_stages_ + s]; }

  void check_unit(int r, std::size_t i, const Op& op, int d, int s, int m) const {
    if (!index_.contains(d, s, m)) {
      throw std::invalid_argument(where(r, i, op) +
                                  ": direction, stage or micro-batch out of range");
    }
  }

  // The input of forward (d, s, m) or of backward (d, s, m) (is_backward).
  Input input_of(int r, bool is_backward, int d, int s, int m) const {
    Input input;
    const std::optional<schedule::Item> item = is_backward
                                                   ? schedule::backward_input(d, s, m, num_stages_)
                                                   : schedule::forward_input(d, s, m);
    if (!item) return input;
    const int producer_stage = item->stage;
    input.needed = true;
    input.d = d;
    input.s = producer_stage;
    input.m = m;
    input.producer_rank = rank_of(d, producer_stage);
    input.remote = input.producer_rank != r;
    input.what = is_backward ? "gradient" : "activation";
    input.key = index_.item(is_backward ? kGrad : kActivation, d, producer_stage, m);
    return input;
  }

  // Returns false (and parks the rank) when the input is remote and not sent yet.
  bool ready_time(int r, std::size_t i, const Op& op, const Input& input, double& ready) {
    if (!input.needed) return true;
    if (!input.remote) {
      const std::vector<char>& done = input.what[0] == 'g' ? backward_done_ : forward_done_;
      if (!done[index_.unit(input.d, input.s, input.m)]) {
        std::ostringstream message;
        message << where(r, i, op) << ": its " << input.what << " input from (d=" << input.d
                << ",s=" << input.s << ",m=" << input.m
                << ") is produced on the same rank but not earlier in the program";
        throw std::invalid_argument(message.str());
      }
      return true;
    }
    double sent = sent_at_[input.key];
    if (sent < 0) {
      waiter_[input.key] = r;
      blocked_on_[r] = input;
      return false;
    }
    ready = std::max(ready, sent + costs_.comm);
    return true;
  }

  void step_rank(int r, RankResult& out, std::vector<int>& runnable) {
    const schedule::Program& program = schedule_.programs[r];
    std::size_t& pc = pc_[r];
    while (pc < program.size()) {
      const Op& op = program[pc];
      switch (op.kind) {
        case OpKind::kSendActivation:
        case OpKind::kSendGrad: {
          check_unit(r, pc, op, op.direction, op.stage, op.microbatch);
          std::size_t key = index_.item(op.kind == OpKind::kSendGrad ? kGrad : kActivation,
                                        op.direction, op.stage, op.microbatch);
          if (sent_at_[key] < 0) sent_at_[key] = now_[r];
          if (waiter_[key] >= 0) {
            runnable.push_back(waiter_[key]);
            waiter_[key] = -1;
          }
          break;
        }
        case OpKind::kRecvActivation:
        case OpKind::kRecvGrad: break;
        case OpKind::kForward:
        case OpKind::kBackward:
        case OpKind::kWeight:
        case OpKind::kForwardBackward: {
          check_unit(r, pc, op, op.direction, op.stage, op.microbatch);
          if (rank_of(op.direction, op.stage) != r) {
            throw std::invalid_argument(where(r, pc, op) + ": its stage lives on rank " +
                                        std::to_string(rank_of(op.direction, op.stage)));
          }
          double ready = now_[r];
          if (op.kind == OpKind::kForward || op.kind == OpKind::kForwardBackward) {
            Input input = input_of(r, false, op.direction, op.stage, op.microbatch);
            if (!ready_time(r, pc, op, input, ready)) return;
          }
          int bd = op.direction, bs = op.stage, bm = op.microbatch;
          if (op.kind == OpKind::kForwardBackward) {
            bd = op.backward_direction;
            bs = op.backward_stage;
            bm = op.backward_microbatch;
            check_unit(r, pc, op, bd, bs, bm);
            if (rank_of(bd, bs) != r) {
              throw std::invalid_argument(where(r, pc, op) + ": its backward stage lives on rank " +
                                          std::to_string(rank_of(bd, bs)));
            }
          }
          if (op.kind == OpKind::kBackward || op.kind == OpKind::kForwardBackward) {
            Input input = input_of(r, true, bd, bs, bm);
            if (!ready_time(r, pc, op, input, ready)) return;
          }
          double duration = op_cost(op, costs_);
          out.timeline.push_back(TimedOp{static_cast<int>(pc), ready, ready + duration});
          out.busy += duration;
          now_[r] = ready + duration;
          if (op.kind == OpKind::kForward || op.kind == OpKind::kForwardBackward) {
            forward_done_[index_.unit(op.direction, op.stage, op.microbatch)] = 1;
          }
          if (op.kind == OpKind::kBackward || op.kind == OpKind::kForwardBackward) {
            backward_done_[index_.unit(bd, bs, bm)] = 1;
          }
          // NOTE: counted between ops, so an FB (one forward in, one backward out) leaves the
          // count as it was.
          if (op.kind == OpKind::kForward) {
            out.peak_activations = std::max(out.peak_activations, ++live_[r]);
          } else if (op.kind == OpKind::kBackward) {
            --live_[r];
          }
          break;
        }
      }
      ++pc;
    }
  }

  void report_deadlock() const {
    std::ostringstream message;
    int blocked = 0;
    for (int r = 0; r < num_ranks_; ++r) {
      const schedule::Program& program = schedule_.programs[r];
      if (pc_[r] >= program.size()) continue;
      if (blocked < 4) {
        const Input& input = blocked_on_[r];
        message << (blocked ? "; " : "") << where(r, pc_[r], program[pc_[r]]) << " waits for the "
                << input.what << " of (d=" << input.d << ",s=" << input.s << ",m=" << input.m
                << ") from rank " << input.producer_rank << ", never sent";
      }
      ++blocked;
    }
    if (blocked > 0) {
      throw std::runtime_error("schedule '" + schedule_.name + "' deadlocks: " +
                               std::to_string(blocked) + " rank(s) blocked: " + message.str());
    }
  }

  const Schedule& schedule_;
  const CostModel& costs_;
  int num_ranks_;
  int num_stages_;
  Index index_;
  std::vector<int> stage_rank_;
  std::vector<double> sent_at_;  // per item: time its send was posted, -1 before
  std::vector<int> waiter_;      // per item: rank parked on it, -1 for none
  std::vector<char> forward_done_;
  std::vector<char> backward_done_;
  std::vector<std::size_t> pc_;
  std::vector<double> now_;  // per rank: when its last compute op ends
  std::vector<int> live_;    // per rank: activations held now
  std::vector<Input> blocked_on_;
};

}  // namespace

double SimResult::max_bubble() const {
  double worst = 0.0;
  for (const RankResult& rank : ranks) worst = std::max(worst, rank.bubble);
  return worst;
}

int SimResult::max_peak_activations() const {
  int worst = 0;
  for (const RankResult& rank : ranks) worst = std::max(worst, rank.peak_activations);
  return worst;
}

int SimResult::max_parameter_copies() const {
  int worst = 0;
  for (const RankResult& rank : ranks) worst = std::max(worst, rank.parameter_copies);
  return worst;
}

SimResult simulate(const Schedule& schedule, const CostModel& costs) {
  costs.check();
  if (!costs.stage_scale.empty() &&
      costs.stage_scale.size() != static_cast<std::size_t>(schedule.num_stages())) {
    throw std::invalid_argument("cost model has " + std::to_string(costs.stage_scale.size()) +
                                " stage multipliers, schedule '" + schedule.name + "' has " +
                                std::to_string(schedule.num_stages()) + " stages");
  }
  if (schedule.programs.size() != static_cast<std::size_t>(schedule.num_ranks())) {
    throw std::invalid_argument("schedule '" + schedule.name + "' has " +
                                std::to_string(schedule.programs.size()) + " programs for " +
                                std::to_string(schedule.num_ranks()) + " ranks");
  }
  return Simulation(schedule, costs).run();
}

}  // namespace dualpipe::sim
