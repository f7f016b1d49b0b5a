#include "dualpipe/schedule/published_figures.h"

#include <algorithm>

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

// The V schedules: two half-size stages per rank (PP = ranks), 1F1B's parameter share.
PublishedFigures v_shape(int num_ranks) {
  PublishedFigures figures = one_stage_per_rank(num_ranks);
  figures.pp_meaning = "PP=ranks=" + std::to_string(num_ranks) + ", 2 stages per rank";
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

PublishedFigures interleaved_1f1b_figures(int num_ranks, int num_microbatches, int v,
                                          const PublishedCosts& c) {
  PublishedFigures figures = one_stage_per_rank(num_ranks);
  figures.pp_meaning = "PP=ranks=" + std::to_string(num_ranks) + ", v=" + std::to_string(v);
  figures.bubble_formula = "(PP-1)(vF+vB)/v";
  figures.bubble = (num_ranks - 1) * (c.forward + c.backward);
  const int rounds = std::max(1, num_microbatches / num_ranks);
  const long long per_round = num_microbatches / rounds;
  const long long all = static_cast<long long>(v) * num_microbatches;
  const long long peak = (v - 1) * per_round + 2LL * num_ranks - 1;
  if (per_round == num_ranks && peak <= all) {
    figures.activations_formula = "vPP+PP-1";
  } else {
    figures.activations_formula = "min(vC,(v-1)Mr+2PP-1), Mr=" + std::to_string(per_round);
  }
  figures.peak_activations = static_cast<int>(std::min(all, peak));
  return figures;
}

PublishedFigures zbv_figures(int num_ranks, int, const PublishedCosts& c) {
  PublishedFigures figures = v_shape(num_ranks);
  // NOTE: the paper's "zero bubble" at F = B-W = W leaves nothing idle but the start-up every
  // pipeline has: rank r waits r forwards for its first input and idles R-1-r at the end.
  figures.bubble_formula = "(PP-1)F at F=B-W=W";
  figures.bubble = (num_ranks - 1) * c.forward;
  figures.activations_formula = "2PP";
  figures.peak_activations = 2 * num_ranks;
  return figures;
}

PublishedFigures v_half_figures(int num_ranks, int, const PublishedCosts&) {
  PublishedFigures figures = v_shape(num_ranks);
  figures.activations_formula = "2*floor((PP+2)/2)";
  figures.peak_activations = 2 * ((num_ranks + 2) / 2);
  return figures;
}

PublishedFigures v_min_figures(int num_ranks, int, const PublishedCosts&) {
  PublishedFigures figures = v_shape(num_ranks);
  figures.activations_formula = "2*floor((PP+4)/3)";
  figures.peak_activations = 2 * ((num_ranks + 4) / 3);
  return figures;
}

PublishedFigures search_figures(int num_ranks, int, const PublishedCosts&) {
  PublishedFigures figures = one_stage_per_rank(num_ranks);
  figures.activations_formula = "<= PP";
  return figures;
}

PublishedFigures search_v_figures(int num_ranks, int, const PublishedCosts&) {
  PublishedFigures figures = v_shape(num_ranks);
  figures.activations_formula = "<= 2PP";
  figures.peak_activations = 2 * num_ranks;
  return figures;
}

PublishedFigures search_dual_figures(int num_ranks, int, const PublishedCosts& c) {
  PublishedFigures figures = bidirectional(num_ranks, "PP=ranks=" + std::to_string(num_ranks), c);
  figures.bubble_formula.clear();
  figures.bubble = 0.0;
  figures.activations_formula = "<= PP+1";
  return figures;
}

}  // namespace dualpipe::schedule
