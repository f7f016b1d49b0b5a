#include "dualpipe/train/zero_optimizer.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <iterator>
#include <stdexcept>
#include <string>

#include "dualpipe/check.h"
#include "dualpipe/runtime/gradient_buffers.h"

namespace dualpipe::train {
namespace {

std::string describe_layout(const at::Tensor& layout) {
  const at::Tensor l = layout.to(at::kLong).contiguous();
  const int64_t* data = l.data_ptr<int64_t>();
  std::string text = "shard " + std::to_string(data[1]) + " of DP=" + std::to_string(data[0]) +
                     " over flat buffers of";
  for (int64_t i = 2; i < l.numel(); ++i) text += " " + std::to_string(data[i]);
  return text + " elements";
}

}  // namespace

ShardedAdamW::ShardedAdamW(std::vector<std::string> names, std::vector<at::Tensor> params,
                           AdamWOptions options, runtime::CommunicatorPtr group,
                           std::chrono::milliseconds timeout, runtime::GroupMembers members)
    : names_(std::move(names)),
      params_(std::move(params)),
      options_(options),
      group_(std::move(group)),
      timeout_(timeout),
      members_(std::move(members)) {
  DUALPIPE_CHECK_EQ(names_.size(), params_.size(), "ShardedAdamW: one name per parameter; ");
  DUALPIPE_CHECK(group_, "ShardedAdamW needs a data-parallel communicator, got none");
  rank_ = group_->getRank();
  size_ = group_->getSize();
  for (std::size_t i = 0; i < params_.size(); ++i) {
    DUALPIPE_CHECK(params_[i].is_contiguous(), "ShardedAdamW: parameter ", names_[i],
                   " is not contiguous");
  }
  buckets_ = make_buckets(params_, size_, rank_);
}

std::vector<ShardedAdamW::Bucket> ShardedAdamW::make_buckets(const std::vector<at::Tensor>& params,
                                                             int size, int rank) {
  std::vector<Bucket> buckets;
  // NOTE: the same bucketing as runtime::flatten_gradients (by dtype and device, in order of
  // first appearance), so step() can take its flat gradients as they come.
  for (std::size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    auto it = std::find_if(buckets.begin(), buckets.end(), [&](const Bucket& b) {
      return b.options.dtype() == p.dtype() && b.options.device() == p.device();
    });
    if (it == buckets.end()) {
      buckets.emplace_back();
      buckets.back().options = p.options();
      it = std::prev(buckets.end());
    }
    it->params.push_back(static_cast<int>(i));
    it->offsets.push_back(it->numel);
    it->numel += p.numel();
  }
  for (Bucket& b : buckets) {
    b.shard_numel = (b.numel + size - 1) / size;
    b.begin = std::min(b.numel, rank * b.shard_numel);
    b.end = std::min(b.numel, (rank + 1) * b.shard_numel);
    b.exp_avg = at::zeros({b.end - b.begin}, b.options);
    b.exp_avg_sq = at::zeros({b.end - b.begin}, b.options);
  }
  return buckets;
}

void ShardedAdamW::copy_range(const Bucket& bucket, int64_t begin, int64_t end,
                              const std::vector<at::Tensor>& tensors, at::Tensor& flat,
                              bool to_tensors) {
  c10::NoGradGuard no_grad;
  for (std::size_t k = 0; k < bucket.params.size(); ++k) {
    const at::Tensor& t = tensors[static_cast<std::size_t>(bucket.params[k])];
    const int64_t offset = bucket.offsets[k];
    const int64_t lo = std::max(begin, offset);
    const int64_t hi = std::min(end, offset + t.numel());
    if (lo >= hi) continue;
    at::Tensor part = t.view({-1}).narrow(0, lo - offset, hi - lo);
    at::Tensor slot = flat.narrow(0, lo - begin, hi - lo);
    if (to_tensors) {
      part.copy_(slot);
    } else {
      slot.copy_(part);
    }
  }
}

void ShardedAdamW::all_gather_into(const Bucket& bucket, const at::Tensor& local,
                                   const std::vector<at::Tensor>& tensors) const {
  // NOTE: Gloo's allgather needs equal sizes: every shard travels padded to shard_numel.
  std::vector<at::Tensor> input = {at::zeros({bucket.shard_numel}, bucket.options)};
  input[0].narrow(0, 0, local.numel()).copy_(local);
  std::vector<std::vector<at::Tensor>> output(1);
  for (int r = 0; r < size_; ++r)
    output[0].push_back(at::empty({bucket.shard_numel}, bucket.options));
  runtime::wait_collective(group_->allgather(output, input), *group_, members_,
                           "allgather of the updated ZeRO-1 parameter shards", timeout_);
  for (int r = 0; r < size_; ++r) {
    const int64_t begin = std::min(bucket.numel, r * bucket.shard_numel);
    const int64_t end = std::min(bucket.numel, (r + 1) * bucket.shard_numel);
    at::Tensor piece = output[0][static_cast<std::size_t>(r)].narrow(0, 0, end - begin);
    copy_range(bucket, begin, end, tensors, piece, /*to_tensors=*/true);
  }
}

void ShardedAdamW::step(double lr) {
  ++step_;
  runtime::FlatGradients flat = runtime::flatten_gradients(params_);
  DUALPIPE_ASSERT(flat.buckets.size() == buckets_.size(),
                  "ShardedAdamW: flatten_gradients made a different number of buckets");
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& bucket = buckets_[b];
    // NOTE: a reduce-scatter done as an allreduce of the whole flat gradient, of which this rank
    // keeps its shard: LibTorch 1.13's ProcessGroupGloo does not implement reduce_scatter
    // ("ProcessGroupGloo does not support reduce_scatter"; _reduce_scatter_base neither). It
    // costs a transient buffer of the whole gradient (bucket.numel elements; flatten_gradients
    // makes it anyway) and twice a reduce-scatter's traffic, and it sums in exactly the order the
    // replicated path's allreduce does, so ZeRO-1 and replicated state give the same bits.
    std::vector<at::Tensor> sum = {flat.buckets[b]};
    if (size_ > 1) {
      runtime::wait_collective(group_->allreduce(sum), *group_, members_,
                               "allreduce of the gradients for ZeRO-1", timeout_);
    }
    const at::Tensor grad = sum[0].narrow(0, bucket.begin, bucket.end - bucket.begin);
    at::Tensor param = at::empty({bucket.end - bucket.begin}, bucket.options);
    copy_range(bucket, bucket.begin, bucket.end, params_, param, /*to_tensors=*/false);
    adamw_update(param, grad, bucket.exp_avg, bucket.exp_avg_sq, lr, step_, options_);
    all_gather_into(bucket, param, params_);
  }
}

