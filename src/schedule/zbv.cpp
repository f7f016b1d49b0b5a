#include "dualpipe/schedule/zbv.h"

#include <algorithm>
#include <deque>

#include "builder_support.h"
#include "dualpipe/check.h"
#include "dualpipe/schedule/communication.h"

namespace dualpipe::schedule {
namespace {

// PyTorch's order counts F, B (input gradients) and W per chunk: chunk 0 is the way down
// (stage r), chunk 1 the way back (stage 2R-1-r). With fewer than 2R-1 micro-batches it runs the
// order of 2R-1 and drops the ops of the missing ones, W's included (a W slot is kept when its
// chunk's W count names a real micro-batch).
class ZbvProgram {
 public:
  ZbvProgram(Program& program, int num_ranks, int num_microbatches, int rank)
      : program_(program), num_microbatches_(num_microbatches) {
    stage_[0] = rank;
    stage_[1] = 2 * num_ranks - 1 - rank;
  }

  void forward(int chunk) {
    const int m = forwards_[chunk]++;
    if (m < num_microbatches_) program_.push_back(Op::forward(0, stage_[chunk], m));
  }
  void backward(int chunk) {
    const int m = backwards_[chunk]++;
    if (m >= num_microbatches_) return;
    program_.push_back(Op::backward(0, stage_[chunk], m, /*defer_weight_grad=*/true));
    deferred_.push_back(Op::weight(0, stage_[chunk], m));
  }
  // NOTE: the slot is PyTorch's W of `chunk`; the W run in it is the oldest pending Bz's (our
  // executor's queue is FIFO), the same work when W costs the same in both chunks.
  void weight(int chunk) {
    if (weights_[chunk]++ >= num_microbatches_) return;
    DUALPIPE_ASSERT(!deferred_.empty(), "ZB-V: a W slot before its backward");
    program_.push_back(deferred_.front());
    deferred_.pop_front();
  }
  int forwards(int chunk) const { return forwards_[chunk]; }
  int backwards(int chunk) const { return backwards_[chunk]; }
  int weights(int chunk) const { return weights_[chunk]; }

 private:
  Program& program_;
  int num_microbatches_;
  int stage_[2];
  int forwards_[2] = {0, 0};
  int backwards_[2] = {0, 0};
  int weights_[2] = {0, 0};
  std::deque<Op> deferred_;
};

Program rank_program(int num_ranks, int num_microbatches, int rank) {
  const int padded = std::max(2 * num_ranks - 1, num_microbatches);
  Program program;
  ZbvProgram p(program, num_ranks, num_microbatches, rank);

  // Warm-up: forwards of the way down, then alternate with the way back, then start the
  // backwards where the V turns.
  for (int i = 0; i < 2 * (num_ranks - rank) - 1; ++i) p.forward(0);
  for (int i = 0; i < rank; ++i) {
    p.forward(1);
    p.forward(0);
  }
  for (int i = 0; i < num_ranks - rank; ++i) {
    p.forward(1);
    p.backward(1);
    p.weight(1);
  }
  // Steady state: F0 B0 W0 F1 B1 W1.
  while (p.forwards(1) < p.forwards(0) || p.forwards(0) < padded) {
    if (p.forwards(0) < padded) p.forward(0);
    p.backward(0);
    p.weight(0);
    p.forward(1);
    p.backward(1);
    p.weight(1);
  }
  // Cool-down: the remaining backwards, W's of the way down filling the gaps, then the
  // remaining W's (the way back's first).
  for (int i = 0; i < rank; ++i) {
    p.backward(0);
    p.backward(1);
  }
  for (int i = 0; i < num_ranks - rank; ++i) {
    p.backward(0);
    p.weight(0);
  }
  while (p.weights(1) < p.backwards(1)) p.weight(1);
  while (p.weights(0) < p.backwards(0)) p.weight(0);
  return program;
}

}  // namespace

Schedule build_zbv(int num_ranks, int num_microbatches) {
  detail::check_sizes_at_least_one("ZB-V", num_ranks, num_microbatches);
  Schedule schedule{"zbv", num_microbatches, Placement::v_shape(num_ranks), {}};
  for (int rank = 0; rank < num_ranks; ++rank) {
    schedule.programs.push_back(rank_program(num_ranks, num_microbatches, rank));
  }
  insert_communication(schedule);
  return schedule;
}

}  // namespace dualpipe::schedule
