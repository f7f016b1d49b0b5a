#include "dualpipe/schedule/item.h"

#include "dualpipe/check.h"

namespace dualpipe::schedule {

int consumer_stage(const Item& item) {
  return item.kind == ItemKind::kActivation ? item.stage + 1 : item.stage - 1;
}

std::optional<Item> forward_input(int direction, int stage, int microbatch) {
  if (stage == 0) return std::nullopt;
  return Item{ItemKind::kActivation, direction, stage - 1, microbatch};
}

std::optional<Item> forward_output(int direction, int stage, int microbatch, int num_stages) {
  if (stage + 1 >= num_stages) return std::nullopt;
  return Item{ItemKind::kActivation, direction, stage, microbatch};
}

std::optional<Item> backward_input(int direction, int stage, int microbatch, int num_stages) {
  if (stage + 1 >= num_stages) return std::nullopt;
  return Item{ItemKind::kGrad, direction, stage + 1, microbatch};
}

std::optional<Item> backward_output(int direction, int stage, int microbatch) {
  if (stage == 0) return std::nullopt;
  return Item{ItemKind::kGrad, direction, stage, microbatch};
}

Item item_of(const Op& op) {
  DUALPIPE_CHECK(op.is_communication(), "item_of needs a communication op, got ", describe(op));
  const bool activation = op.kind == OpKind::kSendActivation || op.kind == OpKind::kRecvActivation;
  return Item{activation ? ItemKind::kActivation : ItemKind::kGrad, op.direction, op.stage,
              op.microbatch};
}

Op send_op(const Item& item, int peer) {
  return item.kind == ItemKind::kActivation
             ? Op::send_activation(item.direction, item.stage, item.microbatch, peer)
             : Op::send_grad(item.direction, item.stage, item.microbatch, peer);
}

Op recv_op(const Item& item, int peer) {
  return item.kind == ItemKind::kActivation
             ? Op::recv_activation(item.direction, item.stage, item.microbatch, peer)
             : Op::recv_grad(item.direction, item.stage, item.microbatch, peer);
}

int producer_rank(const Item& item, const Placement& placement) {
  return placement.rank_of(item.direction, item.stage);
}

int consumer_rank(const Item& item, const Placement& placement) {
  return placement.rank_of(item.direction, consumer_stage(item));
}

int peer_of(const Op& op, const Placement& placement) {
  const Item item = item_of(op);
  return op.is_send() ? consumer_rank(item, placement) : producer_rank(item, placement);
}

}  // namespace dualpipe::schedule
