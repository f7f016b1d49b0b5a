#pragma once
// The closed-form bubble and memory figures of the DualPipe paper's comparison table (DeepSeek-V3
// technical report, Table 2; deepseek-ai/DualPipe README), to print beside simulated numbers.

#include <optional>
#include <string>

#include "dualpipe/schedule/published_figures.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/sim/cost_model.h"

namespace dualpipe::sim {

// The figures are schedule facts (schedule/published_figures.h); this evaluates them on a cost
// model.
using PaperFigures = schedule::PublishedFigures;

// The registry's published figures for `schedule_name` (e.g. 1F1B's (PP-1)(F+B), DualPipeV's
// with PP = 2*ranks stages), evaluated on `costs`. std::nullopt for a name the registry does not
// know (a schedule loaded from a file under another name).
std::optional<PaperFigures> paper_figures(const std::string& schedule_name, int num_ranks,
                                          int num_microbatches, const CostModel& costs,
                                          const schedule::BuildOptions& options = {});
// The same for a built or loaded schedule, with the options that build it
// (schedule::build_options_of: interleaved 1F1B's stages per rank); std::nullopt also when its
// name is known but its stages per rank are not the named schedule's.
std::optional<PaperFigures> paper_figures(const schedule::Schedule& schedule,
                                          const CostModel& costs);

}  // namespace dualpipe::sim
