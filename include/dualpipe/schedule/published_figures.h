#pragma once
// The closed-form bubble and memory figures a schedule's paper publishes (DeepSeek-V3 technical
// report, Table 2; deepseek-ai/DualPipe README; the zero-bubble paper), as schedule facts: the
// registry holds which formula belongs to which schedule, the simulator prints them beside its
// numbers.

#include <string>

namespace dualpipe::schedule {

// Per-chunk costs the formulas are evaluated on (any time unit; the result is in that unit).
struct PublishedCosts {
  double forward = 0;           // F
  double backward = 0;          // B (input gradients)
  double weight = 0;            // W (weight gradients)
  double forward_backward = 0;  // F&B (a forward and a backward overlapped)
};

struct PublishedFigures {
  // Empty (and bubble 0) when the paper gives no closed form (V-Half, V-Min).
  std::string bubble_formula;       // e.g. "(PP/2-1)(F&B+B-3W)"
  std::string pp_meaning;           // what PP stands for, e.g. "PP=2*ranks=16 stages"
  double bubble = 0.0;              // the formula evaluated on the costs
  std::string parameters_formula;   // "1x" or "2x" (model stages' parameters per rank)
  int parameter_copies = 0;         // 1 or 2
  std::string activations_formula;  // "PP", "PP+1", "C" (GPipe: all micro-batches)
  int peak_activations = 0;         // the formula evaluated, in stage x micro-batch units
};

// The published figures of each schedule family, for the registry's table. Pure.
PublishedFigures one_f_one_b_figures(int num_ranks, int num_microbatches, const PublishedCosts& c);
PublishedFigures zb1p_figures(int num_ranks, int num_microbatches, const PublishedCosts& c);
PublishedFigures gpipe_figures(int num_ranks, int num_microbatches, const PublishedCosts& c);
// DualPipe with PP = ranks; DualPipeV with PP = 2 * ranks (its stages), as the DualPipe README
// states the V shape's figures.
PublishedFigures dualpipe_figures(int num_ranks, int num_microbatches, const PublishedCosts& c);
PublishedFigures dualpipev_figures(int num_ranks, int num_microbatches, const PublishedCosts& c);
// Interleaved 1F1B (Narayanan et al. 2021) with v stages per rank: bubble (PP-1)(F+B)/v for a
// rank's layers, i.e. (PP-1)(vF+vB)/v with our per-stage costs; activations (Korthikanti et al.
// 2022) PP(1+(PP-1)/(PP v)) of a rank's layers = vPP+PP-1 stages x micro-batches when PP divides
// the micro-batches (in general min(vC, (v-1)Mr+2PP-1), Mr the micro-batches per round).
PublishedFigures interleaved_1f1b_figures(int num_ranks, int num_microbatches, int stages_per_rank,
                                          const PublishedCosts& c);
// The zero-bubble authors' V schedules (PP = ranks; two stages per rank, each half a rank's
// layers; activations in our stage units, twice the papers' micro-batches of a rank's layers):
// ZB-V (arXiv 2401.10241) "zero bubble" at F = B-W = W, i.e. only the start-up (PP-1)F, and
// 1F1B's memory, 2PP; V-Half and V-Min (arXiv 2405.15362)
// 2*floor((PP+2)/2) and 2*floor((PP+4)/3). The authors count an activation until its W.
PublishedFigures zbv_figures(int num_ranks, int num_microbatches, const PublishedCosts& c);
PublishedFigures v_half_figures(int num_ranks, int num_microbatches, const PublishedCosts& c);
PublishedFigures v_min_figures(int num_ranks, int num_microbatches, const PublishedCosts& c);
// The searched schedules (list_schedule.h) have no paper and no closed-form bubble; their
// activations are the bound the registry's builders keep: PP for "search", 2PP for "search-v"
// (half stages, as ZB-V), PP+1 for "search-dual" (as DualPipe), with their placements'
// parameters.
PublishedFigures search_figures(int num_ranks, int num_microbatches, const PublishedCosts& c);
PublishedFigures search_v_figures(int num_ranks, int num_microbatches, const PublishedCosts& c);
PublishedFigures search_dual_figures(int num_ranks, int num_microbatches, const PublishedCosts& c);

}  // namespace dualpipe::schedule
