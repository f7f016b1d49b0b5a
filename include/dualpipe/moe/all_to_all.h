#pragma once
// Token all-to-all as an autograd function (the unsegmented path: MoELayer::forward).

#include <cstdint>
#include <string>
#include <vector>

#include "dualpipe/moe/comm_stream.h"

namespace dualpipe::moe {

// Sends rows of `input` as CommStream::all_to_all does and waits for them; differentiable: the
// backward is the reverse all-to-all of the gradients (send and receive splits swapped), so the
// backward of a dispatch is a combine-shaped exchange and vice versa. Blocking on every rank of
// `stream`, forward and backward. `stream` must outlive the backward pass.
at::Tensor all_to_all(CommStream& stream, const at::Tensor& input,
                      const std::vector<int64_t>& send_splits,
                      const std::vector<int64_t>& recv_splits, const std::string& name);

}  // namespace dualpipe::moe
