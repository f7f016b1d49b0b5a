#include "dualpipe/schedule/registry.h"

#include <algorithm>
#include <stdexcept>

#include "dualpipe/schedule/dualpipe.h"
#include "dualpipe/schedule/dualpipev.h"
#include "dualpipe/schedule/gpipe.h"
#include "dualpipe/schedule/one_f_one_b.h"
#include "dualpipe/schedule/zero_bubble.h"

namespace dualpipe::schedule {
namespace {

Placement one_stage_per_rank(int num_ranks) {
  return Placement::round_robin(num_ranks, num_ranks);
}

struct Entry {
  const char* name;
  const char* summary;
  Schedule (*build)(int num_ranks, int num_microbatches);
  // Where the schedule puts its stages; equal to build(...).placement for every accepted size.
  Placement (*placement)(int num_ranks);
  // Accepted sizes (see ScheduleFacts).
  int rank_multiple;
  int microbatch_multiple;
  int min_microbatches_per_rank;
  PublishedFigures (*published)(int num_ranks, int num_microbatches, const PublishedCosts& costs);
};

// A constant table, not a mutable registry: new schedules are added here.
constexpr Entry kSchedules[] = {
    {"dualpipe", "DualPipe: both directions on every rank, F&B overlapped, W deferred",
     build_dualpipe, Placement::bidirectional, 2, 2, 2, dualpipe_figures},
    {"dualpipev", "DualPipeV: DualPipe's schedule on half the ranks, two stages per rank in a V",
     build_dualpipev, Placement::v_shape, 1, 1, 2, dualpipev_figures},
    {"1f1b", "1F1B: one forward, one backward in the steady state", build_1f1b, one_stage_per_rank,
     1, 1, 0, one_f_one_b_figures},
    {"zb1p", "ZB1P: 1F1B with weight gradients deferred into the bubbles", build_zb1p,
     one_stage_per_rank, 1, 1, 0, zb1p_figures},
    {"gpipe", "GPipe: all forwards, then all backwards", build_gpipe, one_stage_per_rank, 1, 1, 0,
     gpipe_figures},
};

const Entry& find_entry(const std::string& name) {
  std::string allowed;
  for (const Entry& entry : kSchedules) {
    if (name == entry.name) return entry;
    allowed += allowed.empty() ? entry.name : std::string(", ") + entry.name;
  }
  throw std::invalid_argument("unknown schedule \"" + name + "\", allowed: " + allowed);
}

}  // namespace

std::vector<std::string> schedule_names() {
  std::vector<std::string> names;
  for (const Entry& entry : kSchedules) names.emplace_back(entry.name);
  return names;
}

void check_size_limits(int num_ranks, int num_microbatches) {
  const long long product = static_cast<long long>(num_ranks) * num_microbatches;
  if (num_ranks < 1 || num_ranks > kMaxRanks || num_microbatches < 0 ||
      product > kMaxRankMicrobatches) {
    throw std::invalid_argument(
        "schedule sizes out of range: got num_ranks=" + std::to_string(num_ranks) +
        ", num_microbatches=" + std::to_string(num_microbatches) +
        "; accepted: 1 <= num_ranks <= " + std::to_string(kMaxRanks) +
        " and num_ranks * num_microbatches <= " + std::to_string(kMaxRankMicrobatches));
  }
}

Schedule build_schedule(const std::string& name, int num_ranks, int num_microbatches) {
  const Entry& entry = find_entry(name);
  check_size_limits(num_ranks, num_microbatches);
  const ScheduleFacts facts = schedule_facts(name);
  if (!facts.accepts(num_ranks, num_microbatches)) {
    // NOTE: the builder's own message first (callers match on it), then what is accepted.
    std::string message;
    try {
      entry.build(num_ranks, num_microbatches);
    } catch (const std::invalid_argument& e) {
      message = std::string(e.what()) + "; ";
    }
    message += "schedule \"" + name + "\" accepts " + facts.accepted_sizes(num_ranks);
    if (message.find(", got ") == std::string::npos) {
      message += ", got num_ranks=" + std::to_string(num_ranks) +
                 ", num_microbatches=" + std::to_string(num_microbatches);
    }
    const int nearest = facts.smallest_microbatches(num_ranks, num_microbatches);
    if (nearest > 0) message += " (num_microbatches=" + std::to_string(nearest) + " would do)";
    throw std::invalid_argument(message);
  }
  return entry.build(num_ranks, num_microbatches);
}

ScheduleFacts schedule_facts(const std::string& name) {
  const Entry& entry = find_entry(name);
  return ScheduleFacts{entry.name, entry.summary, entry.rank_multiple, entry.microbatch_multiple,
                       entry.min_microbatches_per_rank};
}

bool is_schedule_name(const std::string& name) {
  for (const Entry& entry : kSchedules) {
    if (name == entry.name) return true;
  }
  return false;
}

bool ScheduleFacts::accepts(int num_ranks, int num_microbatches) const {
  return num_ranks >= rank_multiple && num_ranks % rank_multiple == 0 && num_microbatches >= 1 &&
         num_microbatches % microbatch_multiple == 0 &&
         num_microbatches >= min_microbatches_per_rank * num_ranks;
}

std::string ScheduleFacts::accepted_sizes(int num_ranks) const {
  std::string text = "num_ranks a positive multiple of " + std::to_string(rank_multiple) +
                     " and num_microbatches >= 1";
  if (microbatch_multiple > 1) text += ", a multiple of " + std::to_string(microbatch_multiple);
  if (min_microbatches_per_rank > 0) {
    text += ", >= " + std::to_string(min_microbatches_per_rank) + " * num_ranks (" +
            std::to_string(min_microbatches_per_rank * static_cast<long long>(num_ranks)) +
            " for num_ranks=" + std::to_string(num_ranks) + ")";
  }
  return text;
}

int ScheduleFacts::smallest_microbatches(int num_ranks, int at_least) const {
  if (num_ranks < rank_multiple || num_ranks % rank_multiple != 0) return -1;
  long long m = std::max<long long>(
      {1, at_least, static_cast<long long>(min_microbatches_per_rank) * num_ranks});
  m = (m + microbatch_multiple - 1) / microbatch_multiple * microbatch_multiple;
  return m > kMaxRankMicrobatches ? -1 : static_cast<int>(m);
}

PublishedFigures published_figures(const std::string& name, int num_ranks, int num_microbatches,
                                   const PublishedCosts& costs) {
  return find_entry(name).published(num_ranks, num_microbatches, costs);
}

Placement schedule_placement(const std::string& name, int num_ranks) {
  const Entry& entry = find_entry(name);
  check_size_limits(num_ranks, 0);
  if (num_ranks < entry.rank_multiple || num_ranks % entry.rank_multiple != 0) {
    throw std::invalid_argument(
        "schedule \"" + name + "\" needs num_ranks to be a positive multiple of " +
        std::to_string(entry.rank_multiple) + ", got num_ranks=" + std::to_string(num_ranks));
  }
  return entry.placement(num_ranks);
}

}  // namespace dualpipe::schedule
