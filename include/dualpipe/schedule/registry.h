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
// simulation under a few hundred MiB). A schedule with a chosen number of stages per rank v
// (interleaved 1F1B) runs v stage micro-batches per micro-batch and rank: it needs
// v <= kMaxStagesPerRank and num_ranks * num_microbatches * v <= kMaxRankMicrobatches.
inline constexpr int kMaxRanks = 4096;
inline constexpr long long kMaxRankMicrobatches = 1LL << 18;
inline constexpr int kMaxStagesPerRank = 64;

// Throws std::invalid_argument naming both sizes and the limits when they exceed them (or are
// below 1 rank / 0 micro-batches).
void check_size_limits(int num_ranks, int num_microbatches);

// The names build_schedule() accepts: "dualpipe", "dualpipev", "1f1b", "zb1p", "gpipe",
// "interleaved-1f1b", "zbv", "v-half", "v-min", and the searched "search", "search-v",
// "search-dual" (list_schedule.h).
std::vector<std::string> schedule_names();

// What a schedule is built with beyond its sizes.
struct BuildOptions {
  // Stage instances per rank (Megatron's virtual pipeline size v; `--stages-per-rank`), for the
  // schedules whose facts say stages_per_rank_choosable; 0 means the schedule's own
  // (ScheduleFacts::stages_per_rank). Others accept 0 or exactly their own number.
  int stages_per_rank = 0;
};

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
  // PyTorch's Interleaved1F1B runs the micro-batches in rounds of equal size: num_microbatches
  // must be a multiple of its number of rounds, max(1, num_microbatches / num_ranks) (any
  // multiple of num_ranks, any count below 2 * num_ranks, 10 on 4 ranks, not 9).
  bool microbatches_in_rounds = false;
  // Stage instances (stage modules) each rank holds: 1 for 1F1B, 2 for DualPipe (a stage and a
  // mirrored copy) and the V schedules; the default v when stages_per_rank_choosable, where
  // BuildOptions::stages_per_rank picks any value in 1..kMaxStagesPerRank.
  int stages_per_rank = 1;
  bool stages_per_rank_choosable = false;

  // Whether build_schedule(name, num_ranks, num_microbatches) accepts these sizes.
  bool accepts(int num_ranks, int num_microbatches) const;
  // What is accepted, in words, for error messages: "num_ranks a positive multiple of 2 and
  // num_microbatches a multiple of 2 and >= 2 * num_ranks (8 for num_ranks=4)".
  std::string accepted_sizes(int num_ranks) const;
  // The smallest accepted num_microbatches >= `at_least` on num_ranks, or -1 when num_ranks is
  // never accepted.
  int smallest_microbatches(int num_ranks, int at_least = 1) const;
  // The stages per rank `options` ask for (0: this schedule's own). Throws std::invalid_argument
  // naming the value and what is allowed.
  int resolve_stages_per_rank(const BuildOptions& options) const;
};

// The facts of the named schedule. Throws std::invalid_argument naming the allowed names.
ScheduleFacts schedule_facts(const std::string& name);

// Whether `name` is one of schedule_names().
bool is_schedule_name(const std::string& name);

// The closed-form bubble and memory figures the schedule's paper publishes, evaluated on `costs`
// (see published_figures.h). Throws std::invalid_argument for an unknown name.
PublishedFigures published_figures(const std::string& name, int num_ranks, int num_microbatches,
                                   const PublishedCosts& costs, const BuildOptions& options = {});

// Builds the named schedule (compute and communication). Pure. Throws std::invalid_argument
// naming the allowed names for an unknown name, sizes beyond check_size_limits(), sizes the
// facts do not accept (saying what is accepted and the nearest accepted micro-batch count) and
// options the schedule does not take (ScheduleFacts::resolve_stages_per_rank).
Schedule build_schedule(const std::string& name, int num_ranks, int num_microbatches,
                        const BuildOptions& options = {});

// Where the named schedule puts its stages on `num_ranks` ranks, without building a program
// (the placement does not depend on the micro-batch count). Equal to build_schedule(...).placement
// for every size the builder accepts. Throws std::invalid_argument for an unknown name or a rank
// count the schedule never accepts (below 1; odd for DualPipe); micro-batch counts are checked
// by build_schedule.
Placement schedule_placement(const std::string& name, int num_ranks,
                             const BuildOptions& options = {});

// The options that build `schedule` again from its name: its stage instances per rank. Lets
// code that holds a built or loaded schedule ask the registry about it (published figures)
// without knowing which schedules take options. Pure.
BuildOptions build_options_of(const Schedule& schedule);

}  // namespace dualpipe::schedule
