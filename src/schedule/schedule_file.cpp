#include "dualpipe/schedule/schedule_file.h"

#include <fstream>
#include <stdexcept>

#include "dualpipe/read_file.h"
#include "dualpipe/schedule/pytorch_csv.h"
#include "dualpipe/schedule/serialize.h"
#include "dualpipe/schedule/validator.h"

namespace dualpipe::schedule {

Schedule read_schedule_file(const std::string& path, const std::string& name) {
  const std::string what = "schedule file '" + path + "'";
  const std::string text = read_file_bounded(path, what);
  try {
    const std::size_t first = text.find_first_not_of(" \t\r\n");
    Schedule schedule;
    if (looks_like_pytorch_csv(text)) {
      schedule = parse_pytorch_csv(text, name);
    } else {
      if (!name.empty()) {
        throw std::invalid_argument("names its schedule itself; a schedule name (\"" + name +
                                    "\") is for PyTorch CSV files only");
      }
      schedule = first != std::string::npos && text[first] == '{' ? parse_schedule_json(text)
                                                                  : parse_schedule_text(text);
    }
    validate(schedule);
    return schedule;
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(what + ": " + e.what());
  }
}

namespace {

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::string schedule_file_text(const Schedule& schedule, const std::string& path) {
  if (ends_with(path, ".csv")) return to_pytorch_csv(schedule);
  if (ends_with(path, ".txt")) return to_text(schedule);
  return to_json(schedule).dump(1) + "\n";
}

void write_schedule_file(const std::string& path, const Schedule& schedule) {
  const std::string text = schedule_file_text(schedule, path);
  std::ofstream out(path, std::ios::binary);
  if (!out || !(out << text) || !out.flush()) {
    throw std::runtime_error("cannot write schedule file '" + path + "'");
  }
}

}  // namespace dualpipe::schedule
