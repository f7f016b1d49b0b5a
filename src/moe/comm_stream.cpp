#include "dualpipe/moe/comm_stream.h"

#include <ATen/ATen.h>

#include <numeric>
#include <stdexcept>

namespace dualpipe::moe {
namespace {

std::int64_t sum(const std::vector<int64_t>& values) {
  return std::accumulate(values.begin(), values.end(), std::int64_t{0});
}

}  // namespace

CommStream::CommStream(runtime::CommunicatorPtr comm, CommStreamOptions options)
    : comm_(std::move(comm)), options_(options) {}

PendingAllToAll CommStream::all_to_all(const at::Tensor& input,
                                       const std::vector<int64_t>& send_splits,
                                       const std::vector<int64_t>& recv_splits, std::string name) {
  const int num_ranks = size();
  if (static_cast<int>(send_splits.size()) != num_ranks ||
      static_cast<int>(recv_splits.size()) != num_ranks || sum(send_splits) != input.size(0)) {
    throw std::invalid_argument("all-to-all '" + name + "' on " + std::to_string(num_ranks) +
                                " ranks got send_splits=" + c10::str(send_splits) +
                                ", recv_splits=" + c10::str(recv_splits) + " for " +
                                std::to_string(input.size(0)) + " input rows");
  }
  std::vector<int64_t> shape = input.sizes().vec();
  shape[0] = sum(recv_splits);
  PendingAllToAll pending;
  pending.stream_ = this;
  pending.name_ = std::move(name);
  pending.start_us_ = runtime::Trace::now_us();
  if (options_.link) pending.delivery_us_ = options_.link->delivery_us(pending.start_us_);
  if (!comm_) {
    pending.output_ = input.clone();
    return pending;
  }
  at::Tensor send = input.contiguous();
  pending.output_ = at::empty(shape, input.options());
  std::vector<int64_t> out_splits = recv_splits, in_splits = send_splits;
  pending.work_ = comm_->alltoall_base(pending.output_, send, out_splits, in_splits);
  if (options_.trace) {
    // NOTE: completion time from the work's future (runs on the Gloo thread), so the trace shows
    // when the data arrived, not when the compute thread got round to waiting.
    auto done = std::make_shared<std::atomic<std::int64_t>>(0);
    pending.done_us_ = done;
    try {
      pending.work_->getFuture()->addCallback(
          [done](c10::ivalue::Future&) { *done = runtime::Trace::now_us(); });
    } catch (const std::exception&) {
      pending.done_us_.reset();  // a backend without futures: the wait time is the end
    }
  }
  return pending;
}

at::Tensor PendingAllToAll::wait() {
  if (!stream_) throw std::logic_error("PendingAllToAll::wait on an empty handle");
  if (work_) {
    runtime::wait_collective(work_, *stream_->comm_, stream_->options_.members,
                             "all-to-all '" + name_ + "'");
  }
  std::int64_t end_us = runtime::Trace::now_us();
  if (done_us_ && *done_us_ != 0) end_us = *done_us_;
  if (delivery_us_ > end_us) {
    stream_->options_.link->wait_until(delivery_us_);
    end_us = delivery_us_;
  }
  stream_->record(name_, "comm", start_us_, end_us);
  stream_ = nullptr;
  work_.reset();
  return std::move(output_);
}

std::vector<int64_t> CommStream::exchange_counts(const std::vector<int64_t>& send_counts) {
  if (!comm_) return send_counts;
  if (send_counts.size() % size() != 0) {
    throw std::invalid_argument("exchange_counts needs a multiple of " + std::to_string(size()) +
                                " counts, got " + std::to_string(send_counts.size()));
  }
  at::Tensor send = at::tensor(send_counts, at::kLong);
  at::Tensor recv = at::empty_like(send);
  std::vector<int64_t> equal_splits;  // empty: equal splits
  runtime::wait_collective(comm_->alltoall_base(recv, send, equal_splits, equal_splits), *comm_,
                           options_.members, "all-to-all of the token counts");
  return std::vector<int64_t>(recv.data_ptr<int64_t>(), recv.data_ptr<int64_t>() + recv.numel());
}

void CommStream::record(const std::string& name, const char* category, std::int64_t start_us,
                        std::int64_t end_us) {
  if (!options_.trace) return;
  std::lock_guard<std::mutex> lock(mutex_);
  events_.push_back(runtime::TraceEvent{name, category, start_us, end_us - start_us});
}

std::vector<runtime::TraceEvent> CommStream::trace_events() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return events_;
}

void CommStream::clear_trace_events() {
  std::lock_guard<std::mutex> lock(mutex_);
  events_.clear();
}

}  // namespace dualpipe::moe
