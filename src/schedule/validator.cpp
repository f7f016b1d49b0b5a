#include "dualpipe/schedule/validator.h"

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "dualpipe/schedule/item.h"

namespace dualpipe::schedule {
namespace {

constexpr int kNone = -1;

// Per-op flags: the op passed the structural checks and is the first occurrence of what it
// computes or moves. Later checks look only at such ops, so one bad op gives one problem
// instead of a cascade of confused ones.
constexpr std::uint8_t kPrimary = 1;          // the op itself (the forward half of FB)
constexpr std::uint8_t kBackwardPrimary = 2;  // the backward half of FB

template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

std::string instance_name(int direction, int stage, int microbatch) {
  return cat("(d=", direction, ",s=", stage, ",m=", microbatch, ")");
}

class Collector {
 public:
  explicit Collector(std::size_t max_problems) : max_problems_(max_problems) {}

  // `make_reason` is called only when the problem is recorded: a broken schedule of millions
  // of ops must not build millions of strings.
  template <typename MakeReason>
  void add(int rank, int op_index, const Op& op, MakeReason&& make_reason) {
    ++total_;
    if (problems_.size() < max_problems_) {
      problems_.push_back({rank, op_index, describe(op), make_reason()});
    }
  }

  std::size_t total() const { return total_; }
  std::vector<ValidationError> take() { return std::move(problems_); }

 private:
  std::size_t max_problems_;
  std::size_t total_ = 0;
  std::vector<ValidationError> problems_;
};

class Validator {
 public:
  Validator(const Schedule& schedule, Collector& out)
      : schedule_(schedule),
        placement_(schedule.placement),
        out_(out),
        num_ranks_(schedule.num_ranks()),
        num_directions_(schedule.num_directions()),
        num_stages_(schedule.num_stages()),
        num_microbatches_(schedule.microbatches_per_direction()) {}

  void run() {
    if (static_cast<int>(schedule_.programs.size()) != num_ranks_) {
      out_.add(kNone, kNone, Op{}, [&] {
        return cat("schedule has ", schedule_.programs.size(), " programs but its placement has ",
                   num_ranks_, " ranks: need one program per rank");
      });
      return;
    }
    if (num_microbatches_ < 1) {
      out_.add(kNone, kNone, Op{}, [&] {
        return cat("num_microbatches=", schedule_.num_microbatches,
                   " gives no micro-batch to each of ", num_directions_, " directions");
      });
      return;
    }
    const std::size_t num_instances =
        static_cast<std::size_t>(num_directions_) * num_stages_ * num_microbatches_;
    owner_.resize(static_cast<std::size_t>(num_directions_) * num_stages_);
    for (int d = 0; d < num_directions_; ++d) {
      for (int s = 0; s < num_stages_; ++s) owner_[d * num_stages_ + s] = placement_.rank_of(d, s);
    }
    for (std::vector<int>* positions : {&f_pos_, &b_pos_, &w_pos_, &send_act_pos_, &recv_act_pos_,
                                        &send_grad_pos_, &recv_grad_pos_}) {
      positions->assign(num_instances, kNone);
    }
    deferred_.assign(num_instances, 0);
    flags_.resize(num_ranks_);

    for (int rank = 0; rank < num_ranks_; ++rank) record_positions(rank);
    for (int rank = 0; rank < num_ranks_; ++rank) check_order(rank);
    check_complete();
    check_unmatched_communication();
    check_channel_order();
    check_deadlock();
  }

 private:
  int owner(int direction, int stage) const { return owner_[direction * num_stages_ + stage]; }
  int index(int direction, int stage, int microbatch) const {
    return (direction * num_stages_ + stage) * num_microbatches_ + microbatch;
  }
  const Program& program(int rank) const { return schedule_.programs[rank]; }

  // ---- Structure: each op names existing things on the right rank. ----

