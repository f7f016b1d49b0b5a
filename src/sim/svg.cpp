#include "dualpipe/sim/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace dualpipe::sim {
namespace {

using schedule::Op;
using schedule::OpKind;

// Colour roles: kind x variant (variant = the slot of the stage on its rank).
enum class Role { kForward, kBackward, kBackwardInput, kWeight };

struct Colour {
  const char* fill;
  const char* text;
};

// Light for slot 0 (DualPipe direction 0, DualPipeV way down), dark for slot 1.
Colour colour_of(Role role, int variant) {
  static constexpr Colour kColours[4][2] = {
      {{"#fcd9a8", "#222"}, {"#e8892c", "#fff"}},  // forward: orange
      {{"#b7d3f2", "#222"}, {"#3b76c4", "#fff"}},  // backward: blue
      {{"#c4e6bc", "#222"}, {"#4f9e4a", "#fff"}},  // backward for inputs only: green
      {{"#e0cdf0", "#222"}, {"#8a5cb8", "#fff"}},  // weight: purple
  };
  return kColours[static_cast<int>(role)][variant > 0 ? 1 : 0];
}

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string num(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.2f", value);
  std::string text = buffer;
  while (text.back() == '0') text.pop_back();
  if (text.back() == '.') text.pop_back();
  return text;
}

class SvgWriter {
 public:
  void rect(double x, double y, double w, double h, const char* fill, const char* stroke,
            double stroke_width, const std::string& tooltip = {}) {
    out_ << "<rect x=\"" << num(x) << "\" y=\"" << num(y) << "\" width=\"" << num(w)
         << "\" height=\"" << num(h) << "\" fill=\"" << fill << "\"";
    if (stroke) out_ << " stroke=\"" << stroke << "\" stroke-width=\"" << num(stroke_width) << "\"";
    if (tooltip.empty()) {
      out_ << "/>\n";
    } else {
      out_ << "><title>" << escape(tooltip) << "</title></rect>\n";
    }
  }
  void line(double x1, double y1, double x2, double y2, const char* stroke, double width) {
    out_ << "<line x1=\"" << num(x1) << "\" y1=\"" << num(y1) << "\" x2=\"" << num(x2) << "\" y2=\""
         << num(y2) << "\" stroke=\"" << stroke << "\" stroke-width=\"" << num(width) << "\"/>\n";
  }
  void text(double x, double y, const std::string& content, double size, const char* fill,
            const char* anchor = "middle", const char* weight = "normal") {
    out_ << "<text x=\"" << num(x) << "\" y=\"" << num(y) << "\" font-size=\"" << num(size)
         << "\" fill=\"" << fill << "\" text-anchor=\"" << anchor << "\" font-weight=\"" << weight
         << "\" dominant-baseline=\"central\">" << escape(content) << "</text>\n";
  }
  std::ostringstream& raw() { return out_; }
  std::string str() const { return out_.str(); }

 private:
  std::ostringstream out_;
};

std::string unit_name(const char* kind, int d, int s, int m) {
  return std::string(kind) + " d" + std::to_string(d) + " s" + std::to_string(s) + " mb" +
         std::to_string(m);
}

std::string op_name(const Op& op) {
  switch (op.kind) {
    case OpKind::kForward: return unit_name("F", op.direction, op.stage, op.microbatch);
    case OpKind::kBackward:
      return unit_name(op.defer_weight_grad ? "Bz" : "B", op.direction, op.stage, op.microbatch);
    case OpKind::kWeight: return unit_name("W", op.direction, op.stage, op.microbatch);
    case OpKind::kForwardBackward:
      return unit_name("FB", op.direction, op.stage, op.microbatch) + " + " +
             unit_name(op.defer_weight_grad ? "Bz" : "B", op.backward_direction, op.backward_stage,
                       op.backward_microbatch);
    default: return schedule::describe(op);
  }
}

Role backward_role(const Op& op) {
  return op.defer_weight_grad ? Role::kBackwardInput : Role::kBackward;
}

// Fixed sizes in pixels.
constexpr double kLabelWidth = 70, kMargin = 12, kTitleHeight = 34, kAxisHeight = 30;
constexpr double kLegendHeight = 58;
constexpr double kPad = 2;  // vertical gap inside a row

// Where the parts of the picture go, in pixels. One cost unit of time is `scale` pixels wide.
struct Layout {
  int num_ranks = 0;
  double makespan = 0;  // at least 1e-9, so that the scale stays finite
  double scale = 0;
  double row = 0;  // height of one rank's row
  double plot_width = 0, width = 0, height = 0;
  double x0 = 0;      // x of time 0
  double top = 0;     // y of rank 0's row
  double axis_y = 0;  // y of the time axis, under the last row
  double font = 0;    // size of the rank labels and micro-batch numbers

