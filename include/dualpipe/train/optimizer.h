#pragma once
// AdamW over a fixed list of named parameters, with its whole state as named tensors so a
// checkpoint restores it exactly. Plain element-wise arithmetic: two processes holding equal
// parameters and gradients compute bit-identical updates, whatever the pipeline layout.

#include <ATen/Tensor.h>

#include <string>
#include <unordered_map>
#include <vector>

#include "dualpipe/train/checkpoint.h"

namespace dualpipe::train {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

// One AdamW update of `param` (in place) from `grad`, with its moments `exp_avg` and `exp_avg_sq`
// (in place) at 1-based step `step`. Element-wise: any slice of a parameter updated alone gets
// the same values as when the whole parameter is, which is what lets ShardedAdamW
// (zero_optimizer.h) update a shard of a flat buffer. Does not communicate.
void adamw_update(at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg,
                  at::Tensor& exp_avg_sq, double lr, int64_t step, const AdamWOptions& options);

class AdamW {
 public:
  // `names[i]` names `params[i]` (a leaf requiring grad); both lists are kept.
  AdamW(std::vector<std::string> names, std::vector<at::Tensor> params, AdamWOptions options = {});

  // One update with learning rate `lr` from the parameters' current .grad() (parameters without a
  // gradient are skipped, their moments unchanged). Does not zero the gradients.
  void step(double lr);
  void zero_grad();
  int64_t num_steps() const { return step_; }
  // Bytes of the moment tensors this optimiser holds (its whole state but the step count).
  int64_t state_bytes() const;
  // The state tensors of `parameter` (its moments exp_avg, exp_avg_sq; live, not copies), e.g. to
  // move them with an expert. Throws std::invalid_argument for a tensor the optimiser does not
  // update.
  std::vector<at::Tensor> state_of(const at::Tensor& parameter) const;

  // Copies of the moments as "<prefix><name>.exp_avg" / ".exp_avg_sq" plus "<prefix>step".
  void save_state(NamedTensors& out, const std::string& prefix) const;
  // Replaces the moments (moments[i] = {exp_avg, exp_avg_sq} of parameter i, copied) and the
  // step count, e.g. from a resharded ZeRO-1 state. Throws std::invalid_argument on a count or
  // shape mismatch.
  void set_state(const std::vector<std::vector<at::Tensor>>& moments, int64_t step);
  // Restores what save_state() wrote. Throws std::invalid_argument naming a missing entry or a
  // shape mismatch.
  void load_state(const NamedTensors& in, const std::string& prefix);

 private:
  std::vector<std::string> names_;
  std::vector<at::Tensor> params_;
  std::vector<at::Tensor> exp_avg_;
  std::vector<at::Tensor> exp_avg_sq_;
  std::unordered_map<const void*, std::size_t> index_of_;  // parameter's TensorImpl -> index
  AdamWOptions options_;
  int64_t step_ = 0;
};

// Learning rate at 1-based `step`: linear warm-up over `warmup_steps`, then cosine decay to 10%
// of `lr` at `total_steps`.
double learning_rate_at(int step, int total_steps, int warmup_steps, double lr);

}  // namespace dualpipe::train