  bool exists(int direction, int stage, int microbatch, std::string* reason) const {
    if (direction < 0 || direction >= num_directions_ || stage < 0 || stage >= num_stages_) {
      *reason =
          cat("stage instance (d=", direction, ",s=", stage, ") does not exist (directions 0..",
              num_directions_ - 1, ", stages 0..", num_stages_ - 1, ")");
      return false;
    }
    if (microbatch < 0 || microbatch >= num_microbatches_) {
      *reason = cat("micro-batch ", microbatch, " is out of range 0..", num_microbatches_ - 1,
                    " (num_microbatches=", schedule_.num_microbatches, " over ", num_directions_,
                    " direction(s))");
      return false;
    }
    return true;
  }

  // Checks a compute op's (or FB half's) stage instance.
  bool check_compute(int rank, int direction, int stage, int microbatch,
                     std::string* reason) const {
    if (!exists(direction, stage, microbatch, reason)) return false;
    if (owner(direction, stage) != rank) {
      *reason = cat("stage (d=", direction, ",s=", stage, ") lives on rank ",
                    owner(direction, stage), ", not on this rank");
      return false;
    }
    return true;
  }

  bool check_communication(int rank, const Op& op, std::string* reason) const {
    if (!exists(op.direction, op.stage, op.microbatch, reason)) return false;
    // The item travels from the producing stage to the consuming one.
    const Item moved = item_of(op);
    const bool activation = moved.kind == ItemKind::kActivation;
    const int producer = moved.stage;
    const int consumer = consumer_stage(moved);
    if (consumer < 0 || consumer >= num_stages_) {
      *reason = activation ? cat("stage ", producer, " is the last stage of direction ",
                                 op.direction, ": its output activation goes to no other stage")
                           : cat("stage 0 has no previous stage to take its input gradient");
      return false;
    }
    const int local = op.is_send() ? producer : consumer;
    const int remote = op.is_send() ? consumer : producer;
    if (owner(op.direction, local) != rank) {
      *reason =
          cat(op.is_send() ? "the sending" : "the receiving", " stage (d=", op.direction,
              ",s=", local, ") lives on rank ", owner(op.direction, local), ", not on this rank");
      return false;
    }
    if (op.peer < 0 || op.peer >= num_ranks_) {
      *reason = cat("peer ", op.peer, " is out of range 0..", num_ranks_ - 1);
      return false;
    }
    if (op.peer == rank) {
      *reason = cat("peer ", op.peer, " is this rank itself");
      return false;
    }
    if (owner(op.direction, remote) != op.peer) {
      *reason = cat("peer is rank ", op.peer, " but the ", op.is_send() ? "receiving" : "sending",
                    " stage (d=", op.direction, ",s=", remote, ") lives on rank ",
                    owner(op.direction, remote));
      return false;
    }
    return true;
  }

