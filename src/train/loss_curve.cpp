#include "dualpipe/train/loss_curve.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

namespace dualpipe::train {
namespace {

constexpr double kWidth = 720, kHeight = 420;
constexpr double kLeft = 70, kRight = 150, kTop = 40, kBottom = 50;
constexpr double kPlotWidth = kWidth - kLeft - kRight, kPlotHeight = kHeight - kTop - kBottom;

std::string number(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%.4g", v);
  return buffer;
}

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / std::max(1, target);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * magnitude;
    if (step >= raw) break;
  }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  }
  return ticks;
}

namespace {

bool is_drawable(const CurvePoint& p) {
  return std::isfinite(p.step) && std::isfinite(p.loss);
}

// The ranges the plot shows and the map from (step, loss) to pixels inside the frame.
struct Axes {
  double x_lo = 0, x_hi = 1, y_lo = 0, y_hi = 1;

  double sx(double x) const { return kLeft + (x - x_lo) / (x_hi - x_lo) * kPlotWidth; }
  double sy(double y) const { return kTop + (1.0 - (y - y_lo) / (y_hi - y_lo)) * kPlotHeight; }
};

// Ranges that hold every drawable point and the baseline; [0, 1] for an axis with nothing on it,
// a range of 1 where all values are equal, and 5% room under the lowest loss (never below 0).
Axes axes_for(const std::vector<CurvePoint>& train, const std::vector<CurvePoint>& held_out,
              double unigram_loss) {
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
  double y_lo = x_lo, y_hi = -x_lo;
  for (const std::vector<CurvePoint>* points : {&train, &held_out}) {
    for (const CurvePoint& p : *points) {
      if (!is_drawable(p)) continue;
      x_lo = std::min(x_lo, p.step);
      x_hi = std::max(x_hi, p.step);
      y_lo = std::min(y_lo, p.loss);
      y_hi = std::max(y_hi, p.loss);
    }
  }
  if (unigram_loss > 0) {
    y_lo = std::min(y_lo, unigram_loss);
    y_hi = std::max(y_hi, unigram_loss);
  }
  if (!std::isfinite(x_lo)) x_lo = 0, x_hi = 1;
  if (!std::isfinite(y_lo)) y_lo = 0, y_hi = 1;
  if (x_hi <= x_lo) x_hi = x_lo + 1;
  if (y_hi <= y_lo) y_hi = y_lo + 1;
  y_lo = std::max(0.0, y_lo - 0.05 * (y_hi - y_lo));
  return Axes{x_lo, x_hi, y_lo, y_hi};
}

// The <svg> element's opening tag, a white background and the title.
void write_header(std::ostream& svg, const std::string& title) {
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << kWidth / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">"
      << escape(title) << "</text>\n";
}

// A faint grid line and a label per tick on both axes.
void write_grid(std::ostream& svg, const Axes& axes) {
  for (double t : nice_ticks(axes.x_lo, axes.x_hi)) {
    svg << "<line x1=\"" << axes.sx(t) << "\" y1=\"" << kTop << "\" x2=\"" << axes.sx(t)
        << "\" y2=\"" << kTop + kPlotHeight << "\" stroke=\"#eee\"/>\n"
        << "<text x=\"" << axes.sx(t) << "\" y=\"" << kTop + kPlotHeight + 16
        << "\" text-anchor=\"middle\">" << number(t) << "</text>\n";
  }
  for (double t : nice_ticks(axes.y_lo, axes.y_hi)) {
    svg << "<line x1=\"" << kLeft << "\" y1=\"" << axes.sy(t) << "\" x2=\"" << kLeft + kPlotWidth
        << "\" y2=\"" << axes.sy(t) << "\" stroke=\"#eee\"/>\n"
        << "<text x=\"" << kLeft - 6 << "\" y=\"" << axes.sy(t) + 4 << "\" text-anchor=\"end\">"
        << number(t) << "</text>\n";
  }
}

// The frame around the plot and the axis titles.
void write_frame(std::ostream& svg) {
  svg << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << kPlotWidth << "\" height=\""
      << kPlotHeight << "\" fill=\"none\" stroke=\"black\"/>\n"
      << "<text x=\"" << kLeft + kPlotWidth / 2 << "\" y=\"" << kHeight - 12
      << "\" text-anchor=\"middle\">step</text>\n"
      << "<text transform=\"translate(18," << kTop + kPlotHeight / 2
      << ") rotate(-90)\" text-anchor=\"middle\">loss (nats/byte)</text>\n";
}

// One curve through the drawable points, with a dot on each where `dots`.
void write_curve(std::ostream& svg, const Axes& axes, const std::vector<CurvePoint>& points,
                 const char* color, bool dots) {
  std::ostringstream pts;
  for (const CurvePoint& p : points) {
    if (!is_drawable(p)) continue;
    pts << axes.sx(p.step) << "," << axes.sy(p.loss) << " ";
    if (dots) {
      svg << "<circle cx=\"" << axes.sx(p.step) << "\" cy=\"" << axes.sy(p.loss)
          << "\" r=\"3\" fill=\"" << color << "\"/>\n";
    }
  }
  svg << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.5\" points=\""
      << pts.str() << "\"/>\n";
}

// The dashed horizontal line at the unigram loss, across the plot.
void write_baseline(std::ostream& svg, const Axes& axes, double unigram_loss) {
  svg << "<line x1=\"" << kLeft << "\" y1=\"" << axes.sy(unigram_loss) << "\" x2=\""
      << kLeft + kPlotWidth << "\" y2=\"" << axes.sy(unigram_loss)
      << "\" stroke=\"#555\" stroke-dasharray=\"5,3\"/>\n";
}

// The legend right of the plot: one entry (a short line and its label) under the other.
class Legend {
 public:
  explicit Legend(std::ostream& svg) : svg_(svg) {}

  void add(const char* color, const std::string& label, bool dashed) {
    constexpr double kLineX = kLeft + kPlotWidth + 10;
    svg_ << "<line x1=\"" << kLineX << "\" y1=\"" << y_ << "\" x2=\"" << kLineX + 20 << "\" y2=\""
         << y_ << "\" stroke=\"" << color << "\" stroke-width=\"2\""
         << (dashed ? " stroke-dasharray=\"5,3\"" : "") << "/>\n"
         << "<text x=\"" << kLineX + 25 << "\" y=\"" << y_ + 4 << "\">" << escape(label)
         << "</text>\n";
    y_ += 20;
  }

 private:
  std::ostream& svg_;
  double y_ = kTop + 10;
};

}  // namespace

std::string loss_curve_svg(const std::vector<CurvePoint>& train,
                           const std::vector<CurvePoint>& held_out, double unigram_loss,
                           const std::string& title) {
  const Axes axes = axes_for(train, held_out, unigram_loss);
  std::ostringstream svg;
  write_header(svg, title);
  write_grid(svg, axes);
  write_frame(svg);
  write_curve(svg, axes, train, "#1f77b4", false);
  write_curve(svg, axes, held_out, "#d62728", true);
  Legend legend(svg);
  legend.add("#1f77b4", "train", false);
  legend.add("#d62728", "held-out", false);
  if (unigram_loss > 0) {
    write_baseline(svg, axes, unigram_loss);
    legend.add("#555", "unigram " + number(unigram_loss), true);
  }
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace dualpipe::train
