#pragma once
// Reading measured expert loads (`[layer][logical_expert]`) from text.
//
// JSON: a 2-D array of numbers, or an object whose "weight" member is one.
// CSV: one layer per line, loads separated by commas; blank lines and lines starting with '#'
// are skipped, and a first line without any numeric field is taken as a header and skipped (a
// first line with some numbers and a bad field is an error). Loads must be finite, >= 0 and
// <= kMaxLoad (1e15).

#include <string>
#include <string_view>

#include "dualpipe/eplb/expert_placement.h"

namespace dualpipe::eplb {

enum class LoadFormat { kAuto, kJson, kCsv };

// Throws std::invalid_argument naming the line / position and what was expected when the text
// is not a non-empty rectangular matrix of finite numbers >= 0. kAuto picks JSON when the first
// non-blank character is '[' or '{', CSV otherwise.
LoadMatrix parse_loads(std::string_view text, LoadFormat format = LoadFormat::kAuto);

// The format a file name implies: ".json" -> kJson, ".csv" -> kCsv, anything else kAuto.
LoadFormat format_from_path(const std::string& path);

}  // namespace dualpipe::eplb
