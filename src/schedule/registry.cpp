#include "dualpipe/schedule/registry.h"

#include <algorithm>
#include <stdexcept>

#include "dualpipe/schedule/controllable_memory.h"
#include "dualpipe/schedule/dualpipe.h"
#include "dualpipe/schedule/dualpipev.h"
#include "dualpipe/schedule/gpipe.h"
#include "dualpipe/schedule/interleaved_1f1b.h"
#include "dualpipe/schedule/list_schedule.h"
#include "dualpipe/schedule/one_f_one_b.h"
#include "dualpipe/schedule/zbv.h"
#include "dualpipe/schedule/zero_bubble.h"

namespace dualpipe::schedule {
namespace {

// The table's uniform signatures: builders, placements and figures of the schedules with a
// fixed number of stages per rank ignore it (the registry has checked it).
template <Schedule (*Build)(int, int)>
Schedule fixed(int num_ranks, int num_microbatches, int) {
  return Build(num_ranks, num_microbatches);
}
template <Placement (*Place)(int)>
Placement fixed_placement(int num_ranks, int) {
  return Place(num_ranks);
}
template <PublishedFigures (*Figures)(int, int, const PublishedCosts&)>
PublishedFigures fixed_figures(int num_ranks, int num_microbatches, int,
                               const PublishedCosts& costs) {
  return Figures(num_ranks, num_microbatches, costs);
}

Placement one_stage_per_rank(int num_ranks, int) {
  return Placement::round_robin(num_ranks, num_ranks);
}
Placement loop(int num_ranks, int stages_per_rank) {
  return Placement::round_robin(num_ranks, num_ranks * stages_per_rank);
}

struct Entry {
  const char* name;
  const char* summary;
  Schedule (*build)(int num_ranks, int num_microbatches, int stages_per_rank);
  // Where the schedule puts its stages; equal to build(...).placement for every accepted size.
  Placement (*placement)(int num_ranks, int stages_per_rank);
  // Accepted sizes (see ScheduleFacts).
  int rank_multiple;
  int microbatch_multiple;
  int min_microbatches_per_rank;
  bool microbatches_in_rounds;
  int stages_per_rank;
  bool stages_per_rank_choosable;
  PublishedFigures (*published)(int num_ranks, int num_microbatches, int stages_per_rank,
                                const PublishedCosts& costs);
};

// A constant table, not a mutable registry: new schedules are added here.
constexpr Entry kSchedules[] = {
    {"dualpipe", "DualPipe: both directions on every rank, F&B overlapped, W deferred",
     fixed<build_dualpipe>, fixed_placement<Placement::bidirectional>, 2, 2, 2, false, 2, false,
     fixed_figures<dualpipe_figures>},
    {"dualpipev", "DualPipeV: DualPipe's schedule on half the ranks, two stages per rank in a V",
     fixed<build_dualpipev>, fixed_placement<Placement::v_shape>, 1, 1, 2, false, 2, false,
     fixed_figures<dualpipev_figures>},
    {"1f1b", "1F1B: one forward, one backward in the steady state", fixed<build_1f1b>,
     one_stage_per_rank, 1, 1, 0, false, 1, false, fixed_figures<one_f_one_b_figures>},
    {"zb1p", "ZB1P: 1F1B with weight gradients deferred into the bubbles", fixed<build_zb1p>,
     one_stage_per_rank, 1, 1, 0, false, 1, false, fixed_figures<zb1p_figures>},
    {"gpipe", "GPipe: all forwards, then all backwards", fixed<build_gpipe>, one_stage_per_rank, 1,
     1, 0, false, 1, false, fixed_figures<gpipe_figures>},
    {"interleaved-1f1b",
     "Interleaved 1F1B (Megatron's virtual pipeline): v stages per rank in a loop, depth first",
     build_interleaved_1f1b, loop, 1, 1, 0, true, 2, true, interleaved_1f1b_figures},
    {"zbv", "ZB-V: two stages per rank in a V, backward split into B and W, zero bubble at F=B=W",
     fixed<build_zbv>, fixed_placement<Placement::v_shape>, 1, 1, 0, false, 2, false,
     fixed_figures<zbv_figures>},
    {"v-half", "V-Half: a V with about half of 1F1B's activation memory", fixed<build_v_half>,
     fixed_placement<Placement::v_shape>, 1, 1, 0, false, 2, false, fixed_figures<v_half_figures>},
    {"v-min", "V-Min: a V with about a third of 1F1B's activation memory", fixed<build_v_min>,
     fixed_placement<Placement::v_shape>, 1, 1, 0, false, 2, false, fixed_figures<v_min_figures>},
    {"search",
     "Searched: greedy list schedule, one stage per rank, B/W split (`dualpipe plan` fits it to "
     "your costs)",
     fixed<build_search>, one_stage_per_rank, 1, 1, 0, false, 1, false,
     fixed_figures<search_figures>},
    {"search-v",
     "Searched on a V: two stages per rank, F&B pairs, B/W split (`dualpipe plan` fits it to "
     "your costs)",
     fixed<build_search_v>, fixed_placement<Placement::v_shape>, 1, 1, 0, false, 2, false,
     fixed_figures<search_v_figures>},
    {"search-dual",
     "Searched on DualPipe's placement: two directions, F&B pairs, B/W split (`dualpipe plan` "
     "fits it to your costs)",
     fixed<build_search_dual>, fixed_placement<Placement::bidirectional>, 2, 2, 0, false, 2, false,
     fixed_figures<search_dual_figures>},
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

Schedule build_schedule(const std::string& name, int num_ranks, int num_microbatches,
                        const BuildOptions& options) {
  const Entry& entry = find_entry(name);
  const ScheduleFacts facts = schedule_facts(name);
  const int stages_per_rank = facts.resolve_stages_per_rank(options);
  check_size_limits(num_ranks, num_microbatches);
  // NOTE: the fixed schedules' ops per micro-batch are in kMaxRankMicrobatches' estimate; a
  // chosen v multiplies them.
  if (facts.stages_per_rank_choosable &&
      static_cast<long long>(num_ranks) * num_microbatches * stages_per_rank >
          kMaxRankMicrobatches) {
    throw std::invalid_argument(
        "schedule sizes out of range: got num_ranks=" + std::to_string(num_ranks) +
        ", num_microbatches=" + std::to_string(num_microbatches) +
        ", stages_per_rank=" + std::to_string(stages_per_rank) +
        "; accepted: num_ranks * num_microbatches * stages_per_rank <= " +
        std::to_string(kMaxRankMicrobatches));
  }
  if (!facts.accepts(num_ranks, num_microbatches)) {
    // NOTE: the builder's own message first (callers match on it), then what is accepted.
    std::string message;
    try {
      entry.build(num_ranks, num_microbatches, stages_per_rank);
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
  return entry.build(num_ranks, num_microbatches, stages_per_rank);
}

ScheduleFacts schedule_facts(const std::string& name) {
  const Entry& entry = find_entry(name);
  ScheduleFacts facts;
  facts.name = entry.name;
  facts.summary = entry.summary;
  facts.rank_multiple = entry.rank_multiple;
  facts.microbatch_multiple = entry.microbatch_multiple;
  facts.min_microbatches_per_rank = entry.min_microbatches_per_rank;
  facts.microbatches_in_rounds = entry.microbatches_in_rounds;
  facts.stages_per_rank = entry.stages_per_rank;
  facts.stages_per_rank_choosable = entry.stages_per_rank_choosable;
  return facts;
}

bool is_schedule_name(const std::string& name) {
  for (const Entry& entry : kSchedules) {
    if (name == entry.name) return true;
  }
  return false;
}

namespace {

// PyTorch's Interleaved1F1B rounds: max(1, num_microbatches / num_ranks) of equal size.
bool splits_into_rounds(int num_ranks, long long num_microbatches) {
  const long long rounds = std::max<long long>(1, num_microbatches / num_ranks);
  return num_microbatches % rounds == 0;
}

}  // namespace

bool ScheduleFacts::accepts(int num_ranks, int num_microbatches) const {
  return num_ranks >= rank_multiple && num_ranks % rank_multiple == 0 && num_microbatches >= 1 &&
         num_microbatches % microbatch_multiple == 0 &&
         num_microbatches >= min_microbatches_per_rank * num_ranks &&
         (!microbatches_in_rounds || splits_into_rounds(num_ranks, num_microbatches));
}

int ScheduleFacts::resolve_stages_per_rank(const BuildOptions& options) const {
  if (options.stages_per_rank == 0) return stages_per_rank;
  if (stages_per_rank_choosable) {
    if (options.stages_per_rank >= 1 && options.stages_per_rank <= kMaxStagesPerRank) {
      return options.stages_per_rank;
    }
    throw std::invalid_argument(
        "schedule \"" + name + "\" takes 1 to " + std::to_string(kMaxStagesPerRank) +
        " stages per rank, got stages_per_rank=" + std::to_string(options.stages_per_rank));
  }
  if (options.stages_per_rank == stages_per_rank) return stages_per_rank;
  throw std::invalid_argument(
      "schedule \"" + name + "\" always holds " + std::to_string(stages_per_rank) +
      " stage(s) per rank, got stages_per_rank=" + std::to_string(options.stages_per_rank));
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
  if (microbatches_in_rounds) {
    text += ", a multiple of its rounds max(1, num_microbatches / num_ranks) (below " +
            std::to_string(2LL * num_ranks) + " or a multiple of " + std::to_string(num_ranks) +
            " always is)";
  }
  return text;
}

int ScheduleFacts::smallest_microbatches(int num_ranks, int at_least) const {
  if (num_ranks < rank_multiple || num_ranks % rank_multiple != 0) return -1;
  long long m = std::max<long long>(
      {1, at_least, static_cast<long long>(min_microbatches_per_rank) * num_ranks});
  m = (m + microbatch_multiple - 1) / microbatch_multiple * microbatch_multiple;
  // NOTE: a multiple of num_ranks always splits into rounds, so this ends within num_ranks steps.
  while (microbatches_in_rounds && !splits_into_rounds(num_ranks, m)) m += microbatch_multiple;
  return m > kMaxRankMicrobatches ? -1 : static_cast<int>(m);
}

PublishedFigures published_figures(const std::string& name, int num_ranks, int num_microbatches,
                                   const PublishedCosts& costs, const BuildOptions& options) {
  const Entry& entry = find_entry(name);
  const int stages_per_rank = schedule_facts(name).resolve_stages_per_rank(options);
  return entry.published(num_ranks, num_microbatches, stages_per_rank, costs);
}

BuildOptions build_options_of(const Schedule& schedule) {
  const long long instances =
      static_cast<long long>(schedule.num_directions()) * schedule.num_stages();
  BuildOptions options;
  if (schedule.num_ranks() > 0 && instances % schedule.num_ranks() == 0) {
    options.stages_per_rank = static_cast<int>(instances / schedule.num_ranks());
  }
  return options;
}

Placement schedule_placement(const std::string& name, int num_ranks, const BuildOptions& options) {
  const Entry& entry = find_entry(name);
  const int stages_per_rank = schedule_facts(name).resolve_stages_per_rank(options);
  check_size_limits(num_ranks, 0);
  if (num_ranks < entry.rank_multiple || num_ranks % entry.rank_multiple != 0) {
    throw std::invalid_argument(
        "schedule \"" + name + "\" needs num_ranks to be a positive multiple of " +
        std::to_string(entry.rank_multiple) + ", got num_ranks=" + std::to_string(num_ranks));
  }
  return entry.placement(num_ranks, stages_per_rank);
}

}  // namespace dualpipe::schedule
