// `dualpipe generate --run DIR --prompt TEXT`: samples text from a trained run's checkpoint.
#include <iostream>
#include <memory>
#include <string>

#include "command.h"
#include "dualpipe/train/generate.h"

namespace dualpipe::cli {

Command add_generate_command(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "generate", "Sample text from the latest checkpoint of a `dualpipe train` run (one process)");
  struct Options {
    std::string run_dir = "dualpipe-run";
    std::string prompt = "The ";
    int num_bytes = 300;
    double temperature = 0.8;
    std::uint64_t seed = 1;
  };
  auto o = std::make_shared<Options>();
  sub->add_option("--run", o->run_dir, "Run folder of `dualpipe train`")->capture_default_str();
  sub->add_option("--prompt", o->prompt, "Text to continue")->capture_default_str();
  sub->add_option("--bytes", o->num_bytes, "Bytes to generate")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--temperature", o->temperature, "Sampling temperature (0: greedy)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  sub->add_option("--seed", o->seed, "Sampling seed")->capture_default_str();
  return {sub, [o] {
            const train::LoadedModel model = train::load_model(o->run_dir);
            std::cerr << "dualpipe generate: " << o->run_dir << ", step " << model.step << ", "
                      << model.stages.size() << " stages\n";
            std::cout << o->prompt
                      << train::generate_text(model, o->prompt, o->num_bytes, o->temperature,
                                              o->seed)
                      << "\n";
            return 0;
          }};
}

}  // namespace dualpipe::cli
