#include "dualpipe/schedule/controllable_memory.h"

#include <algorithm>
#include <array>
#include <deque>
#include <functional>
#include <queue>
#include <tuple>
#include <vector>

#include "builder_support.h"
#include "dualpipe/check.h"
#include "dualpipe/schedule/communication.h"

namespace dualpipe::schedule {
namespace {

// NOTE: the authors' vocabulary, kept so the two read side by side. A rank ("stage" there) runs
// six kinds of node per micro-batch, each one time slot long in the building block:
enum NodeType : int {
  kF = 0,  // forward on the way down (stage r)
  kf = 1,  // forward on the way back (stage 2R-1-r)
  kB = 2,  // input-gradient backward on the way back (stage 2R-1-r; runs first, from the loss)
  kb = 3,  // input-gradient backward on the way down (stage r)
  kW = 4,  // weight gradients (of kB when split)
  kw = 5,  // weight gradients of kb (only when split)
};
constexpr int kSlotsPerMicrobatch = 6;

// Times[type][microbatch]: the slot of each node of one rank; each list ascending.
using Times = std::vector<std::vector<int>>;

// The building blocks: the slots of F, f, B, b of micro-batch 0 on each rank; micro-batch m is
// the same block kSlotsPerMicrobatch * m later. Their lifespans set the peak memory.
std::vector<std::array<int, 4>> v_min_block(int num_ranks) {
  const int interval = num_ranks % 3 == 0 ? 2 : 0;
  std::vector<std::array<int, 4>> block;
  for (int i = 0; i < num_ranks; ++i) {
    block.push_back(
        {i, 2 * num_ranks - i - 1, 2 * num_ranks + interval + i, 4 * num_ranks + interval - i - 1});
  }
  return block;
}

std::vector<std::array<int, 4>> v_half_block(int num_ranks) {
  const int interval = num_ranks % 2 == 0 ? 3 : 0;
  std::vector<std::array<int, 4>> block;
  for (int i = 0; i < num_ranks; ++i) {
    block.push_back({2 * i, 3 * num_ranks - i - 2, 3 * num_ranks + interval + 2 * i - 1,
                     6 * num_ranks + interval - i - 2});
  }
  return block;
}

int last_slot(const Times& times) {
  int last = -1;
  for (const std::vector<int>& type : times) {
    if (!type.empty()) last = std::max(last, type.back());
  }
  return last;
}

// The next node in slot order among types [0, num_types): (slot, type), or slot = -1 when all
// are placed. `next[type]` indexes each list.
std::pair<int, int> earliest(const Times& times, const std::vector<int>& next, int num_types) {
  std::pair<int, int> best{-1, -1};
  for (int t = 0; t < num_types; ++t) {
    if (next[t] >= static_cast<int>(times[t].size())) continue;
    if (best.first < 0 || times[t][next[t]] < best.first) best = {times[t][next[t]], t};
  }
  return best;
}

// Appends the W list(s): each W takes the first free slot after a backward, in slot order; the
// ones left go after the last slot. split: W of B in list kW, W of b in list kw (the authors'
// put_w).
void put_weights(Times& times, bool split) {
  const int bound = last_slot(times);
  times.resize(split ? 6 : 5);
  int pending[2] = {0, 0};
  std::vector<int> next(4, 0);
  for (int i = 0; i <= bound; ++i) {
    const auto [slot, type] = earliest(times, next, 4);
    DUALPIPE_ASSERT(slot >= 0, "a rank's nodes ended before its last slot");
    if (slot == i) {
      ++next[type];
      if (type == kB || type == kb) ++pending[split ? type - kB : 0];
      continue;
    }
    for (int w = 0; w < 2; ++w) {
      if (pending[w] > 0) {
        times[kW + w].push_back(i);
        --pending[w];
        break;
      }
    }
  }
  int i = bound;
  for (int w = 0; w < 2; ++w) {
    for (; pending[w] > 0; --pending[w]) times[kW + w].push_back(++i);
  }
}

// Peak activations of one rank: +1 at F and f, -1 at W; without W lists, each free slot after a
// backward counts as its W (the authors' mem_of_stage).
int peak_memory(const Times& times) {
  constexpr int kMemory[] = {1, 1, 0, 0, -1};
  const int num_types = static_cast<int>(times.size());
  const bool has_weights = num_types > 4;
  const int bound = last_slot(times);
  std::vector<int> next(num_types, 0);
  int pending = 0, current = 0, peak = 0;
  for (int i = 0; i <= bound; ++i) {
    const auto [slot, type] = earliest(times, next, num_types);
    if (slot == i) {
      ++next[type];
      current += kMemory[type];
      if (type == kB || type == kb) ++pending;
    } else if (!has_weights && pending > 0) {
      current += kMemory[kW];
      --pending;
    }
    peak = std::max(peak, current);
  }
  return peak;
}

// Visits every node of every rank in global slot order (ties: lower rank, then lower type), as
// the authors' loops do: visit(rank, type, microbatch). Only the visited node may be moved.
void for_each_in_slot_order(std::vector<Times>& ranks,
                            const std::function<void(int, int, int)>& visit) {
  using Head = std::tuple<int, int, int>;  // slot, rank, type
  std::priority_queue<Head, std::vector<Head>, std::greater<Head>> heads;
  std::vector<std::vector<int>> next(ranks.size());
  for (int r = 0; r < static_cast<int>(ranks.size()); ++r) {
    next[r].assign(ranks[r].size(), 0);
    for (int t = 0; t < static_cast<int>(ranks[r].size()); ++t) {
      if (!ranks[r][t].empty()) heads.push({ranks[r][t][0], r, t});
    }
  }
  while (!heads.empty()) {
    const auto [slot, r, t] = heads.top();
    heads.pop();
    const int m = next[r][t]++;
    // NOTE: the successor's slot is read before the visit moves node m, as the authors' loop
    // picks its next node from the lists as they are then.
    const bool more = next[r][t] < static_cast<int>(ranks[r][t].size());
    const int successor = more ? ranks[r][t][next[r][t]] : 0;
    visit(r, t, m);
    if (more) heads.push({successor, r, t});
  }
}

// Unit-cost eager execution ("squeeze"): every node starts when its rank is free and its inputs
// are done; returns the start slots. F and B flow down the ranks, f and b up, each kind after
// the one before it on the same rank (F, f, B, b), each micro-batch after the previous one.
std::vector<Times> squeeze(std::vector<Times> ranks) {
  const int num_ranks = static_cast<int>(ranks.size());
  std::vector<Times> end(num_ranks);
  for (int r = 0; r < num_ranks; ++r) {
    for (const std::vector<int>& type : ranks[r]) end[r].emplace_back(type.size(), -1);
  }
  std::vector<int> rank_free(num_ranks, 0);
  for_each_in_slot_order(ranks, [&](int r, int t, int m) {
    int ready = rank_free[r];
    auto after = [&](int rank, int type) {
      const int done = end[rank][type][m];
      DUALPIPE_ASSERT(done >= 0, "a node runs before its input");
      ready = std::max(ready, done);
    };
    if ((t == kF || t == kB) && r > 0) after(r - 1, t);
    if ((t == kf || t == kb) && r + 1 < num_ranks) after(r + 1, t);
    if (t > kF && t < kW) after(r, t - 1);
    if (m > 0) ready = std::max(ready, end[r][t][m - 1]);
    end[r][t][m] = ready + 1;
    rank_free[r] = ready + 1;
  });
  for (int r = 0; r < num_ranks; ++r) {
    for (std::vector<int>& type : end[r]) {
      for (int& slot : type) --slot;
    }
  }
  return end;
}

// The authors' reorder: moves nodes to earlier free slots their inputs allow, as long as no
// rank's peak memory grows, except from the first b on rank 0 to the last F (the steady state,
// kept as the block made it) and, when the W's are not placed yet, before that.
std::vector<Times> reorder(std::vector<Times> ranks, bool with_weights) {
  const int num_ranks = static_cast<int>(ranks.size());
  const int num_microbatches = static_cast<int>(ranks[0][kF].size());
  if (with_weights) {
    for (Times& times : ranks) put_weights(times, /*split=*/false);
  }
  int limit = 0;
  for (const Times& times : ranks) limit = std::max(limit, peak_memory(times));
  std::vector<std::vector<bool>> occupied(num_ranks);
  for (int r = 0; r < num_ranks; ++r) occupied[r].assign(last_slot(ranks[r]) + 1, false);

  int phase = 0;
  for_each_in_slot_order(ranks, [&](int r, int t, int m) {
    std::vector<int>& slots = ranks[r][t];
    const int slot = slots[m];
    if (t == kb && r == 0 && phase == 0) phase = 1;
    const bool keep = phase == 1 || (phase == 0 && !with_weights);
    if (phase == 1 && t == kF && m == num_microbatches - 1) phase = 2;
    if (keep) {
      occupied[r][slot] = true;
      return;
    }
    int earliest_slot = -1;
    if ((t == kF || t == kB) && r > 0) earliest_slot = std::max(earliest_slot, ranks[r - 1][t][m]);
    if ((t == kf || t == kb) && r + 1 < num_ranks) {
      earliest_slot = std::max(earliest_slot, ranks[r + 1][t][m]);
    }
    if (t > kF && t < kW) earliest_slot = std::max(earliest_slot, ranks[r][t - 1][m]);
    if (t == kW) {
      // The m-th W follows the m-th backward of either kind.
      std::vector<int> backwards = ranks[r][kB];
      backwards.insert(backwards.end(), ranks[r][kb].begin(), ranks[r][kb].end());
      std::nth_element(backwards.begin(), backwards.begin() + m, backwards.end());
      earliest_slot = std::max(earliest_slot, backwards[m]);
    }
    if (m > 0) earliest_slot = std::max(earliest_slot, slots[m - 1]);
    ++earliest_slot;
    DUALPIPE_ASSERT(earliest_slot <= slot, "a node's inputs come after it");
    bool moved = false;
    for (int candidate = earliest_slot; candidate < slot && !moved; ++candidate) {
      if (occupied[r][candidate]) continue;
      slots[m] = candidate;
      moved = peak_memory(ranks[r]) <= limit;
    }
    if (!moved) slots[m] = slot;
    occupied[r][slots[m]] = true;
  });
  if (!with_weights) {
    for (Times& times : ranks) put_weights(times, /*split=*/false);
  }
  return squeeze(std::move(ranks));
}

// The authors' schedule_from_pattern: the block repeated M times, reordered with W's, reordered
// again without them, and the W's put into the free slots.
std::vector<Times> schedule_from_block(const std::vector<std::array<int, 4>>& block,
                                       int num_microbatches) {
  std::vector<Times> ranks;
  for (const std::array<int, 4>& first : block) {
    Times times(4);
    for (int t = 0; t < 4; ++t) {
      for (int m = 0; m < num_microbatches; ++m) {
        times[t].push_back(first[t] + kSlotsPerMicrobatch * m);
      }
    }
    ranks.push_back(std::move(times));
  }
  ranks = reorder(std::move(ranks), /*with_weights=*/true);
  for (Times& times : ranks) times.resize(4);
  ranks = reorder(std::move(ranks), /*with_weights=*/false);
  for (Times& times : ranks) {
    times.resize(4);
    put_weights(times, /*split=*/true);
  }
  return ranks;
}

// The rank's program in slot order (ties: lower type first). Each W runs the oldest pending
// Bz's weight gradients: the slots of the W's are the authors', the queue is ours.
Program rank_program(const Times& times, int num_ranks, int rank) {
  const int down = rank, back = 2 * num_ranks - 1 - rank;
  std::vector<int> next(times.size(), 0);
  std::deque<Op> deferred;
  Program program;
  for (auto [slot, type] = earliest(times, next, 6); slot >= 0;
       std::tie(slot, type) = earliest(times, next, 6)) {
    const int m = next[type]++;
    switch (type) {
      case kF: program.push_back(Op::forward(0, down, m)); break;
      case kf: program.push_back(Op::forward(0, back, m)); break;
      case kB:
      case kb: {
        const int stage = type == kB ? back : down;
        program.push_back(Op::backward(0, stage, m, /*defer_weight_grad=*/true));
        deferred.push_back(Op::weight(0, stage, m));
        break;
      }
      default:
        DUALPIPE_ASSERT(!deferred.empty(), "rank ", rank, ": a W before any backward");
        program.push_back(deferred.front());
        deferred.pop_front();
    }
  }
  DUALPIPE_ASSERT(deferred.empty(), "rank ", rank, ": ", deferred.size(), " Bz without a W");
  return program;
}

Schedule build_from_block(const char* name, const std::vector<std::array<int, 4>>& block,
                          int num_ranks, int num_microbatches) {
  Schedule schedule{name, num_microbatches, Placement::v_shape(num_ranks), {}};
  const std::vector<Times> ranks = schedule_from_block(block, num_microbatches);
  for (int rank = 0; rank < num_ranks; ++rank) {
    schedule.programs.push_back(rank_program(ranks[rank], num_ranks, rank));
  }
  insert_communication(schedule);
  return schedule;
}

}  // namespace

Schedule build_v_half(int num_ranks, int num_microbatches) {
  detail::check_sizes_at_least_one("V-Half", num_ranks, num_microbatches);
  return build_from_block("v-half", v_half_block(num_ranks), num_ranks, num_microbatches);
}

Schedule build_v_min(int num_ranks, int num_microbatches) {
  detail::check_sizes_at_least_one("V-Min", num_ranks, num_microbatches);
  return build_from_block("v-min", v_min_block(num_ranks), num_ranks, num_microbatches);
}

}  // namespace dualpipe::schedule
