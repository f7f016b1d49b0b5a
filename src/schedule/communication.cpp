#include "dualpipe/schedule/communication.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "dualpipe/check.h"
#include "dualpipe/schedule/item.h"

namespace dualpipe::schedule {
namespace {

// Dense tables over (direction, stage, microbatch) so the pass stays linear in the op count.
class ItemIndex {
 public:
  ItemIndex(int num_directions, int num_stages, int num_microbatches)
      : num_stages_(num_stages), num_microbatches_(num_microbatches) {
    consumer_.assign(2 * static_cast<std::size_t>(num_directions) * num_stages * num_microbatches,
                     -1);
  }
  int& consumer(const Item& item) {
    std::size_t key =
        ((static_cast<std::size_t>(item.direction) * num_stages_ + item.stage) * num_microbatches_ +
         item.microbatch) *
            2 +
        (item.kind == ItemKind::kGrad ? 1 : 0);
    return consumer_[key];
  }

 private:
  int num_stages_;
  int num_microbatches_;
  std::vector<int> consumer_;  // compute-op index on the consuming rank, -1 if none
};

[[noreturn]] void fail(int rank, std::size_t index, const Op& op, const std::string& why) {
  throw std::invalid_argument("insert_communication: rank " + std::to_string(rank) + ", op " +
                              std::to_string(index) + " " + describe(op) + ": " + why);
}

// The items one rank sends to one peer, in the sender's order (a FIFO channel).
struct Channel {
  int receiver;
  std::vector<Item> items;
};

// One receive to place: item `item` of `channel`.
struct RecvRef {
  const Channel* channel;
  int item;
};

// The pass over one schedule, one method per step (see insert_communication).
class CommunicationPass {
 public:
  explicit CommunicationPass(Schedule& schedule)
      : schedule_(schedule),
        num_ranks_(schedule.placement.num_ranks()),
        num_directions_(schedule.placement.num_directions()),
        num_stages_(schedule.placement.num_stages()) {
    DUALPIPE_CHECK(static_cast<int>(schedule.programs.size()) == num_ranks_,
                   "insert_communication: schedule has ", schedule.programs.size(),
                   " programs for num_ranks=", num_ranks_);
    // Placement::at() checks its arguments; the pass looks ranks up once per op, so it uses a
    // plain table after validating each op's stage once.
    rank_table_.resize(static_cast<std::size_t>(num_directions_) * num_stages_);
    for (int d = 0; d < num_directions_; ++d) {
      for (int s = 0; s < num_stages_; ++s) {
        rank_table_[d * num_stages_ + s] = schedule.placement.rank_of(d, s);
      }
    }
  }

  void run() {
    ItemIndex index(num_directions_, num_stages_, check_compute_ops() + 1);
    note_first_consumers(index);
    collect_channels();
    place_receives(index);
    for (int rank = 0; rank < num_ranks_; ++rank) schedule_.programs[rank] = assemble(rank);
  }

 private:
  int rank_of(int direction, int stage) const {
    return rank_table_[direction * num_stages_ + stage];
  }

  // Checks what the pass relies on; returns the largest micro-batch number.
  int check_compute_ops() const {
    int max_microbatch = -1;
    auto check_stage = [&](int rank, std::size_t i, const Op& op, int direction, int stage,
                           int microbatch) {
      if (direction < 0 || direction >= num_directions_ || stage < 0 || stage >= num_stages_ ||
          microbatch < 0) {
        fail(rank, i, op, "no such stage instance or micro-batch");
      }
      if (rank_of(direction, stage) != rank) {
        fail(rank, i, op,
             "stage instance lives on rank " + std::to_string(rank_of(direction, stage)));
      }
      max_microbatch = std::max(max_microbatch, microbatch);
    };
    for (int rank = 0; rank < num_ranks_; ++rank) {
      const Program& program = schedule_.programs[rank];
      for (std::size_t i = 0; i < program.size(); ++i) {
        const Op& op = program[i];
        if (op.is_communication()) fail(rank, i, op, "expected compute ops only");
        check_stage(rank, i, op, op.direction, op.stage, op.microbatch);
        if (op.kind == OpKind::kForwardBackward) {
          check_stage(rank, i, op, op.backward_direction, op.backward_stage,
                      op.backward_microbatch);
        }
      }
    }
    return max_microbatch;
  }

  bool produced_elsewhere(const std::optional<Item>& item, int rank) const {
    return item && rank_of(item->direction, item->stage) != rank;
  }

  // What a compute op consumes from another rank: at most one activation and one gradient.
  template <typename Use>
  void for_each_remote_input(int rank, const Op& op, Use&& use) const {
    if (op.kind == OpKind::kForward || op.kind == OpKind::kForwardBackward) {
      const std::optional<Item> input = forward_input(op.direction, op.stage, op.microbatch);
      if (produced_elsewhere(input, rank)) use(*input);
    }
    auto backward = [&](int direction, int stage, int microbatch) {
      const std::optional<Item> input = backward_input(direction, stage, microbatch, num_stages_);
      if (produced_elsewhere(input, rank)) use(*input);
    };
    if (op.kind == OpKind::kBackward) backward(op.direction, op.stage, op.microbatch);
    if (op.kind == OpKind::kForwardBackward) {
      backward(op.backward_direction, op.backward_stage, op.backward_microbatch);
    }
  }