  // Records where each forward/backward/W/send/receive happens; reports structural problems
  // and duplicates. An instance's ops all live on its owner rank, so positions are op indices
  // on that rank.
  void record_positions(int rank) {
    const Program& ops = program(rank);
    flags_[rank].assign(ops.size(), 0);
    for (int i = 0; i < static_cast<int>(ops.size()); ++i) {
      const Op& op = ops[i];
      std::string reason;
      auto fail = [&] { out_.add(rank, i, op, [&] { return reason; }); };
      // `what` and (d, s, m) name the duplicated thing; strings are built only on error.
      auto record = [&](std::vector<int>& positions, int x, const char* what, int d, int s, int m,
                        std::uint8_t flag) {
        if (positions[x] != kNone) {
          out_.add(rank, i, op, [&] {
            return cat("duplicate ", what, " of ", instance_name(d, s, m), ": already at op ",
                       positions[x], " (", describe(ops[positions[x]]), ")");
          });
          return;
        }
        positions[x] = i;
        flags_[rank][i] |= flag;
      };
      switch (op.kind) {
        case OpKind::kForward:
        case OpKind::kBackward:
        case OpKind::kWeight: {
          if (!check_compute(rank, op.direction, op.stage, op.microbatch, &reason)) {
            fail();
            break;
          }
          const int x = index(op.direction, op.stage, op.microbatch);
          const int d = op.direction, s = op.stage, m = op.microbatch;
          if (op.kind == OpKind::kForward) {
            record(f_pos_, x, "forward", d, s, m, kPrimary);
          } else if (op.kind == OpKind::kBackward) {
            record(b_pos_, x, "backward", d, s, m, kPrimary);
            if (flags_[rank][i] & kPrimary) deferred_[x] = op.defer_weight_grad;
          } else {
            record(w_pos_, x, "W", d, s, m, kPrimary);
          }
          break;
        }
        case OpKind::kForwardBackward: {
          if (!check_compute(rank, op.direction, op.stage, op.microbatch, &reason)) {
            reason = "forward half: " + reason;
            fail();
            break;
          }
          if (!check_compute(rank, op.backward_direction, op.backward_stage, op.backward_microbatch,
                             &reason)) {
            reason = "backward half: " + reason;
            fail();
            break;
          }
          const int f = index(op.direction, op.stage, op.microbatch);
          const int b = index(op.backward_direction, op.backward_stage, op.backward_microbatch);
          record(f_pos_, f, "forward", op.direction, op.stage, op.microbatch, kPrimary);
          record(b_pos_, b, "backward", op.backward_direction, op.backward_stage,
                 op.backward_microbatch, kBackwardPrimary);
          if (flags_[rank][i] & kBackwardPrimary) deferred_[b] = op.defer_weight_grad;
          break;
        }
        case OpKind::kSendActivation:
        case OpKind::kRecvActivation:
        case OpKind::kSendGrad:
        case OpKind::kRecvGrad: {
          if (!check_communication(rank, op, &reason)) {
            fail();
            break;
          }
          const int x = index(op.direction, op.stage, op.microbatch);
          record(comm_positions(op.kind), x, to_string(op.kind), op.direction, op.stage,
                 op.microbatch, kPrimary);
          break;
        }
      }
    }
  }

  std::vector<int>& comm_positions(OpKind kind) {
    switch (kind) {
      case OpKind::kSendActivation: return send_act_pos_;
      case OpKind::kRecvActivation: return recv_act_pos_;
      case OpKind::kSendGrad: return send_grad_pos_;
      default: return recv_grad_pos_;
    }
  }

  // ---- Order on each rank: inputs before use, W after its Bz in FIFO order. ----

  // The forward of (d, s, m) at op i needs the output activation of (d, s-1, m).
  void need_activation(int rank, int i, int direction, int stage, int microbatch) {
    const std::optional<Item> input = forward_input(direction, stage, microbatch);
    if (!input) return;
    const int x = index(direction, input->stage, microbatch);
    auto item = [&] { return instance_name(direction, input->stage, microbatch); };
    const Op& op = program(rank)[i];
    if (owner(direction, input->stage) == rank) {
      const int j = f_pos_[x];
      if (j == kNone) {
        out_.add(rank, i, op, [&] {
          return cat("forward needs the output of F", item(),
                     " on this rank, which never computes it");
        });
      } else if (j >= i) {
        out_.add(rank, i, op, [&] {
          return cat("forward needs the output of F", item(), ", computed only later at op ", j);
        });
      }
      return;
    }
    const int j = recv_act_pos_[x];
    if (j == kNone) {
      out_.add(rank, i, op, [&] {
        return cat("forward needs the activation of ", item(), " from rank ",
                   owner(direction, input->stage), ", but this rank never receives it");
      });
    } else if (j > i) {
      out_.add(rank, i, op, [&] {
        return cat("forward needs the activation of ", item(), ", received only later at op ", j);
      });
    }
  }

