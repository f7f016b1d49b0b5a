#include "dualpipe/runtime/p2p_channel.h"

#include <ATen/ATen.h>

#include <sstream>
#include <stdexcept>
#include <tuple>

#include "dualpipe/check.h"

namespace dualpipe::runtime {
namespace {

constexpr int kHeaderLength = 64;  // int64 words
constexpr int kMaxTensors = 15;
// Message 0 is the header; messages 1..15 carry the payload (or, after a failed prediction,
// throw-away tensors of the predicted specs) and messages 16..30 the payload after a failed
// prediction.
constexpr int kFirstPayload = 1;
constexpr int kFirstUnpredictedPayload = 1 + kMaxTensors;
constexpr int kMessagesPerItem = 1 + 2 * kMaxTensors + 1;

// How an item's payload travels (the header's first word).
enum Protocol : std::int64_t {
  kFirstOfStream = 0,    // payload on messages 1.., posted from this header
  kPredicted = 1,        // payload on messages 1.., posted from the stream's first specs
  kPredictionFailed = 2  // throw-away tensors of the predicted specs on 1.., payload on 16..
};

std::vector<TensorSpec> specs_of(const TensorList& tensors) {
  std::vector<TensorSpec> specs;
  for (const at::Tensor& t : tensors) specs.push_back(TensorSpec::of(t));
  return specs;
}

// Header words per tensor: defined, dtype, device type, dim, sizes...
at::Tensor encode_header(const TensorList& tensors, const ItemKey& key, Protocol protocol,
                         const at::Device& device) {
  std::vector<std::int64_t> words = {protocol, static_cast<std::int64_t>(tensors.size())};
  for (const at::Tensor& t : tensors) {
    words.push_back(t.defined() ? 1 : 0);
    words.push_back(t.defined() ? static_cast<std::int64_t>(t.scalar_type()) : 0);
    words.push_back(t.defined() ? static_cast<std::int64_t>(t.device().type()) : 0);
    words.push_back(t.defined() ? t.dim() : 0);
    if (t.defined()) {
      for (std::int64_t size : t.sizes()) words.push_back(size);
    }
  }
  DUALPIPE_CHECK(
      tensors.size() <= static_cast<std::size_t>(kMaxTensors) && words.size() <= kHeaderLength,
      "cannot send ", to_string(key), ": ", tensors.size(),
      " tensors do not fit one p2p header (at most ", kMaxTensors, " tensors, ", kHeaderLength,
      " words in all)");
  at::Tensor header = at::zeros({kHeaderLength}, at::kLong);
  std::copy(words.begin(), words.end(), header.data_ptr<std::int64_t>());
  return device.is_cpu() ? header : header.to(device);
}

// The specs a header announces, with the sender's device type (the index is the receiver's to
// choose).
std::vector<TensorSpec> decode_header(const at::Tensor& received, Protocol* protocol) {
  const at::Tensor header = received.is_cpu() ? received : received.cpu();
  const std::int64_t* w = header.data_ptr<std::int64_t>();
  *protocol = static_cast<Protocol>(w[0]);
  std::vector<TensorSpec> specs(static_cast<std::size_t>(w[1]));
  int i = 2;
  for (TensorSpec& spec : specs) {
    spec.defined = w[i++] != 0;
    spec.dtype = static_cast<at::ScalarType>(w[i++]);
    spec.device = at::Device(static_cast<at::DeviceType>(w[i++]));
    const std::int64_t dim = w[i++];
    spec.shape.assign(w + i, w + i + dim);
    i += static_cast<int>(dim);
  }
  return specs;
}

}  // namespace

bool operator<(const ItemKey& a, const ItemKey& b) {
  return std::make_tuple(a.kind, a.id.direction, a.id.stage, a.id.microbatch) <
         std::make_tuple(b.kind, b.id.direction, b.id.stage, b.id.microbatch);
}

std::string to_string(const ItemKey& key) {
  return std::string(key.kind == ItemKind::kActivation ? "activation of " : "input gradient of ") +
         to_string(key.id);
}

P2PChannel::P2PChannel(CommunicatorPtr comm, int rank, std::vector<int> comm_rank_of,
                       int num_stages, int max_microbatches, std::chrono::milliseconds timeout,
                       Trace* trace, at::Device device, GroupMembers members)
    : comm_(std::move(comm)),
      rank_(rank),
      comm_rank_of_(std::move(comm_rank_of)),
      members_(std::move(members)),
      num_stages_(num_stages),
      max_microbatches_(max_microbatches),
      timeout_(timeout),
      trace_(trace),
      device_(device) {
  sender_ = std::thread([this] { run_sender(); });
}

P2PChannel::~P2PChannel() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_sender_.notify_all();
  sender_.join();
}

