#pragma once
// Schedules by name, for the command line, the simulator and the tests.

#include <string>
#include <vector>

#include "dualpipe/schedule/schedule.h"

namespace dualpipe::schedule {

// The names build_schedule() accepts: "dualpipe", "dualpipev", "1f1b", "zb1p", "gpipe".
std::vector<std::string> schedule_names();

// Builds the named schedule (compute and communication). Throws std::invalid_argument naming
// the allowed names for an unknown name, and the builder's message for unsupported sizes.
Schedule build_schedule(const std::string& name, int num_ranks, int num_microbatches);

// Where the named schedule puts its stages on `num_ranks` ranks, without building a program
// (the placement does not depend on the micro-batch count). Equal to build_schedule(...).placement
// for every size the builder accepts. Throws std::invalid_argument for an unknown name or a rank
// count the schedule never accepts (below 1; odd for DualPipe); micro-batch counts are checked
// by build_schedule.
Placement schedule_placement(const std::string& name, int num_ranks);

}  // namespace dualpipe::schedule
