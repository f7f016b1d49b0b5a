#pragma once
// Deferred weight-gradient work for zero-bubble schedules (the `W` op).
//
// A `B` op with defer_weight_grad computes only input gradients; layers that support the split
// (dualpipe::runtime::Linear) push the weight-gradient computation into the store instead. The
// work of one such backward forms one group; each `W` op runs the oldest group (FIFO, as the
// schedule IR requires W ops on a rank to consume that rank's deferred backwards in order).
//
// NOTE: the store is owned by an executor (the reference keeps this queue in class statics, so
// two pipelines in one process would share it). Layers reach it through DeferWeightGradGuard, a
// scoped, per-thread pointer: the autograd engine runs CPU backward passes on the calling thread,
// so the pointer is visible exactly inside the executor's backward call and nowhere else.

#include <deque>
#include <functional>
#include <vector>

namespace dualpipe::runtime {

class WeightGradStore {
 public:
  using Closure = std::function<void()>;

  // Opens a new group; closures pushed until end_group() belong to it.
  void begin_group();
  // Appends a closure to the open group. Precondition: a group is open.
  void push(Closure closure);
  // Closes the open group and queues it (empty groups too: a module without deferrable layers
  // still gets its W op, which then does nothing).
  void end_group();
  // Runs the oldest queued group and removes it. Throws std::logic_error when none is queued.
  void pop_and_run();

  std::size_t num_queued() const { return queue_.size(); }
  bool group_open() const { return open_; }
  // Drops everything (after an error).
  void clear();

 private:
  std::deque<std::vector<Closure>> queue_;
  std::vector<Closure> current_;
  bool open_ = false;
};

// While alive, layers that support deferral on this thread push their weight-gradient work to
// `store` (nullptr: compute it immediately). Restores the previous setting on destruction.
class DeferWeightGradGuard {
 public:
  explicit DeferWeightGradGuard(WeightGradStore* store);
  ~DeferWeightGradGuard();
  DeferWeightGradGuard(const DeferWeightGradGuard&) = delete;
  DeferWeightGradGuard& operator=(const DeferWeightGradGuard&) = delete;

  // The store deferral goes to on this thread, or nullptr.
  static WeightGradStore* current();

 private:
  WeightGradStore* previous_;
};

}  // namespace dualpipe::runtime