void P2PChannel::run_sender() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    wake_sender_.wait(lock, [this] { return stop_ || !to_post_.empty(); });
    if (stop_) return;
    PendingSend* send = to_post_.front();
    to_post_.pop_front();
    posting_ = true;
    lock.unlock();
    const std::int64_t start = Trace::now_us();
    std::vector<WorkPtr> works;
    std::exception_ptr error;
    const int dst = comm_rank_of_.at(send->peer);
    for (std::size_t i = 0; i < send->tensors.size(); ++i) {
      std::vector<at::Tensor> one = {send->tensors[i]};
      // NOTE: posting itself throws when the peer's connection is already gone.
      try {
        works.push_back(comm_->send(one, dst, tag_of(send->key, send->messages[i])));
      } catch (const std::exception& e) {
        try {
          fail("sending to", send->peer, send->key, e);
        } catch (...) {
          error = std::current_exception();
        }
        break;
      }
    }
    lock.lock();
    send->works = std::move(works);
    send->posted = error == nullptr;
    posting_ = false;
    if (error && !send_error_) send_error_ = error;
    if (trace_ != nullptr) {
      send_events_.push_back({"send " + to_string(send->key) + " -> " + std::to_string(send->peer),
                              "send", start, Trace::now_us() - start});
    }
    if (error) to_post_.clear();  // the connection is unusable: post nothing more
    sender_idle_.notify_all();
  }
}

void P2PChannel::take_sender_news() {
  if (send_error_) std::rethrow_exception(send_error_);
  if (trace_ != nullptr) {
    for (TraceEvent& e : send_events_) trace_->add_event(std::move(e));
  }
  send_events_.clear();
}

int P2PChannel::tag_of(const ItemKey& key, int message) const {
  const std::int64_t item =
      ((static_cast<std::int64_t>(key.kind) * 2 + key.id.direction) * num_stages_ + key.id.stage) *
          max_microbatches_ +
      key.id.microbatch;
  const std::int64_t tag = item * kMessagesPerItem + message;
  DUALPIPE_CHECK(tag <= std::numeric_limits<int>::max(), "p2p tag space exhausted: ", num_stages_,
                 " stages x ", max_microbatches_, " micro-batches is too many");
  return static_cast<int>(tag);
}

void P2PChannel::fail(const std::string& doing, int peer, const ItemKey& key,
                      const std::exception& e) const {
  // The peer as the launcher knows it: its world rank, and its host when that is not this one's.
  const PeerWaitedFor who =
      peer_in_group(members_, comm_rank_of_.at(peer), comm_rank_of_.at(rank_), peer);
  const PeerWaitedFor self =
      peer_in_group(members_, comm_rank_of_.at(rank_), comm_rank_of_.at(rank_), rank_);
  // NOTE: pipeline ranks are world ranks only without EP or DP; then both are named.
  auto named = [](int pipeline_rank, int world_rank) {
    return pipeline_rank == world_rank ? "rank " + std::to_string(pipeline_rank)
                                       : "pipeline rank " + std::to_string(pipeline_rank) +
                                             " (world rank " + std::to_string(world_rank) + ")";
  };
  throw std::runtime_error(with_peers_waited_for(
      named(rank_, self.rank) + " " + doing + " " + named(peer, who.rank) + " (" + to_string(key) +
          ", timeout " + std::to_string(timeout_.count()) +
          " ms) failed; the peer stopped or is too slow, the connection is unusable from here "
          "on: " +
          e.what(),
      {who}));
}