  // The backward of (d, s, m) at op i needs its own forward and the input gradient of
  // (d, s+1, m).
  void need_forward_and_grad(int rank, int i, int direction, int stage, int microbatch) {
    const Op& op = program(rank)[i];
    const int own = f_pos_[index(direction, stage, microbatch)];
    if (own == kNone) {
      out_.add(rank, i, op, [&] {
        return cat("backward of ", instance_name(direction, stage, microbatch),
                   " whose forward never runs");
      });
    } else if (own >= i) {
      out_.add(rank, i, op, [&] {
        return cat("backward of ", instance_name(direction, stage, microbatch),
                   " before its forward at op ", own);
      });
    }
    // The last stage starts from its own loss.
    const std::optional<Item> input = backward_input(direction, stage, microbatch, num_stages_);
    if (!input) return;
    const int x = index(direction, input->stage, microbatch);
    auto item = [&] { return instance_name(direction, input->stage, microbatch); };
    if (owner(direction, input->stage) == rank) {
      const int j = b_pos_[x];
      if (j == kNone) {
        out_.add(rank, i, op, [&] {
          return cat("backward needs the input gradient of B", item(),
                     " on this rank, which never computes it");
        });
      } else if (j >= i) {
        out_.add(rank, i, op, [&] {
          return cat("backward needs the input gradient of B", item(),
                     ", computed only later at op ", j);
        });
      }
      return;
    }
    const int j = recv_grad_pos_[x];
    if (j == kNone) {
      out_.add(rank, i, op, [&] {
        return cat("backward needs the input gradient of ", item(), " from rank ",
                   owner(direction, input->stage), ", but this rank never receives it");
      });
    } else if (j > i) {
      out_.add(rank, i, op, [&] {
        return cat("backward needs the input gradient of ", item(), ", received only later at op ",
                   j);
      });
    }
  }

  // The deferred backwards of one rank in program order, and the next one a W must consume.
  struct DeferredQueue {
    std::vector<int> items;  // index() of each deferred backward
    std::vector<int> ops;    // its op position
    std::size_t head = 0;
    void push(int item, int op) {
      items.push_back(item);
      ops.push_back(op);
    }
  };

  void check_order(int rank) {
    const Program& ops = program(rank);
    // The executor keeps deferred backwards in a queue and each W pops the oldest one.
    DeferredQueue queue;
    for (int i = 0; i < static_cast<int>(ops.size()); ++i) {
      const Op& op = ops[i];
      const std::uint8_t flags = flags_[rank][i];
      if (flags == 0) continue;
      switch (op.kind) {
        case OpKind::kForward:
          need_activation(rank, i, op.direction, op.stage, op.microbatch);
          break;
        case OpKind::kBackward:
          need_forward_and_grad(rank, i, op.direction, op.stage, op.microbatch);
          if (op.defer_weight_grad) queue.push(index(op.direction, op.stage, op.microbatch), i);
          break;
        case OpKind::kForwardBackward:
          if (flags & kPrimary) need_activation(rank, i, op.direction, op.stage, op.microbatch);
          if (flags & kBackwardPrimary) {
            need_forward_and_grad(rank, i, op.backward_direction, op.backward_stage,
                                  op.backward_microbatch);
            if (op.defer_weight_grad) {
              queue.push(index(op.backward_direction, op.backward_stage, op.backward_microbatch),
                         i);
            }
          }
          break;
        case OpKind::kWeight: check_weight(rank, i, queue); break;
        case OpKind::kSendActivation:
        case OpKind::kSendGrad: check_send_after_producer(rank, i); break;
        case OpKind::kRecvActivation:
        case OpKind::kRecvGrad: break;  // checked where the item is consumed and against its send
      }
    }
    out_of_order_.clear();
  }

