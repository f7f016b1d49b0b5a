#include "dualpipe/train/generate.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <filesystem>
#include <iostream>
#include <set>
#include <stdexcept>

#include "dualpipe/train/checkpoint.h"
#include "dualpipe/train/model.h"

namespace dualpipe::train {

LoadedModel load_model(const std::string& run_dir) {
  const Manifest manifest = read_latest_checkpoint(run_dir);
  LoadedModel model;
  model.config = config_from_json([&] {
    nlohmann::json c = manifest.config;
    c.erase("initial_held_out_loss");
    return c;
  }());
  model.step = manifest.step;
  if (model.config.ep > 1) {
    throw std::invalid_argument("generate reads runs with ep=1 only; " + run_dir +
                                " used ep=" + std::to_string(model.config.ep));
  }
  verify_checkpoint_files(run_dir, manifest, std::cerr);
  NamedTensors all;
  for (int rank = 0; rank < manifest.num_ranks; ++rank) {
    NamedTensors t = load_rank_file(run_dir, manifest, rank);
    all.insert(t.begin(), t.end());  // two copies of a DualPipe stage are equal: keep either
  }
  for (int s = 0; s < model.config.num_stages(); ++s) {
    auto stage = build_stage(model.config, s);
    if (!manifest.expert_placement.empty()) {
      // The experts sit in the slots of the run's last EPLB placement: route by it.
      for (int b = 0; b < stage->num_blocks(); ++b) {
        const auto layer = static_cast<std::size_t>(layer_index(model.config, s, b));
        if (layer >= manifest.expert_placement.size()) {
          throw std::invalid_argument("checkpoint in " + run_dir + " places experts of " +
                                      std::to_string(manifest.expert_placement.size()) +
                                      " layers, the model has more");
        }
        stage->block(b).moe()->set_physical_to_logical(manifest.expert_placement[layer]);
      }
    }
    load_stage_state(*stage, s, all);
    stage->eval();
    model.stages.push_back(stage);
  }
  return model;
}

at::Tensor forward_logits(const std::vector<std::shared_ptr<moe::MoEStage>>& stages,
                          const at::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  runtime::TensorList x = {tokens};
  for (const auto& stage : stages) x = stage->forward_reference(x);
  return x.at(0);
}

std::string generate_text(const LoadedModel& model, const std::string& prompt, int num_bytes,
                          double temperature, std::uint64_t seed) {
  std::vector<int64_t> context(prompt.begin(), prompt.end());
  for (auto& t : context) t &= 0xff;
  if (context.empty()) context.push_back('\n');
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::string out;
  for (int i = 0; i < num_bytes; ++i) {
    const int64_t len =
        std::min<int64_t>(model.config.seq_len, static_cast<int64_t>(context.size()));
    at::Tensor tokens =
        at::tensor(std::vector<int64_t>(context.end() - len, context.end()), at::kLong)
            .view({1, len});
    at::Tensor logits = forward_logits(model.stages, tokens)[0][len - 1].to(at::kDouble);
    int64_t next = 0;
    if (temperature <= 0) {
      next = logits.argmax().item<int64_t>();
    } else {
      at::Tensor probs = at::softmax(logits / temperature, 0);
      next = at::multinomial(probs, 1, false, generator).item<int64_t>();
    }
    context.push_back(next);
    out.push_back(static_cast<char>(next));
  }
  return out;
}

}  // namespace dualpipe::train
