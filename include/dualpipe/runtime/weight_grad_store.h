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
// so the pointer is visible exactly inside the executor's backward call. CUDA backward passes
// run on the engine's device threads, where that pointer is not set: for them a layer records,
// at forward time, the WeightGradRoute of the thread running the forward (the executor's), and
// every DeferWeightGradGuard on that thread also points the route at its store. So the layer
// finds the right store on whichever thread its backward runs.

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
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

// Where the deferred weight gradients of the graphs one executor builds go, read from any
// thread: the store of the DeferWeightGradGuard active on the executor's thread, or nullptr
// (compute now). Shared by the executor and the graphs' layers (which may outlive a step).
class WeightGradRoute {
 public:
  WeightGradStore* store() const { return store_.load(); }
  // Sets the store; returns the previous one. Called by DeferWeightGradGuard.
  WeightGradStore* exchange(WeightGradStore* store) { return store_.exchange(store); }

 private:
  std::atomic<WeightGradStore*> store_{nullptr};
};

// While alive, this thread's route is `route`: layers running forward here record it, and
// DeferWeightGradGuards here also point it at their store. The executor holds one for the
// duration of a step. Restores the previous route on destruction.
class WeightGradRouteGuard {
 public:
  explicit WeightGradRouteGuard(std::shared_ptr<WeightGradRoute> route);
  ~WeightGradRouteGuard();
  WeightGradRouteGuard(const WeightGradRouteGuard&) = delete;
  WeightGradRouteGuard& operator=(const WeightGradRouteGuard&) = delete;

  // This thread's route, or nullptr outside any guard.
  static std::shared_ptr<WeightGradRoute> current();

 private:
  std::shared_ptr<WeightGradRoute> previous_;
};

// While alive, layers that support deferral push their weight-gradient work to `store`
// (nullptr: compute it immediately): on this thread, and, through this thread's route, on the
// threads running the backward of graphs built under that route. Restores the previous setting
// on destruction.
class DeferWeightGradGuard {
 public:
  explicit DeferWeightGradGuard(WeightGradStore* store);
  ~DeferWeightGradGuard();
  DeferWeightGradGuard(const DeferWeightGradGuard&) = delete;
  DeferWeightGradGuard& operator=(const DeferWeightGradGuard&) = delete;

  // The store deferral goes to on this thread, or nullptr.
  static WeightGradStore* current();
  // The store a layer's backward defers to: this thread's guard, else the route the layer
  // recorded at forward time (`recorded` may be null), else nullptr.
  static WeightGradStore* for_backward(const WeightGradRoute* recorded);

 private:
  WeightGradStore* previous_;
  std::shared_ptr<WeightGradRoute> route_;
  WeightGradStore* previous_route_store_ = nullptr;
};

}  // namespace dualpipe::runtime