  // The W at op i: after a deferred backward of its micro-batch, and the oldest one waiting.
  void check_weight(int rank, int i, DeferredQueue& queue) {
    const Program& ops = program(rank);
    const Op& op = ops[i];
    const int x = index(op.direction, op.stage, op.microbatch);
    const int j = b_pos_[x];
    if (j == kNone) {
      out_.add(rank, i, op, [&] { return cat("W without any backward of its micro-batch"); });
    } else if (!deferred_[x]) {
      out_.add(rank, i, op, [&] {
        return cat("W for a full backward (op ", j,
                   " computes the weight gradient already; only a deferred one, Bz, "
                   "takes a W)");
      });
    } else if (j > i) {
      out_.add(rank, i, op, [&] { return cat("W before its deferred backward at op ", j); });
    } else {
      while (queue.head < queue.items.size() && w_consumed_out_of_order(queue.items[queue.head])) {
        ++queue.head;
      }
      if (queue.head < queue.items.size() && queue.items[queue.head] == x) {
        ++queue.head;
        return;
      }
      out_.add(rank, i, op, [&] {
        const std::string expected =
            queue.head < queue.items.size()
                ? cat("the oldest deferred backward without its W is at op ", queue.ops[queue.head],
                      " (", describe(ops[queue.ops[queue.head]]), ")")
                : std::string("no deferred backward is waiting");
        return cat("W out of FIFO order of this rank's deferred backwards: ", expected);
      });
      out_of_order_.push_back(x);
    }
  }

  // The send at op i comes after the compute op that produces its item on this rank.
  void check_send_after_producer(int rank, int i) {
    const Op& op = program(rank)[i];
    const bool activation = op.kind == OpKind::kSendActivation;
    const int x = index(op.direction, op.stage, op.microbatch);
    const int j = activation ? f_pos_[x] : b_pos_[x];
    if (j != kNone && j <= i) return;
    out_.add(rank, i, op, [&] {
      if (activation) {
        return j == kNone
                   ? cat("sends an activation this rank never computes")
                   : cat("sends the activation before the forward at op ", j, " produces it");
      }
      return j == kNone
                 ? cat("sends an input gradient this rank never computes")
                 : cat("sends the input gradient before the backward at op ", j, " produces it");
    });
  }

  // A W reported out of FIFO order leaves its Bz in the queue; skip it there so the one
  // problem is reported once. The list is tiny (it only grows on errors).
  bool w_consumed_out_of_order(int x) const {
    return std::find(out_of_order_.begin(), out_of_order_.end(), x) != out_of_order_.end();
  }

  // ---- Completeness: every instance forward once, backward once, W once per Bz. ----

  void check_complete() {
    for (int d = 0; d < num_directions_; ++d) {
      for (int s = 0; s < num_stages_; ++s) {
        const int rank = owner(d, s);
        for (int m = 0; m < num_microbatches_; ++m) {
          const int x = index(d, s, m);
          if (f_pos_[x] == kNone) {
            out_.add(rank, kNone, Op::forward(d, s, m), [&] {
              return cat("missing forward: stage (d=", d, ",s=", s, ") never runs micro-batch ", m);
            });
          }
          if (b_pos_[x] == kNone) {
            out_.add(rank, kNone, Op::backward(d, s, m), [&] {
              return cat("missing backward: stage (d=", d, ",s=", s,
                         ") never runs the backward of micro-batch ", m);
            });
          } else if (deferred_[x] && w_pos_[x] == kNone) {
            out_.add(rank, kNone, Op::weight(d, s, m),
                     [&] { return cat("missing W for the deferred backward at op ", b_pos_[x]); });
          }
        }
      }
    }
  }

  // ---- Communication: sends and receives pair up, in the same order on both ends. ----

