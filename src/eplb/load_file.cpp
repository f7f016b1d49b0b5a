#include "dualpipe/eplb/load_file.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace dualpipe::eplb {
namespace {

std::string format_load(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

void check_matrix(const LoadMatrix& m, const char* format) {
  if (m.empty()) throw std::invalid_argument(std::string(format) + " loads: no layers found");
  for (size_t layer = 0; layer < m.size(); ++layer) {
    if (m[layer].empty() || m[layer].size() != m.front().size()) {
      throw std::invalid_argument(std::string(format) + " loads: layer " + std::to_string(layer) +
                                  " has " + std::to_string(m[layer].size()) +
                                  " experts, layer 0 has " + std::to_string(m.front().size()));
    }
    for (size_t e = 0; e < m[layer].size(); ++e) {
      if (!std::isfinite(m[layer][e]) || m[layer][e] < 0 || m[layer][e] > kMaxLoad) {
        throw std::invalid_argument(std::string(format) + " loads: layer " + std::to_string(layer) +
                                    ", expert " + std::to_string(e) + " has load " +
                                    format_load(m[layer][e]) +
                                    ", loads must be finite, >= 0 and <= 1e15");
      }
    }
  }
}

LoadMatrix parse_json(std::string_view text) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for 1e400
    throw std::invalid_argument(std::string("JSON loads: ") + e.what());
  }
  if (doc.is_object()) {
    if (!doc.contains("weight")) {
      throw std::invalid_argument("JSON loads: an object needs a \"weight\" member");
    }
    doc = doc["weight"];
  }
  if (!doc.is_array()) {
    throw std::invalid_argument("JSON loads: expected a 2-D array [layer][expert], got " +
                                std::string(doc.type_name()));
  }
  LoadMatrix m;
  for (size_t layer = 0; layer < doc.size(); ++layer) {
    const nlohmann::json& row = doc[layer];
    if (!row.is_array()) {
      throw std::invalid_argument("JSON loads: layer " + std::to_string(layer) +
                                  " is not an array but " + std::string(row.type_name()));
    }
    std::vector<double>& out = m.emplace_back();
    for (size_t e = 0; e < row.size(); ++e) {
      if (!row[e].is_number()) {
        throw std::invalid_argument("JSON loads: layer " + std::to_string(layer) + ", expert " +
                                    std::to_string(e) + " is not a number but " +
                                    std::string(row[e].type_name()));
      }
      out.push_back(row[e].get<double>());
    }
  }
  check_matrix(m, "JSON");
  return m;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool parse_number(std::string_view field, double& value) {
  const std::string s(trim(field));
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  value = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && errno == 0;
}

// The fields of one CSV line, trimmed.
std::vector<std::string_view> split_fields(std::string_view line) {
  std::vector<std::string_view> fields;
  while (true) {
    const size_t comma = line.find(',');
    fields.push_back(trim(line.substr(0, comma)));
    if (comma == std::string_view::npos) return fields;
    line.remove_prefix(comma + 1);
  }
}

// NOTE: a first line is a header only when none of its fields is a number ("expert0,expert1"):
// a data line with one bad field ("100,2,x,4") is an error, not a header to skip.
LoadMatrix parse_csv(std::string_view text) {
  LoadMatrix m;
  int line_number = 0;
  bool first_content_line = true;
  while (!text.empty()) {
    const size_t newline = text.find('\n');
    const std::string_view line =
        trim(newline == std::string_view::npos ? text : text.substr(0, newline));
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
    ++line_number;
    if (line.empty() || line.front() == '#') continue;
    const std::vector<std::string_view> fields = split_fields(line);
    std::vector<double> row;
    int bad_field = -1;
    for (size_t f = 0; f < fields.size(); ++f) {
      double value = 0;
      if (parse_number(fields[f], value)) {
        row.push_back(value);
      } else if (bad_field < 0) {
        bad_field = static_cast<int>(f);
      }
    }
    const bool header = first_content_line && row.empty();
    first_content_line = false;
    if (header) continue;
    auto where = [&](size_t f) {
      return "CSV loads, line " + std::to_string(line_number) + ", field " + std::to_string(f + 1);
    };
    if (bad_field >= 0) {
      throw std::invalid_argument(where(bad_field) + ": expected a number, got \"" +
                                  std::string(fields[bad_field]) + "\"");
    }
    for (size_t f = 0; f < row.size(); ++f) {
      if (!std::isfinite(row[f]) || row[f] < 0 || row[f] > kMaxLoad) {
        throw std::invalid_argument(where(f) + ": load " + std::string(fields[f]) +
                                    " is not a finite number in [0, 1e15]");
      }
    }
    m.push_back(std::move(row));
  }
  check_matrix(m, "CSV");
  return m;
}

}  // namespace

LoadMatrix parse_loads(std::string_view text, LoadFormat format) {
  if (format == LoadFormat::kAuto) {
    const std::string_view t = trim(text);
    format =
        !t.empty() && (t.front() == '[' || t.front() == '{') ? LoadFormat::kJson : LoadFormat::kCsv;
  }
  return format == LoadFormat::kJson ? parse_json(text) : parse_csv(text);
}

LoadFormat format_from_path(const std::string& path) {
  auto ends_with = [&](const std::string& suffix) {
    return path.size() >= suffix.size() &&
           path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (ends_with(".json")) return LoadFormat::kJson;
  if (ends_with(".csv")) return LoadFormat::kCsv;
  return LoadFormat::kAuto;
}

}  // namespace dualpipe::eplb
