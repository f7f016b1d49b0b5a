#pragma once
// The closed-form bubble and memory figures of the DualPipe paper's comparison table (DeepSeek-V3
// technical report, Table 2; deepseek-ai/DualPipe README), to print beside simulated numbers.

#include <optional>
#include <string>

#include "dualpipe/sim/cost_model.h"

namespace dualpipe::sim {

struct PaperFigures {
  std::string bubble_formula;       // e.g. "(PP/2-1)(F&B+B-3W)"
  std::string pp_meaning;           // what PP stands for, e.g. "PP=2*ranks=16 stages"
  double bubble = 0.0;              // the formula evaluated on the cost model
  std::string parameters_formula;   // "1x" or "2x" (model stages' parameters per rank)
  int parameter_copies = 0;         // 1 or 2
  std::string activations_formula;  // "PP", "PP+1", "C" (GPipe: all micro-batches)
  int peak_activations = 0;         // the formula evaluated, in stage x micro-batch units
};

// Figures for the schedules the paper compares: "1f1b" and "zb1p" (PP = ranks), "gpipe" (its
// bubble is 1F1B's, its activations all C micro-batches), "dualpipe" (PP = ranks) and
// "dualpipev" (the paper's formulas with PP = 2*ranks, the number of stages, as the DualPipe
// README states them for the V shape). std::nullopt for other names.
std::optional<PaperFigures> paper_figures(const std::string& schedule_name, int num_ranks,
                                          int num_microbatches, const CostModel& costs);

}  // namespace dualpipe::sim
