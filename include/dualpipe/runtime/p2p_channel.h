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
// dtypes differ in name only. So a payload receive is posted only once its header has arrived
// and the buffer is allocated from the header.
//
// NOTE: a Gloo send completes only once the peer has posted the matching receive, so sends are
// asynchronous here and waited for only at the end of a step (wait_sends), after this rank has
// posted all of its receives; never block on a send before posting your receives.

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include "dualpipe/runtime/stage_module.h"
#include "dualpipe/runtime/tensor_spec.h"
#include "dualpipe/runtime/torch_compat.h"
#include "dualpipe/runtime/trace.h"

namespace dualpipe::runtime {

enum class ItemKind : std::uint8_t { kActivation, kGrad };

// One exchanged item, named by its PRODUCING stage instance on both ends (as in the IR).
struct ItemKey {
  ItemKind kind = ItemKind::kActivation;
  MicrobatchId id;
  friend bool operator<(const ItemKey& a, const ItemKey& b);
};

// "activation of d0 s1 mb3" / "input gradient of d0 s2 mb3".
std::string to_string(const ItemKey& key);

class P2PChannel {
 public:
  // `comm_rank_of[p]` is the communicator rank of pipeline rank p; `rank` is this pipeline rank.
  // `num_stages` and `max_microbatches` bound the tag space.
  P2PChannel(CommunicatorPtr comm, int rank, std::vector<int> comm_rank_of, int num_stages,
             int max_microbatches, std::chrono::milliseconds timeout, Trace* trace);

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

  std::chrono::milliseconds timeout() const { return timeout_; }

 private:
  struct PendingSend {
    ItemKey key;
    int peer;
    TensorList tensors;  // header first
    std::vector<WorkPtr> works;
  };
  struct PendingRecv {
    int peer = -1;
    at::Tensor header;
    WorkPtr header_work;
    bool header_arrived = false;
    std::vector<TensorSpec> specs;
    TensorList tensors;
    std::vector<WorkPtr> works;
  };

  int tag_of(const ItemKey& key, int message) const;
  void post_payload(const ItemKey& key, PendingRecv& recv);
  [[noreturn]] void fail(const std::string& doing, int peer, const ItemKey& key,
                         const std::exception& e) const;
  void wait_work(const WorkPtr& work, const std::string& doing, int peer, const ItemKey& key);

  CommunicatorPtr comm_;
  int rank_;
  std::vector<int> comm_rank_of_;
  int num_stages_;
  int max_microbatches_;
  std::chrono::milliseconds timeout_;
  Trace* trace_;
  std::deque<PendingSend> sends_;
  std::map<ItemKey, PendingRecv> recvs_;
};

}  // namespace dualpipe::runtime
