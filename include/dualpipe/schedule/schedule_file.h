#pragma once
// Reading a schedule file, whatever its form: the one loader `dualpipe sim --schedule-file`, the
// runtime and the tests use, so every loaded schedule goes through the same bounded read, the
// same reader checks (check_loaded_schedule) and the validator before anything runs it.

#include <string>

#include "dualpipe/schedule/schedule.h"

namespace dualpipe::schedule {

// Reads `path` with read_file_bounded() and parses it by its content: JSON when it starts with
// '{' (to_json or a reference-order oracle file), a PyTorch CSV when looks_like_pytorch_csv()
// (named `name`, or inferred when `name` is empty; see parse_pytorch_csv), else the text form.
// `name` must be empty for JSON and text files (they name their schedule). Then validate()s.
// Throws std::invalid_argument (std::runtime_error when the read fails) whose message starts
// with "schedule file '<path>': ". Blocks on the read.
Schedule read_schedule_file(const std::string& path, const std::string& name = "");

// The form a schedule is saved in, by the path's extension: PyTorch's CSV (compute actions, as
// its _load_csv reads by default) for ".csv", the text form for ".txt", else JSON (to_json,
// with the placement). read_schedule_file() reads each back. Pure.
std::string schedule_file_text(const Schedule& schedule, const std::string& path);

// Writes schedule_file_text() to `path`. Throws std::runtime_error naming the path when it
// cannot be written. Blocks on the write.
void write_schedule_file(const std::string& path, const Schedule& schedule);

}  // namespace dualpipe::schedule