  // Rank that receives the item of a (valid) communication op.
  int receiver(const Op& op) const { return owner(op.direction, consumer_stage(item_of(op))); }
  // Item key shared by a send and its receive.
  int item(const Op& op) const {
    const bool activation = item_of(op).kind == ItemKind::kActivation;
    return index(op.direction, op.stage, op.microbatch) * 2 + (activation ? 0 : 1);
  }
  // Whether a valid, first-occurrence comm op has its partner.
  bool matched(const Op& op) const {
    const int x = index(op.direction, op.stage, op.microbatch);
    const bool activation = item_of(op).kind == ItemKind::kActivation;
    return activation ? send_act_pos_[x] != kNone && recv_act_pos_[x] != kNone
                      : send_grad_pos_[x] != kNone && recv_grad_pos_[x] != kNone;
  }
  int send_position(int item_key) const {
    const int x = item_key / 2;
    return item_key % 2 == 0 ? send_act_pos_[x] : send_grad_pos_[x];
  }

  void check_unmatched_communication() {
    for (int rank = 0; rank < num_ranks_; ++rank) {
      const Program& ops = program(rank);
      for (int i = 0; i < static_cast<int>(ops.size()); ++i) {
        const Op& op = ops[i];
        if (!op.is_communication() || !(flags_[rank][i] & kPrimary) || matched(op)) continue;
        out_.add(rank, i, op, [&] {
          return op.is_send() ? cat("send without a receive: rank ", op.peer, " never receives it")
                              : cat("receive without a send: rank ", op.peer, " never sends it");
        });
      }
    }
  }

  struct Channel {
    std::vector<int> send_items, send_ops, recv_items, recv_ops;
  };

  void check_channel_order() {
    std::unordered_map<std::int64_t, Channel> channels;
    for (int rank = 0; rank < num_ranks_; ++rank) {
      const Program& ops = program(rank);
      for (int i = 0; i < static_cast<int>(ops.size()); ++i) {
        const Op& op = ops[i];
        if (!op.is_communication() || !(flags_[rank][i] & kPrimary) || !matched(op)) continue;
        if (op.is_send()) {
          Channel& c = channels[static_cast<std::int64_t>(rank) * num_ranks_ + op.peer];
          c.send_items.push_back(item(op));
          c.send_ops.push_back(i);
        } else {
          Channel& c = channels[static_cast<std::int64_t>(op.peer) * num_ranks_ + rank];
          c.recv_items.push_back(item(op));
          c.recv_ops.push_back(i);
        }
      }
    }
    std::vector<std::int64_t> keys;
    keys.reserve(channels.size());
    for (const auto& entry : channels) keys.push_back(entry.first);
    std::sort(keys.begin(), keys.end());
    for (std::int64_t key : keys) {
      const Channel& c = channels[key];
      const int from = static_cast<int>(key / num_ranks_);
      const int to = static_cast<int>(key % num_ranks_);
      // Matched items pair one to one, so both lists have the same length.
      for (std::size_t k = 0; k < c.recv_items.size(); ++k) {
        if (c.recv_items[k] == c.send_items[k]) continue;
        const Op& op = program(to)[c.recv_ops[k]];
        out_.add(to, c.recv_ops[k], op, [&] {
          const int j = c.send_ops[k];
          return cat("receives on channel ", from, "->", to,
                     " in a different order than they are sent: this is receive #", k,
                     " from rank ", from, ", but send #", k, " there is op ", j, " (",
                     describe(program(from)[j]), "); its own send is op ",
                     send_position(c.recv_items[k]), " (FIFO matching needs the same order)");
        });
        break;  // later positions of this channel are shifted by the same mistake
      }
    }
  }

  // ---- Deadlock: run all ranks with blocking receives and non-blocking sends. ----