void ShardedAdamW::zero_grad() {
  for (at::Tensor& p : params_) {
    if (p.grad().defined()) p.mutable_grad() = at::Tensor();
  }
}

int64_t ShardedAdamW::state_bytes() const {
  int64_t bytes = 0;
  for (const Bucket& b : buckets_) {
    bytes += static_cast<int64_t>(b.exp_avg.nbytes() + b.exp_avg_sq.nbytes());
  }
  return bytes;
}

nlohmann::json ShardedAdamW::layout() const {
  nlohmann::json buckets = nlohmann::json::array();
  for (const Bucket& b : buckets_) {
    buckets.push_back({{"dtype", c10::toString(b.options.dtype().toScalarType())},
                       {"numel", b.numel},
                       {"shard_begin", b.begin},
                       {"shard_end", b.end}});
  }
  return {{"dp", size_}, {"dp_rank", rank_}, {"buckets", buckets}};
}

std::vector<std::vector<at::Tensor>> ShardedAdamW::gather_moments() const {
  std::vector<at::Tensor> exp_avg, exp_avg_sq;
  for (const at::Tensor& p : params_) {
    exp_avg.push_back(at::zeros(p.sizes(), p.options()));
    exp_avg_sq.push_back(at::zeros(p.sizes(), p.options()));
  }
  for (const Bucket& bucket : buckets_) {
    all_gather_into(bucket, bucket.exp_avg, exp_avg);
    all_gather_into(bucket, bucket.exp_avg_sq, exp_avg_sq);
  }
  std::vector<std::vector<at::Tensor>> moments;
  for (std::size_t i = 0; i < params_.size(); ++i) moments.push_back({exp_avg[i], exp_avg_sq[i]});
  return moments;
}

void ShardedAdamW::scatter_moments(const std::vector<std::vector<at::Tensor>>& moments) {
  DUALPIPE_CHECK_EQ(moments.size(), params_.size(), "ShardedAdamW::scatter_moments: ");
  std::vector<at::Tensor> exp_avg, exp_avg_sq;
  for (const std::vector<at::Tensor>& m : moments) {
    DUALPIPE_CHECK_EQ(m.size(), 2u, "ShardedAdamW::scatter_moments: moments per parameter; ");
    exp_avg.push_back(m[0].contiguous());
    exp_avg_sq.push_back(m[1].contiguous());
  }
  for (Bucket& bucket : buckets_) {
    copy_range(bucket, bucket.begin, bucket.end, exp_avg, bucket.exp_avg, false);
    copy_range(bucket, bucket.begin, bucket.end, exp_avg_sq, bucket.exp_avg_sq, false);
  }
}

