#include "dualpipe/schedule/registry.h"

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
  Schedule (*build)(int num_ranks, int num_microbatches);
  // Where the schedule puts its stages; equal to build(...).placement for every accepted size.
  Placement (*placement)(int num_ranks);
  // Accepted rank counts: a positive multiple of this (DualPipe pairs rank r with R-1-r).
  int rank_multiple;
};

// A constant table, not a mutable registry: new schedules are added here.
constexpr Entry kSchedules[] = {
    {"dualpipe", build_dualpipe, Placement::bidirectional, 2},
    {"dualpipev", build_dualpipev, Placement::v_shape, 1},
    {"1f1b", build_1f1b, one_stage_per_rank, 1},
    {"zb1p", build_zb1p, one_stage_per_rank, 1},
    {"gpipe", build_gpipe, one_stage_per_rank, 1},
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

Schedule build_schedule(const std::string& name, int num_ranks, int num_microbatches) {
  return find_entry(name).build(num_ranks, num_microbatches);
}

Placement schedule_placement(const std::string& name, int num_ranks) {
  const Entry& entry = find_entry(name);
  if (num_ranks < entry.rank_multiple || num_ranks % entry.rank_multiple != 0) {
    throw std::invalid_argument(
        "schedule \"" + name + "\" needs num_ranks to be a positive multiple of " +
        std::to_string(entry.rank_multiple) + ", got num_ranks=" + std::to_string(num_ranks));
  }
  return entry.placement(num_ranks);
}

}  // namespace dualpipe::schedule
