#include "dualpipe/schedule/published_figures.h"

namespace dualpipe::schedule {
namespace {

PublishedFigures one_stage_per_rank(int pp) {
  PublishedFigures figures;
  figures.pp_meaning = "PP=ranks=" + std::to_string(pp);
  figures.parameters_formula = "1x";
  figures.parameter_copies = 1;
  figures.activations_formula = "PP";
  figures.peak_activations = pp;
  return figures;
}

PublishedFigures bidirectional(int pp, const std::string& pp_meaning, const PublishedCosts& c) {
  PublishedFigures figures;
  figures.pp_meaning = pp_meaning;
  figures.bubble_formula = "(PP/2-1)(F&B+B-3W)";
  figures.bubble = (pp / 2 - 1) * (c.forward_backward + c.backward - 3 * c.weight);
  figures.parameters_formula = "2x";
  figures.parameter_copies = 2;
  figures.activations_formula = "PP+1";
  figures.peak_activations = pp + 1;
  return figures;
}

}  // namespace

PublishedFigures one_f_one_b_figures(int num_ranks, int, const PublishedCosts& c) {
  PublishedFigures figures = one_stage_per_rank(num_ranks);
  figures.bubble_formula = "(PP-1)(F+B)";
  figures.bubble = (num_ranks - 1) * (c.forward + c.backward);
  return figures;
}

PublishedFigures zb1p_figures(int num_ranks, int, const PublishedCosts& c) {
  PublishedFigures figures = one_stage_per_rank(num_ranks);
  figures.bubble_formula = "(PP-1)(F+B-2W)";
  figures.bubble = (num_ranks - 1) * (c.forward + c.backward - 2 * c.weight);
  return figures;
}

PublishedFigures gpipe_figures(int num_ranks, int num_microbatches, const PublishedCosts& c) {
  PublishedFigures figures = one_f_one_b_figures(num_ranks, num_microbatches, c);
  figures.activations_formula = "C";
  figures.peak_activations = num_microbatches;
  return figures;
}

PublishedFigures dualpipe_figures(int num_ranks, int, const PublishedCosts& c) {
  return bidirectional(num_ranks, "PP=ranks=" + std::to_string(num_ranks), c);
}

PublishedFigures dualpipev_figures(int num_ranks, int, const PublishedCosts& c) {
  const int pp = 2 * num_ranks;
  return bidirectional(pp, "PP=2*ranks=" + std::to_string(pp) + " stages", c);
}

}  // namespace dualpipe::schedule
