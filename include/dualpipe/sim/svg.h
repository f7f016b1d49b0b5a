#pragma once
// Timeline picture of a simulated schedule, in the style of the DualPipe README figure: one row
// per rank, one cell per compute op placed at its simulated time, idle time left blank.

#include <string>

#include "dualpipe/schedule/schedule.h"
#include "dualpipe/sim/cost_model.h"
#include "dualpipe/sim/simulator.h"

namespace dualpipe::sim {

struct SvgOptions {
  double pixels_per_unit = 0.0;  // horizontal scale; 0 picks one that fits max_width
  double max_width = 2400.0;     // pixels, for the automatic scale
  double row_height = 30.0;      // pixels per rank row
  std::string title;             // empty: "<name>: <ranks> ranks, <C> micro-batches, costs"
};

// A self-contained SVG document. Cells are coloured by kind (forward, backward, backward for
// inputs only, weight) and by the stage slot on the rank (DualPipe: direction 0 light, 1 dark;
// DualPipeV: the way down light, the way back dark), labelled with the micro-batch number; an
// FB pair is one outlined box split into its forward and backward halves (widths in the ratio
// F:B). `result` must come from simulate(schedule, costs). Pure.
std::string render_svg(const schedule::Schedule& schedule, const SimResult& result,
                       const CostModel& costs, const SvgOptions& options = SvgOptions{});

// Chrome trace-event JSON ({"traceEvents": [...]}, loadable in Perfetto or chrome://tracing):
// one "X" event per compute op, pid 0, tid = rank, named like "F d0 s3 mb5" or
// "FB d0 s3 mb5 + B d1 s4 mb2". One time unit of the cost model is shown as one millisecond.
std::string chrome_trace(const schedule::Schedule& schedule, const SimResult& result);

}  // namespace dualpipe::sim