void ShardedAdamW::set_state(const std::vector<std::vector<at::Tensor>>& moments, int64_t step) {
  scatter_moments(moments);
  step_ = step;
}

std::vector<std::vector<at::Tensor>> ShardedAdamW::moments_from_shards(
    const std::vector<at::Tensor>& params, const std::vector<NamedTensors>& shards,
    const std::string& prefix) {
  const int size = static_cast<int>(shards.size());
  DUALPIPE_CHECK_GE(size, 1, "moments_from_shards needs at least one shard; ");
  std::vector<at::Tensor> exp_avg, exp_avg_sq;
  for (const at::Tensor& p : params) {
    exp_avg.push_back(at::zeros(p.sizes(), p.options()));
    exp_avg_sq.push_back(at::zeros(p.sizes(), p.options()));
  }
  for (int d = 0; d < size; ++d) {
    const std::vector<Bucket> buckets = make_buckets(params, size, d);
    std::vector<int64_t> want = {size, d};
    for (const Bucket& b : buckets) want.push_back(b.numel);
    auto entry = [&](const std::string& key) {
      auto it = shards[d].find(prefix + key);
      DUALPIPE_CHECK(it != shards[d].end(), "optimizer shard ", d, " of ", size, " lacks ",
                     prefix + key);
      return it->second;
    };
    const at::Tensor layout = entry("zero.layout").to(at::kLong);
    const at::Tensor expected = at::tensor(want, at::kLong);
    DUALPIPE_CHECK(layout.sizes().equals(expected.sizes()) && at::equal(layout, expected),
                   "optimizer shard file ", d, " is ", describe_layout(layout), ", expected ",
                   describe_layout(expected));
    for (std::size_t b = 0; b < buckets.size(); ++b) {
      const std::string key = "zero." + std::to_string(b);
      at::Tensor m = entry(key + ".exp_avg").to(buckets[b].options);
      at::Tensor v = entry(key + ".exp_avg_sq").to(buckets[b].options);
      DUALPIPE_CHECK_EQ(m.numel(), buckets[b].end - buckets[b].begin, "optimizer shard ", d,
                        " bucket ", b, ": ");
      copy_range(buckets[b], buckets[b].begin, buckets[b].end, exp_avg, m, /*to_tensors=*/true);
      copy_range(buckets[b], buckets[b].begin, buckets[b].end, exp_avg_sq, v, true);
    }
  }
  std::vector<std::vector<at::Tensor>> moments;
  for (std::size_t i = 0; i < params.size(); ++i) moments.push_back({exp_avg[i], exp_avg_sq[i]});
  return moments;
}

void ShardedAdamW::save_state(NamedTensors& out, const std::string& prefix) const {
  std::vector<int64_t> layout = {size_, rank_};
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    const std::string key = prefix + "zero." + std::to_string(b);
    out[key + ".exp_avg"] = buckets_[b].exp_avg.clone();
    out[key + ".exp_avg_sq"] = buckets_[b].exp_avg_sq.clone();
    layout.push_back(buckets_[b].numel);
  }
  out[prefix + "zero.layout"] = at::tensor(layout, at::kLong);
  out[prefix + "step"] = at::tensor(step_, at::kLong);
}

void ShardedAdamW::load_state(const NamedTensors& in, const std::string& prefix) {
  auto fetch = [&](const std::string& key) {
    auto it = in.find(key);
    if (it == in.end()) {
      throw std::invalid_argument("sharded optimizer state lacks " + key +
                                  (in.count(prefix + "step") > 0
                                       ? " (the file holds a replicated optimiser state: "
                                         "written with --zero 0 or --dp 1)"
                                       : ""));
    }
    return it->second;
  };
  std::vector<int64_t> mine = {size_, rank_};
  for (const Bucket& b : buckets_) mine.push_back(b.numel);
  const at::Tensor expected = at::tensor(mine, at::kLong);
  const at::Tensor saved = fetch(prefix + "zero.layout");
  if (!saved.sizes().equals(expected.sizes()) || !at::equal(saved.to(at::kLong), expected)) {
    throw std::invalid_argument("sharded optimizer state is " + describe_layout(saved) +
                                ", this rank holds " + describe_layout(expected));
  }
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    const std::string key = prefix + "zero." + std::to_string(b);
    buckets_[b].exp_avg.copy_(fetch(key + ".exp_avg"));
    buckets_[b].exp_avg_sq.copy_(fetch(key + ".exp_avg_sq"));
  }
  step_ = fetch(prefix + "step").item<int64_t>();
}

}  // namespace dualpipe::train
