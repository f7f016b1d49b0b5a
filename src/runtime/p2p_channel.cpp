#include "dualpipe/runtime/p2p_channel.h"

#include <ATen/ATen.h>

#include <sstream>
#include <stdexcept>
#include <tuple>

namespace dualpipe::runtime {
namespace {

constexpr int kHeaderLength = 64;     // int64 words
constexpr int kMessagesPerItem = 16;  // one header + at most 15 tensors
constexpr int kMaxTensors = kMessagesPerItem - 1;

at::Tensor encode_header(const TensorList& tensors, const ItemKey& key) {
  std::vector<std::int64_t> words = {static_cast<std::int64_t>(tensors.size())};
  for (const at::Tensor& t : tensors) {
    words.push_back(t.defined() ? 1 : 0);
    words.push_back(t.defined() ? static_cast<std::int64_t>(t.scalar_type()) : 0);
    words.push_back(t.defined() ? t.dim() : 0);
    if (t.defined()) {
      for (std::int64_t size : t.sizes()) words.push_back(size);
    }
  }
  if (tensors.size() > static_cast<std::size_t>(kMaxTensors) || words.size() > kHeaderLength) {
    throw std::invalid_argument(
        "cannot send " + to_string(key) + ": " + std::to_string(tensors.size()) +
        " tensors do not fit one p2p header (at most " + std::to_string(kMaxTensors) +
        " tensors, " + std::to_string(kHeaderLength) + " words in all)");
  }
  at::Tensor header = at::zeros({kHeaderLength}, at::kLong);
  std::copy(words.begin(), words.end(), header.data_ptr<std::int64_t>());
  return header;
}

std::vector<TensorSpec> decode_header(const at::Tensor& header) {
  const std::int64_t* w = header.data_ptr<std::int64_t>();
  std::vector<TensorSpec> specs(static_cast<std::size_t>(w[0]));
  int i = 1;
  for (TensorSpec& spec : specs) {
    spec.defined = w[i++] != 0;
    spec.dtype = static_cast<at::ScalarType>(w[i++]);
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
                       Trace* trace)
    : comm_(std::move(comm)),
      rank_(rank),
      comm_rank_of_(std::move(comm_rank_of)),
      num_stages_(num_stages),
      max_microbatches_(max_microbatches),
      timeout_(timeout),
      trace_(trace) {}

int P2PChannel::tag_of(const ItemKey& key, int message) const {
  const std::int64_t item =
      ((static_cast<std::int64_t>(key.kind) * 2 + key.id.direction) * num_stages_ + key.id.stage) *
          max_microbatches_ +
      key.id.microbatch;
  const std::int64_t tag = item * kMessagesPerItem + message;
  if (tag > std::numeric_limits<int>::max()) {
    throw std::invalid_argument("p2p tag space exhausted: " + std::to_string(num_stages_) +
                                " stages x " + std::to_string(max_microbatches_) +
                                " micro-batches is too many");
  }
  return static_cast<int>(tag);
}

void P2PChannel::fail(const std::string& doing, int peer, const ItemKey& key,
                      const std::exception& e) const {
  throw std::runtime_error("rank " + std::to_string(rank_) + " " + doing + " rank " +
                           std::to_string(peer) + " (" + to_string(key) + ", timeout " +
                           std::to_string(timeout_.count()) +
                           " ms) failed; the peer stopped or is too slow, the connection is "
                           "unusable from here on: " +
                           e.what());
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
  const std::int64_t start = Trace::now_us();
  PendingSend pending{key, peer, {encode_header(tensors, key)}, {}};
  for (const at::Tensor& t : tensors) {
    if (t.defined()) pending.tensors.push_back(t.contiguous());
  }
  const int dst = comm_rank_of_.at(peer);
  for (std::size_t i = 0; i < pending.tensors.size(); ++i) {
    std::vector<at::Tensor> one = {pending.tensors[i]};
    // NOTE: posting itself throws when the peer's connection is already gone.
    try {
      pending.works.push_back(comm_->send(one, dst, tag_of(key, static_cast<int>(i))));
    } catch (const std::exception& e) {
      fail("sending to", peer, key, e);
    }
  }
  sends_.push_back(std::move(pending));
  if (trace_ != nullptr)
    trace_->add("send " + to_string(key) + " -> " + std::to_string(peer), "send", start);
}

void P2PChannel::post_recv(const ItemKey& key, int peer) {
  if (recvs_.count(key) != 0) return;
  PendingRecv& recv = recvs_[key];
  recv.peer = peer;
  recv.header = at::empty({kHeaderLength}, at::kLong);
  std::vector<at::Tensor> one = {recv.header};
  try {
    recv.header_work = comm_->recv(one, comm_rank_of_.at(peer), tag_of(key, 0));
  } catch (const std::exception& e) {
    fail("posting a receive from", peer, key, e);
  }
}

void P2PChannel::post_payload(const ItemKey& key, PendingRecv& recv) {
  recv.header_arrived = true;
  recv.specs = decode_header(recv.header);
  int message = 1;
  for (const TensorSpec& spec : recv.specs) {
    if (!spec.defined) {
      recv.tensors.emplace_back();
      continue;
    }
    at::Tensor t = at::empty(spec.shape, at::TensorOptions().dtype(spec.dtype));
    recv.tensors.push_back(t);
    std::vector<at::Tensor> one = {t};
    try {
      recv.works.push_back(comm_->recv(one, comm_rank_of_.at(recv.peer), tag_of(key, message++)));
    } catch (const std::exception& e) {
      fail("posting a receive from", recv.peer, key, e);
    }
  }
}

void P2PChannel::progress() {
  for (auto& [key, recv] : recvs_) {
    if (!recv.header_arrived && recv.header_work->isCompleted()) {
      wait_work(recv.header_work, "receiving a header from", recv.peer, key);
      post_payload(key, recv);
    }
  }
  while (!sends_.empty()) {
    PendingSend& front = sends_.front();
    bool done = true;
    for (const WorkPtr& work : front.works) done = done && work->isCompleted();
    if (!done) break;
    for (const WorkPtr& work : front.works) wait_work(work, "sending to", front.peer, front.key);
    sends_.pop_front();
  }
}

TensorList P2PChannel::wait_recv(const ItemKey& key, std::vector<TensorSpec>* specs) {
  auto it = recvs_.find(key);
  if (it == recvs_.end()) {
    throw std::logic_error("rank " + std::to_string(rank_) + ": " + to_string(key) +
                           " is consumed but its receive was never posted");
  }
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
  const bool any = !sends_.empty();
  while (!sends_.empty()) {
    PendingSend& front = sends_.front();
    for (const WorkPtr& work : front.works) wait_work(work, "sending to", front.peer, front.key);
    sends_.pop_front();
  }
  if (any && trace_ != nullptr) trace_->add("wait for sends", "wait", start);
}

}  // namespace dualpipe::runtime
