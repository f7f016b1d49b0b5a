#pragma once
// The loss-curve picture of a run: an SVG (plain string generation) with axes, ticks, the
// training loss per step, the held-out loss where evaluated and the unigram baseline.

#include <string>
#include <utility>
#include <vector>

namespace dualpipe::train {

struct CurvePoint {
  double step = 0.0;
  double loss = 0.0;
};

// Ticks for an axis over [lo, hi]: round numbers (1, 2, 5 x 10^k apart), about `target` of them,
// all inside [lo, hi]. lo == hi gives {lo}.
std::vector<double> nice_ticks(double lo, double hi, int target = 6);

// A self-contained SVG document. Non-finite points are skipped. `unigram_loss` <= 0 draws no
// baseline. Never throws on empty inputs (draws empty axes).
std::string loss_curve_svg(const std::vector<CurvePoint>& train,
                           const std::vector<CurvePoint>& held_out, double unigram_loss,
                           const std::string& title);

}  // namespace dualpipe::train
