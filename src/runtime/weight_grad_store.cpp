#include "dualpipe/runtime/weight_grad_store.h"

#include <stdexcept>
#include <utility>

#include "dualpipe/check.h"

namespace dualpipe::runtime {
namespace {

// NOTE: per-thread, scoped by DeferWeightGradGuard (see the header): not shared state between
// pipelines or ranks; each executor thread sees only the store it set itself.
thread_local WeightGradStore* tls_store = nullptr;
thread_local std::shared_ptr<WeightGradRoute> tls_route;

}  // namespace

void WeightGradStore::begin_group() {
  DUALPIPE_ASSERT(!open_, "WeightGradStore::begin_group: a group is already open");
  open_ = true;
  current_.clear();
}

void WeightGradStore::push(Closure closure) {
  DUALPIPE_ASSERT(open_, "WeightGradStore::push outside begin_group/end_group");
  current_.push_back(std::move(closure));
}

void WeightGradStore::end_group() {
  DUALPIPE_ASSERT(open_, "WeightGradStore::end_group without begin_group");
  queue_.push_back(std::move(current_));
  current_.clear();
  open_ = false;
}

void WeightGradStore::pop_and_run() {
  if (queue_.empty()) {
    throw std::logic_error("WeightGradStore::pop_and_run: no deferred weight gradients queued");
  }
  std::vector<Closure> group = std::move(queue_.front());
  queue_.pop_front();
  for (Closure& closure : group) closure();
}

void WeightGradStore::clear() {
  queue_.clear();
  current_.clear();
  open_ = false;
}

WeightGradRouteGuard::WeightGradRouteGuard(std::shared_ptr<WeightGradRoute> route)
    : previous_(std::move(tls_route)) {
  tls_route = std::move(route);
}

WeightGradRouteGuard::~WeightGradRouteGuard() {
  tls_route = std::move(previous_);
}

std::shared_ptr<WeightGradRoute> WeightGradRouteGuard::current() {
  return tls_route;
}

DeferWeightGradGuard::DeferWeightGradGuard(WeightGradStore* store)
    : previous_(tls_store), route_(tls_route) {
  tls_store = store;
  if (route_) previous_route_store_ = route_->exchange(store);
}

DeferWeightGradGuard::~DeferWeightGradGuard() {
  tls_store = previous_;
  if (route_) route_->exchange(previous_route_store_);
}

WeightGradStore* DeferWeightGradGuard::current() {
  return tls_store;
}

WeightGradStore* DeferWeightGradGuard::for_backward(const WeightGradRoute* recorded) {
  if (tls_store != nullptr) return tls_store;
  return recorded != nullptr ? recorded->store() : nullptr;
}

}  // namespace dualpipe::runtime