  double row_y(int rank) const { return top + rank * row; }
};

// options.pixels_per_unit, or where that is 0 the scale (0.5 to 40 pixels per unit) that fits the
// picture into options.max_width.
Layout layout_of(const schedule::Schedule& schedule, const SimResult& result,
                 const SvgOptions& options) {
  Layout layout;
  layout.num_ranks = schedule.num_ranks();
  layout.makespan = std::max(result.makespan, 1e-9);
  layout.row = options.row_height;
  layout.scale = options.pixels_per_unit;
  if (layout.scale <= 0) {
    layout.scale =
        std::clamp((options.max_width - kLabelWidth - 2 * kMargin) / layout.makespan, 0.5, 40.0);
  }
  layout.plot_width = layout.makespan * layout.scale;
  layout.width = kLabelWidth + layout.plot_width + 2 * kMargin;
  layout.top = kMargin + kTitleHeight;
  layout.height =
      layout.top + layout.num_ranks * layout.row + kAxisHeight + kLegendHeight + kMargin;
  layout.font = std::min(layout.row * 0.45, 13.0);
  layout.x0 = kMargin + kLabelWidth;
  layout.axis_y = layout.top + layout.num_ranks * layout.row + 4;
  return layout;
}

std::string default_title(const schedule::Schedule& schedule, const SimResult& result,
                          const CostModel& costs) {
  return schedule.name + ": " + std::to_string(schedule.num_ranks()) + " ranks, " +
         std::to_string(schedule.num_microbatches) + " micro-batches (" + to_string(costs) +
         "), makespan " + num(result.makespan);
}

// The <svg> element's opening tag, a white background and the title line.
void draw_header(SvgWriter& svg, const Layout& layout, const std::string& title) {
  svg.raw() << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(layout.width)
            << "\" height=\"" << num(layout.height) << "\" viewBox=\"0 0 " << num(layout.width)
            << " " << num(layout.height) << "\" font-family=\"Helvetica, Arial, sans-serif\">\n";
  svg.rect(0, 0, layout.width, layout.height, "#ffffff", nullptr, 0);
  svg.text(kMargin, kMargin + kTitleHeight / 2 - 4, title, 15, "#222", "start", "bold");
}

// A pale band per rank, so idle time reads as gaps in the band, and the rank's label.
void draw_rank_bands(SvgWriter& svg, const Layout& layout) {
  for (int r = 0; r < layout.num_ranks; ++r) {
    const double y = layout.row_y(r);
    svg.rect(layout.x0, y + kPad, layout.plot_width, layout.row - 2 * kPad, "#f1f1f1", nullptr, 0);
    svg.text(kMargin + kLabelWidth - 8, y + layout.row / 2, "rank " + std::to_string(r),
             layout.font, "#333", "end");
  }
}

// The smallest round step between ticks that leaves room (40 pixels) for their labels, or the
// largest step offered.
double tick_step(double scale) {
  double step = 1;
  for (double candidate : {1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
                           5000.0, 10000.0, 20000.0, 50000.0, 100000.0}) {
    step = candidate;
    if (candidate * scale >= 40) break;
  }
  return step;
}

// The time axis under the rows, its ticks with labels, and a faint grid line per tick.
void draw_time_axis(SvgWriter& svg, const Layout& layout) {
  const double step = tick_step(layout.scale);
  const double axis_y = layout.axis_y;
  svg.line(layout.x0, axis_y, layout.x0 + layout.plot_width, axis_y, "#888", 1);
  for (double t = 0; t <= layout.makespan + 1e-9; t += step) {
    const double x = layout.x0 + t * layout.scale;
    svg.line(x, layout.top, x, axis_y, "#e2e2e2", 0.6);
    svg.line(x, axis_y, x, axis_y + 4, "#888", 1);
    svg.text(x, axis_y + 12, num(t), 10, "#555");
  }
  svg.text(layout.x0 + layout.plot_width, axis_y + 24, "time (cost units)", 10, "#555", "end");
}

// One op's cell: its box in pixels, its hover text, and whether its micro-batch number fits.
struct Cell {
  double x, y, w, h;
  std::string tooltip;
  bool show_text;
};

// An FB op: the forward half and the backward half (widths in the ratio F:B), one outline.
void draw_overlapped_op(SvgWriter& svg, const Layout& layout, const schedule::Schedule& schedule,
                        const Op& op, const Cell& cell, double forward_share) {
  const auto& [x, y, w, h, tooltip, show_text] = cell;
  const int slot = schedule.placement.at(op.direction, op.stage).slot;
  const int back_slot = schedule.placement.at(op.backward_direction, op.backward_stage).slot;
  const double wf = w * forward_share;
  const Colour cf = colour_of(Role::kForward, slot);
  const Colour cb = colour_of(backward_role(op), back_slot);
  svg.rect(x, y, wf, h, cf.fill, nullptr, 0, tooltip);
  svg.rect(x + wf, y, w - wf, h, cb.fill, nullptr, 0, tooltip);
  svg.line(x + wf, y + 2, x + wf, y + h - 2, "#ffffff", 1);
  // NOTE: the outline marks the two halves as one overlapped op.
  svg.rect(x + 0.75, y + 0.75, w - 1.5, h - 1.5, "none", "#111", 1.5);
  if (show_text) {
    svg.text(x + wf / 2, y + h / 2, std::to_string(op.microbatch), layout.font * 0.9, cf.text);
    svg.text(x + wf + (w - wf) / 2, y + h / 2, std::to_string(op.backward_microbatch),
             layout.font * 0.9, cb.text);
  }
}

// An F, B or W op: one box in its kind's colour.
void draw_single_op(SvgWriter& svg, const Layout& layout, const schedule::Schedule& schedule,
                    const Op& op, const Cell& cell) {
  const auto& [x, y, w, h, tooltip, show_text] = cell;
  const int slot = schedule.placement.at(op.direction, op.stage).slot;
  const Role role = op.kind == OpKind::kForward  ? Role::kForward
                    : op.kind == OpKind::kWeight ? Role::kWeight
                                                 : backward_role(op);
  const Colour c = colour_of(role, slot);
  svg.rect(x + 0.5, y, std::max(w - 1, 0.5), h, c.fill, "#ffffff", 0.5, tooltip);
  if (show_text) svg.text(x + w / 2, y + h / 2, std::to_string(op.microbatch), layout.font, c.text);
}

// The cells of `rank`'s compute ops at their simulated times; ops of no width are left out.
void draw_rank_ops(SvgWriter& svg, const Layout& layout, const schedule::Schedule& schedule,
                   const SimResult& result, int rank, double forward_share) {
  const schedule::Program& program = schedule.programs[rank];
  const double y = layout.row_y(rank) + kPad;
  const double h = layout.row - 2 * kPad;
  for (const TimedOp& timed : result.ranks[rank].timeline) {
    const Op& op = program[timed.op_index];
    const double x = layout.x0 + timed.start * layout.scale;
    const double w = (timed.end - timed.start) * layout.scale;
    if (w <= 0) continue;
    const Cell cell{x,
                    y,
                    w,
                    h,
                    "rank " + std::to_string(rank) + ": " + op_name(op) + " [" + num(timed.start) +
                        ", " + num(timed.end) + ")",
                    w >= layout.font * 0.9};
    if (op.kind == OpKind::kForwardBackward) {
      draw_overlapped_op(svg, layout, schedule, op, cell, forward_share);
    } else {
      draw_single_op(svg, layout, schedule, op, cell);
    }
  }
}

// Legend: one swatch per kind and variant that the schedule can show, and the FB key.
void draw_legend(SvgWriter& svg, const Layout& layout, const schedule::Schedule& schedule) {
  bool two_variants = false;
  for (int r = 0; r < layout.num_ranks; ++r) two_variants |= schedule.placement.num_slots(r) > 1;
  const char* variant_names[2] = {"", ""};
  if (schedule.num_directions() == 2) {
    variant_names[0] = " dir 0";
    variant_names[1] = " dir 1";
  } else if (two_variants) {
    // The V shape: slot 0 holds a stage of the way down, slot 1 one of the way back.
    variant_names[0] = " (way down)";
    variant_names[1] = " (way back)";
  }
  const char* role_names[4] = {"forward", "backward", "backward (input)", "weight"};
  double ly = layout.axis_y + kAxisHeight + 8;
  const double swatch = 14;
  for (int variant = 0; variant < (two_variants ? 2 : 1); ++variant) {
    double cx = layout.x0;
    for (int role = 0; role < 4; ++role) {
      const Colour c = colour_of(static_cast<Role>(role), variant);
      svg.rect(cx, ly, swatch, swatch, c.fill, "#999", 0.5);
      const std::string label = std::string(role_names[role]) + variant_names[variant];
      svg.text(cx + swatch + 5, ly + swatch / 2, label, 11, "#333", "start");
      cx += swatch + 12 + 7.0 * label.size();
    }
    if (variant == 0) {
      // The FB key sits at the end of the first legend row.
      const Colour cf = colour_of(Role::kForward, 0), cb = colour_of(Role::kBackward, 1);
      svg.rect(cx, ly, swatch, swatch, cf.fill, nullptr, 0);
      svg.rect(cx + swatch, ly, swatch, swatch, cb.fill, nullptr, 0);
      svg.rect(cx + 0.75, ly + 0.75, 2 * swatch - 1.5, swatch - 1.5, "none", "#111", 1.5);
      svg.text(cx + 2 * swatch + 5, ly + swatch / 2,
               "overlapped forward + backward (FB); number = micro-batch", 11, "#333", "start");
    }
    ly += swatch + 8;
  }
}

}  // namespace