void P2PChannel::wait_work(const WorkPtr& work, const std::string& doing, int peer,
                           const ItemKey& key) {
  try {
    if (!work->wait(timeout_)) {
      throw std::runtime_error("wait returned without completing");
    }
  } catch (const std::exception& e) {
    fail(doing, peer, key, e);
  }
}

void P2PChannel::send(const ItemKey& key, int peer, const TensorList& tensors) {
  const std::vector<TensorSpec> specs = specs_of(tensors);
  const StreamKey stream = stream_of(key);
  Protocol protocol = kFirstOfStream;
  const std::vector<TensorSpec>* predicted = nullptr;
  auto it = sent_specs_.find(stream);
  if (it == sent_specs_.end()) {
    sent_specs_.emplace(stream, specs);
  } else {
    predicted = &it->second;
    protocol = *predicted == specs ? kPredicted : kPredictionFailed;
  }
  auto pending = std::make_unique<PendingSend>();
  pending->key = key;
  pending->peer = peer;
  pending->tensors = {encode_header(tensors, key, protocol, device_)};
  pending->messages = {0};
  if (protocol == kPredictionFailed) {
    int message = kFirstPayload;
    for (const TensorSpec& spec : *predicted) {
      if (!spec.defined) continue;
      pending->tensors.push_back(at::empty(spec.shape, spec.options()));
      pending->messages.push_back(message++);
    }
  }
  int message = protocol == kPredictionFailed ? kFirstUnpredictedPayload : kFirstPayload;
  for (const at::Tensor& t : tensors) {
    if (!t.defined()) continue;
    pending->tensors.push_back(t.contiguous());
    pending->messages.push_back(message++);
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    take_sender_news();
    to_post_.push_back(pending.get());
    sends_.push_back(std::move(pending));
  }
  wake_sender_.notify_one();
}

void P2PChannel::post_recv(const ItemKey& key, int peer) {
  if (recvs_.count(key) != 0) return;
  PendingRecv& recv = recvs_[key];
  recv.peer = peer;
  const StreamKey stream = stream_of(key);
  recv.first_of_stream = first_recv_.emplace(stream, key).second;
  recv.header = at::empty({kHeaderLength}, at::TensorOptions().dtype(at::kLong).device(device_));
  std::vector<at::Tensor> one = {recv.header};
  try {
    recv.header_work = comm_->recv(one, comm_rank_of_.at(peer), tag_of(key, 0));
  } catch (const std::exception& e) {
    fail("posting a receive from", peer, key, e);
  }
  auto known = received_specs_.find(stream);
  if (!recv.first_of_stream && known != received_specs_.end()) {
    post_tensors(key, peer, known->second, kFirstPayload, recv.predicted, recv.predicted_works);
    recv.predicted_posted = true;
  }
}

void P2PChannel::post_tensors(const ItemKey& key, int peer, const std::vector<TensorSpec>& specs,
                              int first_message, TensorList& tensors, std::vector<WorkPtr>& works) {
  int message = first_message;
  for (const TensorSpec& spec : specs) {
    if (!spec.defined) {
      tensors.emplace_back();
      continue;
    }
    at::Tensor t = at::empty(spec.shape, spec.options());
    tensors.push_back(t);
    std::vector<at::Tensor> one = {t};
    try {
      works.push_back(comm_->recv(one, comm_rank_of_.at(peer), tag_of(key, message++)));
    } catch (const std::exception& e) {
      fail("posting a receive from", peer, key, e);
    }
  }
}

void P2PChannel::predict_stream(const StreamKey& stream, const std::vector<TensorSpec>& specs) {
  received_specs_.emplace(stream, specs);
  for (auto& [key, recv] : recvs_) {
    if (recv.first_of_stream || recv.predicted_posted || stream_of(key) != stream) continue;
    post_tensors(key, recv.peer, specs, kFirstPayload, recv.predicted, recv.predicted_works);
    recv.predicted_posted = true;
  }
}

