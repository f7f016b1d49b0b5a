#pragma once
// Private helper of the DualPipe and DualPipeV builders: the reference's `step()` speaks of
// LOCAL phases (0 and 1) of one rank, with a forward and a backward counter per phase and a
// FIFO of deferred weight gradients. This class keeps that vocabulary so the builders read like
// the reference's step list, and emits IR ops naming (direction, stage, microbatch).

#include <deque>

#include "dualpipe/schedule/op.h"

namespace dualpipe::schedule::detail {

class PhaseProgram {
 public:
  struct Phase {
    int direction = 0;
    int stage = 0;
  };

  PhaseProgram(Program& program, Phase phase0, Phase phase1)
      : program_(program), phases_{phase0, phase1} {}

  // Forward of the next micro-batch of `phase`.
  void forward(int phase) {
    const Phase& p = phases_[phase];
    program_.push_back(Op::forward(p.direction, p.stage, next_forward_[phase]++));
  }
  // Backward of the next micro-batch of `phase`; `zero_bubble` defers its weight gradient to a
  // later weight().
  void backward(int phase, bool zero_bubble = false) {
    const Phase& p = phases_[phase];
    const int microbatch = next_backward_[phase]++;
    program_.push_back(Op::backward(p.direction, p.stage, microbatch, zero_bubble));
    if (zero_bubble) deferred_.push_back(Op::weight(p.direction, p.stage, microbatch));
  }
  // The oldest deferred weight gradient (the reference's WeightGradStore queue).
  void weight() {
    program_.push_back(deferred_.front());
    deferred_.pop_front();
  }
  // Forward of the next micro-batch of `forward_phase` overlapped with the (full) backward of
  // the next micro-batch of `backward_phase`.
  void forward_backward(int forward_phase, int backward_phase) {
    const Phase& f = phases_[forward_phase];
    const Phase& b = phases_[backward_phase];
    program_.push_back(Op::forward_backward(f.direction, f.stage, next_forward_[forward_phase]++,
                                            b.direction, b.stage,
                                            next_backward_[backward_phase]++));
  }

  bool has_deferred_weights() const { return !deferred_.empty(); }

 private:
  Program& program_;
  Phase phases_[2];
  int next_forward_[2] = {0, 0};
  int next_backward_[2] = {0, 0};
  std::deque<Op> deferred_;
};

}  // namespace dualpipe::schedule::detail
