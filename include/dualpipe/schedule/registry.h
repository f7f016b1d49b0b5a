#pragma once
// Schedules by name, for the command line, the simulator and the tests.

#include <string>
#include <vector>

#include "dualpipe/schedule/published_figures.h"
#include "dualpipe/schedule/schedule.h"

namespace dualpipe::schedule {

// The largest sizes any schedule is built for, checked before anything is allocated: at most
// kMaxRanks ranks and num_ranks * num_microbatches <= kMaxRankMicrobatches (a schedule holds
// about 7 ops per rank and micro-batch; the limit keeps a program, its validation and its
// simulation under a few hundred MiB).
inline constexpr int kMaxRanks = 4096;
inline constexpr long long kMaxRankMicrobatches = 1LL << 18;

// Throws std::invalid_argument naming both sizes and the limits when they exceed them (or are
// below 1 rank / 0 micro-batches).
void check_size_limits(int num_ranks, int num_microbatches);

// The names build_schedule() accepts: "dualpipe", "dualpipev", "1f1b", "zb1p", "gpipe".
std::vector<std::string> schedule_names();

// What a schedule is, as data: code outside `schedule` asks these facts (and the placement) instead
// of branching on a schedule's name.
struct ScheduleFacts {
  std::string name;
  std::string summary;  // one line, for help texts and tables
  // Accepted sizes: num_ranks a positive multiple of rank_multiple (DualPipe pairs rank r with
  // R-1-r); num_microbatches >= 1, a multiple of microbatch_multiple (DualPipe splits them over
  // two directions) and at least min_microbatches_per_rank * num_ranks (the DualPipe family
  // needs its steady state).
  int rank_multiple = 1;
  int microbatch_multiple = 1;
  int min_microbatches_per_rank = 0;

  // Whether build_schedule(name, num_ranks, num_microbatches) accepts these sizes.
  bool accepts(int num_ranks, int num_microbatches) const;
  // What is accepted, in words, for error messages: "num_ranks a positive multiple of 2 and
  // num_microbatches a multiple of 2 and >= 2 * num_ranks (8 for num_ranks=4)".
  std::string accepted_sizes(int num_ranks) const;
  // The smallest accepted num_microbatches >= `at_least` on num_ranks, or -1 when num_ranks is
  // never accepted.
  int smallest_microbatches(int num_ranks, int at_least = 1) const;
};

// The facts of the named schedule. Throws std::invalid_argument naming the allowed names.
ScheduleFacts schedule_facts(const std::string& name);

// Whether `name` is one of schedule_names().
bool is_schedule_name(const std::string& name);

// The closed-form bubble and memory figures the schedule's paper publishes, evaluated on `costs`
// (see published_figures.h). Throws std::invalid_argument for an unknown name.
PublishedFigures published_figures(const std::string& name, int num_ranks, int num_microbatches,
                                   const PublishedCosts& costs);

// Builds the named schedule (compute and communication). Throws std::invalid_argument naming
// the allowed names for an unknown name, sizes beyond check_size_limits(), and sizes the facts
// do not accept (saying what is accepted and the nearest accepted micro-batch count).
Schedule build_schedule(const std::string& name, int num_ranks, int num_microbatches);

// Where the named schedule puts its stages on `num_ranks` ranks, without building a program
// (the placement does not depend on the micro-batch count). Equal to build_schedule(...).placement
// for every size the builder accepts. Throws std::invalid_argument for an unknown name or a rank
// count the schedule never accepts (below 1; odd for DualPipe); micro-batch counts are checked
// by build_schedule.
Placement schedule_placement(const std::string& name, int num_ranks);

}  // namespace dualpipe::schedule
