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

std::string loss_curve_svg(const std::vector<CurvePoint>& train,
                           const std::vector<CurvePoint>& held_out, double unigram_loss,
                           const std::string& title) {
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
  double y_lo = x_lo, y_hi = -x_lo;
  auto extend = [&](const std::vector<CurvePoint>& points) {
    for (const CurvePoint& p : points) {
      if (!std::isfinite(p.step) || !std::isfinite(p.loss)) continue;
      x_lo = std::min(x_lo, p.step);
      x_hi = std::max(x_hi, p.step);
      y_lo = std::min(y_lo, p.loss);
      y_hi = std::max(y_hi, p.loss);
    }
  };
  extend(train);
  extend(held_out);
  if (unigram_loss > 0) {
    y_lo = std::min(y_lo, unigram_loss);
    y_hi = std::max(y_hi, unigram_loss);
  }
  if (!std::isfinite(x_lo)) x_lo = 0, x_hi = 1;
  if (!std::isfinite(y_lo)) y_lo = 0, y_hi = 1;
  if (x_hi <= x_lo) x_hi = x_lo + 1;
  if (y_hi <= y_lo) y_hi = y_lo + 1;
  y_lo = std::max(0.0, y_lo - 0.05 * (y_hi - y_lo));
  const double plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
  auto sx = [&](double x) { return kLeft + (x - x_lo) / (x_hi - x_lo) * plot_w; };
  auto sy = [&](double y) { return kTop + (1.0 - (y - y_lo) / (y_hi - y_lo)) * plot_h; };

  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << kWidth / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">"
      << escape(title) << "</text>\n";
  for (double t : nice_ticks(x_lo, x_hi)) {
    svg << "<line x1=\"" << sx(t) << "\" y1=\"" << kTop << "\" x2=\"" << sx(t) << "\" y2=\""
        << kTop + plot_h << "\" stroke=\"#eee\"/>\n"
        << "<text x=\"" << sx(t) << "\" y=\"" << kTop + plot_h + 16 << "\" text-anchor=\"middle\">"
        << number(t) << "</text>\n";
  }
  for (double t : nice_ticks(y_lo, y_hi)) {
    svg << "<line x1=\"" << kLeft << "\" y1=\"" << sy(t) << "\" x2=\"" << kLeft + plot_w
        << "\" y2=\"" << sy(t) << "\" stroke=\"#eee\"/>\n"
        << "<text x=\"" << kLeft - 6 << "\" y=\"" << sy(t) + 4 << "\" text-anchor=\"end\">"
        << number(t) << "</text>\n";
  }
  svg << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << plot_w << "\" height=\""
      << plot_h << "\" fill=\"none\" stroke=\"black\"/>\n"
      << "<text x=\"" << kLeft + plot_w / 2 << "\" y=\"" << kHeight - 12
      << "\" text-anchor=\"middle\">step</text>\n"
      << "<text transform=\"translate(18," << kTop + plot_h / 2
      << ") rotate(-90)\" text-anchor=\"middle\">loss (nats/byte)</text>\n";
  auto polyline = [&](const std::vector<CurvePoint>& points, const char* color, bool dots) {
    std::ostringstream pts;
    for (const CurvePoint& p : points) {
      if (!std::isfinite(p.step) || !std::isfinite(p.loss)) continue;
      pts << sx(p.step) << "," << sy(p.loss) << " ";
      if (dots) {
        svg << "<circle cx=\"" << sx(p.step) << "\" cy=\"" << sy(p.loss) << "\" r=\"3\" fill=\""
            << color << "\"/>\n";
      }
    }
    svg << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.5\" points=\""
        << pts.str() << "\"/>\n";
  };
  polyline(train, "#1f77b4", false);
  polyline(held_out, "#d62728", true);
  double legend_y = kTop + 10;
  auto legend = [&](const char* color, const std::string& label, bool dashed) {
    svg << "<line x1=\"" << kLeft + plot_w + 10 << "\" y1=\"" << legend_y << "\" x2=\""
        << kLeft + plot_w + 30 << "\" y2=\"" << legend_y << "\" stroke=\"" << color
        << "\" stroke-width=\"2\"" << (dashed ? " stroke-dasharray=\"5,3\"" : "") << "/>\n"
        << "<text x=\"" << kLeft + plot_w + 35 << "\" y=\"" << legend_y + 4 << "\">"
        << escape(label) << "</text>\n";
    legend_y += 20;
  };
  legend("#1f77b4", "train", false);
  legend("#d62728", "held-out", false);
  if (unigram_loss > 0) {
    svg << "<line x1=\"" << kLeft << "\" y1=\"" << sy(unigram_loss) << "\" x2=\"" << kLeft + plot_w
        << "\" y2=\"" << sy(unigram_loss) << "\" stroke=\"#555\" stroke-dasharray=\"5,3\"/>\n";
    legend("#555", "unigram " + number(unigram_loss), true);
  }
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace dualpipe::train
