#pragma once
// The `dualpipe` command's subcommands. Each `add_*_command` declares its subcommand and
// options on `app` and returns the action that runs when that subcommand was chosen.
// Actions report user errors by throwing std::exception (main prints one line, exits 1).

#include <CLI/CLI.hpp>
#include <charconv>
#include <functional>
#include <limits>
#include <string>
#include <type_traits>

namespace dualpipe::cli {

struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

// A check for an integer option of type T that names T's range: CLI11 itself turns "-1" into
// 2^64-1 for an unsigned option and says only "Could not convert" for 99999999999 or 64.5.
template <typename T>
CLI::Validator integer_in_range() {
  static_assert(std::is_integral_v<T>);
  const std::string range = "[" + std::to_string(std::numeric_limits<T>::min()) + ", " +
                            std::to_string(std::numeric_limits<T>::max()) + "]";
  return CLI::Validator(
      [range](std::string& text) -> std::string {
        T value{};
        const char* end = text.data() + text.size();
        const auto [ptr, error] = std::from_chars(text.data(), end, value);
        if (text.empty() || error != std::errc() || ptr != end) {
          return "expected an integer in " + range + ", got '" + text + "'";
        }
        return {};
      },
      "INT in " + range);
}

Command add_bench_command(CLI::App& app);
Command add_eplb_command(CLI::App& app);
Command add_generate_command(CLI::App& app);
Command add_launch_command(CLI::App& app);
Command add_plan_command(CLI::App& app);
Command add_sim_command(CLI::App& app);
Command add_train_command(CLI::App& app);

}  // namespace dualpipe::cli
