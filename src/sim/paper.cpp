#include "dualpipe/sim/paper.h"

namespace dualpipe::sim {

std::optional<PaperFigures> paper_figures(const std::string& name, int num_ranks,
                                          int num_microbatches, const CostModel& costs) {
  const double f = costs.forward, b = costs.backward, w = costs.weight;
  const double fb = costs.forward_backward;
  PaperFigures figures;
  if (name == "1f1b" || name == "gpipe" || name == "zb1p") {
    const int pp = num_ranks;
    figures.pp_meaning = "PP=ranks=" + std::to_string(pp);
    figures.parameters_formula = "1x";
    figures.parameter_copies = 1;
    if (name == "zb1p") {
      figures.bubble_formula = "(PP-1)(F+B-2W)";
      figures.bubble = (pp - 1) * (f + b - 2 * w);
    } else {
      figures.bubble_formula = "(PP-1)(F+B)";
      figures.bubble = (pp - 1) * (f + b);
    }
    if (name == "gpipe") {
      figures.activations_formula = "C";
      figures.peak_activations = num_microbatches;
    } else {
      figures.activations_formula = "PP";
      figures.peak_activations = pp;
    }
    return figures;
  }
  if (name == "dualpipe" || name == "dualpipev") {
    const int pp = name == "dualpipe" ? num_ranks : 2 * num_ranks;
    figures.pp_meaning = name == "dualpipe" ? "PP=ranks=" + std::to_string(pp)
                                            : "PP=2*ranks=" + std::to_string(pp) + " stages";
    figures.bubble_formula = "(PP/2-1)(F&B+B-3W)";
    figures.bubble = (pp / 2 - 1) * (fb + b - 3 * w);
    figures.parameters_formula = "2x";
    figures.parameter_copies = 2;
    figures.activations_formula = "PP+1";
    figures.peak_activations = pp + 1;
    return figures;
  }
  return std::nullopt;
}

}  // namespace dualpipe::sim
