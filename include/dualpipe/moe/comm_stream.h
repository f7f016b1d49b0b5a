#pragma once
// Where the MoE layer's all-to-alls run: asynchronous c10d work that the compute thread waits for
// only when it needs the received data.
//
// NOTE: on CPU the work runs on the Gloo communicator's worker thread while the calling thread
// keeps computing. On CUDA (NCCL) ProcessGroupNCCL already enqueues each collective on its own
// NCCL stream, ordered after the current compute stream, and Work::wait() only makes the current
// stream wait on it; so the same code gives "communication on its own stream" there, and wait()
// does not block the CPU. Every rank of the communicator must post the same sequence of
// all-to-alls (the MoE stages of one EP group run identical programs, which guarantees it).

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dualpipe/runtime/collective_wait.h"
#include "dualpipe/runtime/torch_compat.h"
#include "dualpipe/runtime/trace.h"

namespace dualpipe::moe {

// A model of the link under a CommStream's token all-to-alls, for links the process does not
// have (a benchmark on one machine stands in for a network with it: see bench/serial_link.h).
// Without one, an all-to-all is done when its collective is.
//
// NOTE: the model keeps the link's state (e.g. until when the link is busy). CommStream calls
// delivery_us() on the thread that posts and wait_until() on the thread that waits; a model used
// from several threads at once must guard its own state. Give each stream its own model: streams
// that share one share its link.
class LinkModel {
 public:
  virtual ~LinkModel() = default;
  // When the link delivers an all-to-all posted at `post_us` (runtime::Trace::now_us() clock).
  // Called once per token all-to-all, in post order, as it is posted; must not block.
  virtual std::int64_t delivery_us(std::int64_t post_us) = 0;
  // Blocks until `delivery_us` (a time delivery_us() returned). Called by PendingAllToAll::wait()
  // after the collective completed, when that happened before the modelled delivery.
  virtual void wait_until(std::int64_t delivery_us) = 0;
};

struct CommStreamOptions {
  // The link token all-to-alls travel over (null: the communicator's own; no model is asked).
  // exchange_counts() is not modelled (it carries metadata, not tokens).
  std::shared_ptr<LinkModel> link;
  // Record a trace event (category "comm") for every all-to-all.
  bool trace = false;
  // Who is in the communicator, for errors naming the peers an all-to-all waited for.
  runtime::GroupMembers members;
};

class CommStream;

// An all-to-all in flight. Movable, not copyable; destroying it without wait() is allowed (the
// work still completes; the tensors stay alive inside the c10d work).
class PendingAllToAll {
 public:
  PendingAllToAll() = default;
  bool valid() const { return stream_ != nullptr; }
  // Blocks until the received rows are complete (CPU) or the current CUDA stream is ordered after
  // them, then returns them. Throws std::runtime_error (naming the all-to-all) on a failed or
  // timed-out collective. Call once.
  at::Tensor wait();

 private:
  friend class CommStream;
  CommStream* stream_ = nullptr;
  runtime::WorkPtr work_;
  at::Tensor output_;
  std::string name_;
  std::int64_t start_us_ = 0;
  std::int64_t delivery_us_ = 0;  // the link model's delivery time (0: no model)
  std::shared_ptr<std::atomic<std::int64_t>> done_us_;
};

class CommStream {
 public:
  // `comm` may be null: a one-rank group whose all-to-alls are identities (no communication).
  explicit CommStream(runtime::CommunicatorPtr comm, CommStreamOptions options = {});

  int rank() const { return comm_ ? comm_->getRank() : 0; }
  int size() const { return comm_ ? comm_->getSize() : 1; }

  // Posts an all-to-all of the rows of `input` ([rows, ...], contiguous): the first
  // send_splits[0] rows go to rank 0, and so on; recv_splits[r] rows arrive from rank r. Does not
  // block. `name` labels errors and trace events.
  PendingAllToAll all_to_all(const at::Tensor& input, const std::vector<int64_t>& send_splits,
                             const std::vector<int64_t>& recv_splits, std::string name);

  // Exchanges token counts: `send_counts` has size()*k entries, entries [r*k, (r+1)*k) go to rank
  // r; returns size()*k entries, [r*k, (r+1)*k) from rank r. Blocking collective on every rank.
  // Not passed through options().link (it carries metadata, not tokens).
  std::vector<int64_t> exchange_counts(const std::vector<int64_t>& send_counts);

  // The all-to-alls recorded so far (category "comm"; start = post, end = completion), for
  // merging into the rank's Chrome trace. Thread-safe.
  std::vector<runtime::TraceEvent> trace_events() const;
  void clear_trace_events();

  const CommStreamOptions& options() const { return options_; }

  // Adds a span to the recorded events when options().trace is set (the overlap hook records its
  // compute components here, category "compute", so a trace shows which all-to-all ran under which
  // computation). Thread-safe.
  void record(const std::string& name, const char* category, std::int64_t start_us,
              std::int64_t end_us);

 private:
  friend class PendingAllToAll;

  runtime::CommunicatorPtr comm_;
  CommStreamOptions options_;
  mutable std::mutex mutex_;
  std::vector<runtime::TraceEvent> events_;
};

}  // namespace dualpipe::moe
