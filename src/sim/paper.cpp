#include "dualpipe/sim/paper.h"

#include "dualpipe/schedule/registry.h"

namespace dualpipe::sim {

std::optional<PaperFigures> paper_figures(const std::string& name, int num_ranks,
                                          int num_microbatches, const CostModel& costs) {
  if (!schedule::is_schedule_name(name)) return std::nullopt;
  const schedule::PublishedCosts published{costs.forward, costs.backward, costs.weight,
                                           costs.forward_backward};
  return schedule::published_figures(name, num_ranks, num_microbatches, published);
}

}  // namespace dualpipe::sim
