#pragma once
// Point-to-point exchange of tensor lists between pipeline ranks, shapes learned on the fly.
//
// Each item (the output activation or input gradient of one (direction, stage, microbatch)) goes
// as a fixed-size header (count, then per tensor: defined, dtype, rank, sizes) followed by one
// message per defined tensor. Every message has its own Gloo tag derived from the item, so
// items never cross; the program's FIFO order per rank pair is kept anyway.
//
// NOTE: Gloo aborts the whole process from its own thread when a receive buffer is smaller than
// the incoming message, silently leaves garbage when it is larger, and reinterprets bytes when
// dtypes differ in name only. So a payload buffer is sized either from the item's own header or
// from a prediction both ends make alike:
//   - the first item of a stream (same kind, direction and producing stage) in a step: the
//     payload receive is posted once its header has arrived (two rendezvous);
//   - every later item of the stream: both ends predict the first item's specs. The receiver
//     posts the predicted payload receives as soon as the first header is in, long before the
//     item is sent, so the item arrives in one rendezvous. The sender sends the payload on the
//     predicted messages when its specs match the prediction; when they do not, it sends
//     throw-away tensors of exactly the predicted specs there (so every posted buffer gets a
//     message of its size) and the real payload on further messages, which the receiver posts
//     from the header. Either way no buffer ever meets a message of another size.
//
// NOTE: a Gloo send completes only once the peer has posted the matching receive, so sends are
// asynchronous here and waited for only at the end of a step (wait_sends), after this rank has
// posted all of its receives; never block on a send before posting your receives.
//
// NOTE: posting a Gloo send writes the payload into the socket on the calling thread when the
// peer's receive is already posted (0.1-0.3 ms for a few hundred KB on loopback, more when the
// cores are busy), so sends are posted by the channel's own sender thread, in order, and the
// compute thread goes on at once. Receives stay on the calling thread. A failed post is reported
// by the next call on the calling thread.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "dualpipe/runtime/collective_wait.h"
#include "dualpipe/runtime/stage_module.h"
#include "dualpipe/runtime/tensor_spec.h"
#include "dualpipe/runtime/torch_compat.h"
#include "dualpipe/runtime/trace.h"
#include "dualpipe/schedule/item.h"

namespace dualpipe::runtime {

using ItemKind = schedule::ItemKind;

// One exchanged item, named by its PRODUCING stage instance on both ends (as in the IR): the
// runtime's key for a schedule::Item.
struct ItemKey {
  ItemKind kind = ItemKind::kActivation;
  MicrobatchId id;

  static ItemKey of(const schedule::Item& item) {
    return ItemKey{item.kind, MicrobatchId{item.direction, item.stage, item.microbatch}};
  }
  schedule::Item item() const {
    return schedule::Item{kind, id.direction, id.stage, id.microbatch};
  }
  friend bool operator<(const ItemKey& a, const ItemKey& b);
};

// "activation of d0 s1 mb3" / "input gradient of d0 s2 mb3".
std::string to_string(const ItemKey& key);

class P2PChannel {
 public:
  // `comm_rank_of[p]` is the communicator rank of pipeline rank p; `rank` is this pipeline rank.
  // `num_stages` and `max_microbatches` bound the tag space. `device` is where this rank's
  // stages keep their data (CPU over Gloo, the rank's GPU over NCCL): headers and received
  // tensors are allocated there, and a peer sending tensors of another device type is an error
  // naming both. `members` (by communicator rank; may be unknown) lets errors name the peer's
  // world rank and host (peers_waited_for.h).
  P2PChannel(CommunicatorPtr comm, int rank, std::vector<int> comm_rank_of, int num_stages,
             int max_microbatches, std::chrono::milliseconds timeout, Trace* trace,
             at::Device device = at::kCPU, GroupMembers members = {});