  void check_deadlock() {
    std::vector<std::uint8_t> posted(
        static_cast<std::size_t>(num_directions_) * num_stages_ * num_microbatches_ * 2, 0);
    std::vector<int> pc(num_ranks_, 0);
    std::vector<int> waiting_for(num_ranks_, kNone);  // item key a blocked rank waits for
    std::vector<int> runnable;
    for (int rank = num_ranks_ - 1; rank >= 0; --rank) runnable.push_back(rank);
    while (!runnable.empty()) {
      const int rank = runnable.back();
      runnable.pop_back();
      const Program& ops = program(rank);
      const int size = static_cast<int>(ops.size());
      int& i = pc[rank];
      for (; i < size; ++i) {
        const Op& op = ops[i];
        // Ops that failed earlier checks (or have no partner) take no part: they are
        // reported already and would only add a confusing deadlock.
        if (!op.is_communication() || !(flags_[rank][i] & kPrimary) || !matched(op)) continue;
        const int key = item(op);
        if (op.is_send()) {
          posted[key] = 1;
          const int to = receiver(op);
          if (waiting_for[to] == key) {
            waiting_for[to] = kNone;
            runnable.push_back(to);
          }
        } else if (!posted[key]) {
          waiting_for[rank] = key;
          break;
        }
      }
    }
    for (int rank = 0; rank < num_ranks_; ++rank) {
      if (pc[rank] >= static_cast<int>(program(rank).size())) continue;
      const Op& op = program(rank)[pc[rank]];
      out_.add(rank, pc[rank], op, [&] {
        const int sender = op.peer;
        const int j = pc[sender];
        return cat("deadlock: blocks in this receive until rank ", sender, " posts its send (op ",
                   send_position(item(op)), "), but rank ", sender, " is itself blocked at op ", j,
                   " (", describe(program(sender)[j]), ")");
      });
    }
  }

  const Schedule& schedule_;
  const Placement& placement_;
  Collector& out_;
  int num_ranks_;
  int num_directions_;
  int num_stages_;
  int num_microbatches_;
  std::vector<int> owner_;  // [direction * num_stages + stage]
  // Op index (on the owner rank) of each instance's forward, backward and W, and of each
  // item's send and receive; indexed by index(d, s, m) of the producing instance.
  std::vector<int> f_pos_, b_pos_, w_pos_;
  std::vector<int> send_act_pos_, recv_act_pos_, send_grad_pos_, recv_grad_pos_;
  std::vector<std::uint8_t> deferred_;
  std::vector<std::vector<std::uint8_t>> flags_;  // [rank][op]
  std::vector<int> out_of_order_;
};

std::vector<ValidationError> collect(const Schedule& schedule, std::size_t max_problems,
                                     std::size_t* total) {
  Collector out(max_problems);
  Validator(schedule, out).run();
  *total = out.total();
  return out.take();
}

}  // namespace

std::string to_string(const ValidationError& error) {
  std::string where;
  if (error.rank != kNone) where = cat("rank ", error.rank, ", ");
  if (error.op_index != kNone) {
    where += cat("op ", error.op_index, " ", error.op, ": ");
  } else if (!error.op.empty() && error.rank != kNone) {
    where += cat(error.op, ": ");
  }
  return where + error.reason;
}

ScheduleError::ScheduleError(const std::string& schedule_name,
                             std::vector<ValidationError> problems, std::size_t total_problems)
    : std::invalid_argument(cat(
          "invalid schedule '", schedule_name,
          "': ", problems.empty() ? std::string("unknown problem") : to_string(problems.front()),
          total_problems > 1 ? cat(" (and ", total_problems - 1, " more problem",
                                   total_problems > 2 ? "s" : "", ")")
                             : std::string())),
      problems_(std::move(problems)),
      total_problems_(total_problems) {}

std::vector<ValidationError> find_problems(const Schedule& schedule, std::size_t max_problems) {
  std::size_t total = 0;
  return collect(schedule, max_problems, &total);
}

void validate(const Schedule& schedule) {
  std::size_t total = 0;
  std::vector<ValidationError> problems = collect(schedule, kDefaultMaxProblems, &total);
  if (total > 0) throw ScheduleError(schedule.name, std::move(problems), total);
}

}  // namespace dualpipe::schedule