void P2PChannel::post_payload(const ItemKey& key, PendingRecv& recv) {
  recv.header_arrived = true;
  Protocol protocol = kFirstOfStream;
  recv.specs = decode_header(recv.header, &protocol);
  for (std::size_t i = 0; i < recv.specs.size(); ++i) {
    TensorSpec& spec = recv.specs[i];
    if (!spec.defined) continue;
    if (spec.device.type() != device_.type()) {
      throw std::runtime_error("rank " + std::to_string(rank_) + ": rank " +
                               std::to_string(recv.peer) + " sends tensor " + std::to_string(i) +
                               " of " + to_string(key) + " on " + spec.device.str() +
                               " but this rank's stages live on " + device_.str() +
                               " (both ends of a pipeline link must use one device type)");
    }
    spec.device = device_;
  }
  const Protocol expected = recv.first_of_stream ? kFirstOfStream : kPredicted;
  if (protocol != expected && !(protocol == kPredictionFailed && expected == kPredicted)) {
    throw std::runtime_error("rank " + std::to_string(rank_) + ": the header of " + to_string(key) +
                             " from rank " + std::to_string(recv.peer) + " announces protocol " +
                             std::to_string(protocol) + ", expected " + std::to_string(expected) +
                             " (the two ranks disagree on the order of this stream's items)");
  }
  if (recv.first_of_stream) {
    post_tensors(key, recv.peer, recv.specs, kFirstPayload, recv.tensors, recv.works);
    predict_stream(stream_of(key), recv.specs);
    return;
  }
  if (!recv.predicted_posted) {
    // The sender sent this stream's first item before this one, so its header is here too.
    const ItemKey first = first_recv_.at(stream_of(key));
    PendingRecv& first_recv = recvs_.at(first);
    wait_work(first_recv.header_work, "waiting for a header from", first_recv.peer, first);
    post_payload(first, first_recv);
  }
  if (protocol == kPredicted) {
    recv.tensors = std::move(recv.predicted);
    recv.works = std::move(recv.predicted_works);
    return;
  }
  // Throw-away tensors land in the predicted buffers; the payload comes on its own messages.
  recv.works = std::move(recv.predicted_works);
  recv.predicted.clear();
  post_tensors(key, recv.peer, recv.specs, kFirstUnpredictedPayload, recv.tensors, recv.works);
}

void P2PChannel::progress() {
  for (auto& [key, recv] : recvs_) {
    if (!recv.header_arrived && recv.header_work->isCompleted()) {
      wait_work(recv.header_work, "receiving a header from", recv.peer, key);
      post_payload(key, recv);
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  take_sender_news();
  while (!sends_.empty() && sends_.front()->posted) {
    PendingSend& front = *sends_.front();
    bool done = true;
    for (const WorkPtr& work : front.works) done = done && work->isCompleted();
    if (!done) break;
    for (const WorkPtr& work : front.works) wait_work(work, "sending to", front.peer, front.key);
    sends_.pop_front();
  }
}

TensorList P2PChannel::wait_recv(const ItemKey& key, std::vector<TensorSpec>* specs) {
  auto it = recvs_.find(key);
  DUALPIPE_ASSERT(it != recvs_.end(), "rank ", rank_, ": ", to_string(key),
                  " is consumed but its receive was never posted");
  PendingRecv& recv = it->second;
  const std::int64_t start = Trace::now_us();
  if (!recv.header_arrived) {
    wait_work(recv.header_work, "waiting for a header from", recv.peer, key);
    post_payload(key, recv);
  }
  for (const WorkPtr& work : recv.works) wait_work(work, "waiting for data from", recv.peer, key);
  if (trace_ != nullptr) {
    trace_->add("wait " + to_string(key) + " <- " + std::to_string(recv.peer), "wait", start);
  }
  TensorList tensors = std::move(recv.tensors);
  if (specs != nullptr) *specs = std::move(recv.specs);
  recvs_.erase(it);
  return tensors;
}

void P2PChannel::wait_sends() {
  const std::int64_t start = Trace::now_us();
  std::deque<std::unique_ptr<PendingSend>> sends;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    sender_idle_.wait(lock, [this] { return (to_post_.empty() && !posting_) || send_error_; });
    take_sender_news();
    sends.swap(sends_);
  }
  const bool any = !sends.empty();
  for (const auto& send : sends) {
    for (const WorkPtr& work : send->works) wait_work(work, "sending to", send->peer, send->key);
  }
  if (any && trace_ != nullptr) trace_->add("wait for sends", "wait", start);
}

}  // namespace dualpipe::runtime