std::string render_svg(const schedule::Schedule& schedule, const SimResult& result,
                       const CostModel& costs, const SvgOptions& options) {
  const Layout layout = layout_of(schedule, result, options);
  SvgWriter svg;
  draw_header(svg, layout,
              options.title.empty() ? default_title(schedule, result, costs) : options.title);
  draw_rank_bands(svg, layout);
  draw_time_axis(svg, layout);
  const double forward_share =
      costs.forward + costs.backward > 0 ? costs.forward / (costs.forward + costs.backward) : 0.5;
  for (int r = 0; r < layout.num_ranks; ++r) {
    draw_rank_ops(svg, layout, schedule, result, r, forward_share);
  }
  draw_legend(svg, layout, schedule);
  svg.raw() << "</svg>\n";
  return svg.str();
}

std::string chrome_trace(const schedule::Schedule& schedule, const SimResult& result) {
  std::ostringstream out;
  out << "{\"traceEvents\":[\n";
  bool first = true;
  auto separator = [&]() -> const char* {
    const char* s = first ? "" : ",\n";
    first = false;
    return s;
  };
  out << separator()
      << "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"tid\":0,\"args\":{\"name\":\""
      << escape(schedule.name) << "\"}}";
  for (std::size_t r = 0; r < result.ranks.size(); ++r) {
    out << separator() << "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":" << r
        << ",\"args\":{\"name\":\"rank " << r << "\"}}";
    for (const TimedOp& timed : result.ranks[r].timeline) {
      const Op& op = schedule.programs[r][timed.op_index];
      char times[96];
      // One cost unit shown as 1 ms: trace timestamps are in microseconds.
      std::snprintf(times, sizeof times, "\"ts\":%.3f,\"dur\":%.3f", timed.start * 1000.0,
                    (timed.end - timed.start) * 1000.0);
      out << separator() << "{\"name\":\"" << op_name(op) << "\",\"cat\":\""
          << schedule::to_string(op.kind) << "\",\"ph\":\"X\",\"pid\":0,\"tid\":" << r << ","
          << times << ",\"args\":{\"op_index\":" << timed.op_index
          << ",\"direction\":" << op.direction << ",\"stage\":" << op.stage
          << ",\"microbatch\":" << op.microbatch << "}}";
    }
  }
  out << "\n]}\n";
  return out.str();
}

}  // namespace dualpipe::sim