  // Posts the sends of `tensors` (header, then payloads) to pipeline rank `peer` and returns at
  // once; the channel keeps the tensors alive until the sends complete. Non-contiguous tensors
  // are copied first.
  void send(const ItemKey& key, int peer, const TensorList& tensors);
  // Posts the header receive of `key` from `peer` (no-op when already posted). Non-blocking.
  void post_recv(const ItemKey& key, int peer);
  // Blocks until the item posted with post_recv has fully arrived, then returns its tensors and
  // (through `specs`) what the header announced. Waits at most the timeout per message; throws
  // std::runtime_error naming this rank, the peer and the item on a timeout or a lost peer.
  TensorList wait_recv(const ItemKey& key, std::vector<TensorSpec>* specs = nullptr);
  // Non-blocking: posts payload receives for arrived headers, releases completed sends.
  void progress();
  // Blocks until every posted send completed (timeout per send, same errors as wait_recv).
  void wait_sends();
  // Receives posted and not yet consumed by wait_recv.
  std::size_t num_pending_recvs() const { return recvs_.size(); }

  // Stops the sender thread (posted sends stay posted; unposted ones are dropped).
  ~P2PChannel();
  P2PChannel(const P2PChannel&) = delete;
  P2PChannel& operator=(const P2PChannel&) = delete;

  std::chrono::milliseconds timeout() const { return timeout_; }

 private:
  struct PendingSend {
    ItemKey key;
    int peer;
    TensorList tensors;          // header first
    std::vector<int> messages;   // message index of each tensor
    std::vector<WorkPtr> works;  // filled by the sender thread
    bool posted = false;
  };
  struct PendingRecv {
    int peer = -1;
    bool first_of_stream = false;
    at::Tensor header;
    WorkPtr header_work;
    bool header_arrived = false;
    std::vector<TensorSpec> specs;
    TensorList tensors;
    std::vector<WorkPtr> works;
    // Later items of a stream: the receives posted from the prediction (empty until posted).
    bool predicted_posted = false;
    TensorList predicted;
    std::vector<WorkPtr> predicted_works;
  };
  // (kind, direction, producing stage): the items one stage sends one way.
  using StreamKey = std::tuple<int, int, int>;
  static StreamKey stream_of(const ItemKey& key) {
    return {static_cast<int>(key.kind), key.id.direction, key.id.stage};
  }

  int tag_of(const ItemKey& key, int message) const;
  // Header arrived: post what the header says is still missing.
  void post_payload(const ItemKey& key, PendingRecv& recv);
  // Posts receives for `specs` on messages first_message, first_message + 1, ...
  void post_tensors(const ItemKey& key, int peer, const std::vector<TensorSpec>& specs,
                    int first_message, TensorList& tensors, std::vector<WorkPtr>& works);
  // The first item of a stream told its specs: post the prediction for the stream's other items.
  void predict_stream(const StreamKey& stream, const std::vector<TensorSpec>& specs);
  [[noreturn]] void fail(const std::string& doing, int peer, const ItemKey& key,
                         const std::exception& e) const;
  void wait_work(const WorkPtr& work, const std::string& doing, int peer, const ItemKey& key);
  // The sender thread: posts queued sends in order until stopped.
  void run_sender();
  // Rethrows a failed post and moves the sender's trace events into trace_. Holds mutex_.
  void take_sender_news();

  CommunicatorPtr comm_;
  int rank_;
  std::vector<int> comm_rank_of_;
  GroupMembers members_;
  int num_stages_;
  int max_microbatches_;
  std::chrono::milliseconds timeout_;
  Trace* trace_;
  at::Device device_;
  // Sends in posting order; the sender thread posts them, this thread releases completed ones.
  std::deque<std::unique_ptr<PendingSend>> sends_;
  std::deque<PendingSend*> to_post_;
  bool posting_ = false;
  bool stop_ = false;
  std::exception_ptr send_error_;
  std::vector<TraceEvent> send_events_;
  std::mutex mutex_;
  std::condition_variable wake_sender_;
  std::condition_variable sender_idle_;
  std::thread sender_;
  std::map<ItemKey, PendingRecv> recvs_;
  // Specs of each stream's first item: as sent (sender side) and as received (receiver side).
  std::map<StreamKey, std::vector<TensorSpec>> sent_specs_;
  std::map<StreamKey, std::vector<TensorSpec>> received_specs_;
  // Streams whose first receive has been posted (receiver side).
  std::map<StreamKey, ItemKey> first_recv_;
};

}  // namespace dualpipe::runtime
