#include "dualpipe/sim/paper.h"

#include <stdexcept>

#include "dualpipe/schedule/registry.h"

namespace dualpipe::sim {

std::optional<PaperFigures> paper_figures(const std::string& name, int num_ranks,
                                          int num_microbatches, const CostModel& costs,
                                          const schedule::BuildOptions& options) {
  if (!schedule::is_schedule_name(name)) return std::nullopt;
  const schedule::PublishedCosts published{costs.forward, costs.backward, costs.weight,
                                           costs.forward_backward};
  return schedule::published_figures(name, num_ranks, num_microbatches, published, options);
}

std::optional<PaperFigures> paper_figures(const schedule::Schedule& schedule,
                                          const CostModel& costs) {
  if (!schedule::is_schedule_name(schedule.name)) return std::nullopt;
  const schedule::BuildOptions options = schedule::build_options_of(schedule);
  try {
    schedule::schedule_facts(schedule.name).resolve_stages_per_rank(options);
  } catch (const std::invalid_argument&) {
    return std::nullopt;  // a file that reuses a name for another shape
  }
  return paper_figures(schedule.name, schedule.num_ranks(), schedule.num_microbatches, costs,
                       options);
}

}  // namespace dualpipe::sim
