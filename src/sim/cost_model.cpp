#include "dualpipe/sim/cost_model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

namespace dualpipe::sim {
namespace {

void check_cost(const char* name, double value) {
  if (!std::isfinite(value) || value < 0) {
    std::ostringstream message;
    message << "cost " << name << " must be a finite number >= 0, got " << name << "=" << value;
    throw std::invalid_argument(message.str());
  }
}

// Whole-string number parse: "1.5" is fine, "1.5x", "" and "nan" are not.
double parse_number(const std::string& key, const std::string& text) {
  const char* begin = text.c_str();
  char* end = nullptr;
  double value = std::strtod(begin, &end);
  if (text.empty() || end != begin + text.size() || !std::isfinite(value)) {
    throw std::invalid_argument("malformed cost value '" + text + "' for " + key +
                                " (expected a number, e.g. F=1,B=2,W=1,FB=3,comm=0)");
  }
  return value;
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::string::size_type begin = 0;
  while (true) {
    std::string::size_type end = text.find(separator, begin);
    parts.push_back(text.substr(begin, end == std::string::npos ? std::string::npos : end - begin));
    if (end == std::string::npos) return parts;
    begin = end + 1;
  }
}

}  // namespace

void CostModel::check() const {
  check_cost("F", forward);
  check_cost("B", backward);
  check_cost("W", weight);
  check_cost("FB", forward_backward);
  check_cost("comm", comm);
  if (weight > backward) {
    std::ostringstream message;
    message << "cost W must not exceed B (a deferred backward costs B - W), got B=" << backward
            << ", W=" << weight;
    throw std::invalid_argument(message.str());
  }
  for (std::size_t s = 0; s < stage_scale.size(); ++s) {
    if (!std::isfinite(stage_scale[s]) || stage_scale[s] < 0) {
      std::ostringstream message;
      message << "stage multiplier must be a finite number >= 0, got scale[" << s
              << "]=" << stage_scale[s];
      throw std::invalid_argument(message.str());
    }
  }
}

CostModel parse_cost_model(const std::string& text, const CostModel& defaults) {
  CostModel costs = defaults;
  if (!text.empty()) {
    for (const std::string& piece : split(text, ',')) {
      std::string::size_type eq = piece.find('=');
      if (eq == std::string::npos || eq == 0) {
        throw std::invalid_argument("malformed cost '" + piece + "' in '" + text +
                                    "' (expected KEY=VALUE with KEY one of F, B, W, FB, comm, "
                                    "scale; e.g. F=1,B=2,W=1,FB=3,comm=0)");
      }
      std::string key = piece.substr(0, eq);
      std::string value = piece.substr(eq + 1);
      if (key == "F") {
        costs.forward = parse_number(key, value);
      } else if (key == "B") {
        costs.backward = parse_number(key, value);
      } else if (key == "W") {
        costs.weight = parse_number(key, value);
      } else if (key == "FB") {
        costs.forward_backward = parse_number(key, value);
      } else if (key == "comm") {
        costs.comm = parse_number(key, value);
      } else if (key == "scale") {
        costs.stage_scale.clear();
        for (const std::string& factor : split(value, ':')) {
          costs.stage_scale.push_back(parse_number(key, factor));
        }
      } else {
        throw std::invalid_argument("unknown cost '" + key + "' in '" + text +
                                    "' (allowed: F, B, W, FB, comm, scale)");
      }
    }
  }
  costs.check();
  return costs;
}

std::string to_string(const CostModel& costs) {
  std::ostringstream out;
  out << "F=" << costs.forward << ",B=" << costs.backward << ",W=" << costs.weight
      << ",FB=" << costs.forward_backward << ",comm=" << costs.comm;
  if (!costs.stage_scale.empty()) {
    out << ",scale=";
    for (std::size_t s = 0; s < costs.stage_scale.size(); ++s) {
      out << (s ? ":" : "") << costs.stage_scale[s];
    }
  }
  return out.str();
}

double op_cost(const schedule::Op& op, const CostModel& costs) {
  using schedule::OpKind;
  auto scale = [&](int stage) {
    return stage >= 0 && static_cast<std::size_t>(stage) < costs.stage_scale.size()
               ? costs.stage_scale[stage]
               : 1.0;
  };
  switch (op.kind) {
    case OpKind::kForward: return costs.forward * scale(op.stage);
    case OpKind::kBackward:
      return (op.defer_weight_grad ? costs.backward - costs.weight : costs.backward) *
             scale(op.stage);
    case OpKind::kWeight: return costs.weight * scale(op.stage);
    case OpKind::kForwardBackward: {
      double pair = op.defer_weight_grad ? std::max(0.0, costs.forward_backward - costs.weight)
                                         : costs.forward_backward;
      if (costs.stage_scale.empty()) return pair;
      double total = costs.forward + costs.backward;
      double factor =
          total > 0
              ? (costs.forward * scale(op.stage) + costs.backward * scale(op.backward_stage)) /
                    total
              : scale(op.stage);
      return pair * factor;
    }
    default: return 0.0;
  }
}

}  // namespace dualpipe::sim