  // What a compute op produces for other ranks, in send order (FB: activation, then gradient).
  template <typename Emit>
  void for_each_send(int rank, const Op& op, Emit&& emit) const {
    auto send = [&](const std::optional<Item>& item) {
      if (!item) return;
      const int peer = rank_of(item->direction, consumer_stage(*item));
      if (peer != rank) emit(*item, peer);
    };
    if (op.kind == OpKind::kForward || op.kind == OpKind::kForwardBackward) {
      send(forward_output(op.direction, op.stage, op.microbatch, num_stages_));
    }
    if (op.kind == OpKind::kBackward) send(backward_output(op.direction, op.stage, op.microbatch));
    if (op.kind == OpKind::kForwardBackward) {
      send(backward_output(op.backward_direction, op.backward_stage, op.backward_microbatch));
    }
  }

  // Pass 1: consumers. Only the first consumer counts (a valid schedule has exactly one).
  void note_first_consumers(ItemIndex& index) const {
    for (int rank = 0; rank < num_ranks_; ++rank) {
      const Program& program = schedule_.programs[rank];
      for (std::size_t i = 0; i < program.size(); ++i) {
        for_each_remote_input(rank, program[i], [&](const Item& item) {
          if (index.consumer(item) < 0) index.consumer(item) = static_cast<int>(i);
        });
      }
    }
  }

  // Pass 2: channel contents in the sender's order. A rank talks to few peers (at most four in
  // every schedule here), so each sender keeps a short list of channels searched linearly.
  void collect_channels() {
    channels_.assign(num_ranks_, {});
    for (int rank = 0; rank < num_ranks_; ++rank) {
      std::vector<Channel>& out = channels_[rank];
      for (const Op& op : schedule_.programs[rank]) {
        for_each_send(rank, op, [&](const Item& item, int peer) {
          for (Channel& channel : out) {
            if (channel.receiver == peer) {
              channel.items.push_back(item);
              return;
            }
          }
          out.push_back(Channel{peer, {item}});
        });
      }
      std::sort(out.begin(), out.end(),
                [](const Channel& a, const Channel& b) { return a.receiver < b.receiver; });
    }
  }

  // Pass 3: receives. Walking each channel backwards gives the suffix minimum of consumer
  // positions: receive j must precede its own consumer and, because the channel is FIFO, every
  // later item's receive, hence every later item's consumer. Channels are visited by sender, so
  // a stable bucket order puts receives before one op by peer, then channel order.
  // NOTE: the output is tens of MB for large schedules; the intermediates stay small (8 bytes
  // per receive) because memory traffic, not arithmetic, bounds this pass.
  void place_receives(ItemIndex& index) {
    positions_.assign(num_ranks_, {});
    refs_.assign(num_ranks_, {});
    for (int sender = 0; sender < num_ranks_; ++sender) {
      for (const Channel& channel : channels_[sender]) {
        const int receiver = channel.receiver;
        const std::vector<Item>& items = channel.items;
        std::vector<int>& position = positions_[receiver];
        const std::size_t base = position.size();
        position.resize(base + items.size());
        int earliest = static_cast<int>(schedule_.programs[receiver].size());
        for (std::size_t j = items.size(); j-- > 0;) {
          int consumer = index.consumer(items[j]);
          if (consumer >= 0) earliest = std::min(earliest, consumer);
          position[base + j] = earliest;
        }
        for (std::size_t j = 0; j < items.size(); ++j) {
          refs_[receiver].push_back({&channel, static_cast<int>(j)});
        }
      }
    }
  }

  // Rank `rank`'s full program: its compute ops with the receives placed before them and the
  // sends right after the ops that produce them.
  Program assemble(int rank) const {
    const Program& compute = schedule_.programs[rank];
    const std::vector<int>& position = positions_[rank];
    // Stable counting sort of the receives by position (linear, unlike a comparison sort).
    std::vector<int> first(compute.size() + 2, 0);
    for (int p : position) ++first[p + 1];
    for (std::size_t i = 1; i < first.size(); ++i) first[i] += first[i - 1];
    std::vector<int> sorted(position.size());
    {
      std::vector<int> next(first.begin(), first.end() - 1);
      for (std::size_t k = 0; k < position.size(); ++k) sorted[next[position[k]]++] = k;
    }
    std::size_t num_sends = 0;
    for (const Op& op : compute) for_each_send(rank, op, [&](const Item&, int) { ++num_sends; });
    Program full;
    full.reserve(compute.size() + position.size() + num_sends);
    auto emit_recvs = [&](std::size_t i) {
      for (int k = first[i]; k < first[i + 1]; ++k) {
        const RecvRef& ref = refs_[rank][sorted[k]];
        const Item& item = ref.channel->items[ref.item];
        full.push_back(recv_op(item, rank_of(item.direction, item.stage)));
      }
    };
    for (std::size_t i = 0; i < compute.size(); ++i) {
      emit_recvs(i);
      full.push_back(compute[i]);
      for_each_send(rank, compute[i],
                    [&](const Item& item, int peer) { full.push_back(send_op(item, peer)); });
    }
    emit_recvs(compute.size());
    return full;
  }

  Schedule& schedule_;
  const int num_ranks_;
  const int num_directions_;
  const int num_stages_;
  std::vector<int> rank_table_;
  std::vector<std::vector<Channel>> channels_;  // channels_[sender]
  std::vector<std::vector<int>> positions_;     // per receiver, in visiting order
  std::vector<std::vector<RecvRef>> refs_;
};

}  // namespace

void insert_communication(Schedule& schedule) {
  CommunicationPass(schedule).run();
}

}  // namespace dualpipe::schedule
