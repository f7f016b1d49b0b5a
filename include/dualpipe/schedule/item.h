#pragma once
// What travels between stage instances: the one place that says which item an op consumes or
// produces and which rank is at the other end. The communication pass, the validator, the
// simulator, the serializer and the runtime executor all ask these helpers.
//
// An item is named by its PRODUCING stage instance: the output activation of (d, s, m) goes to
// (d, s+1, m); the input gradient of (d, s, m) goes to (d, s-1, m). A send and its receive name
// the same item.

#include <cstdint>
#include <optional>

#include "dualpipe/schedule/op.h"
#include "dualpipe/schedule/placement.h"

namespace dualpipe::schedule {

enum class ItemKind : std::uint8_t { kActivation, kGrad };

struct Item {
  ItemKind kind = ItemKind::kActivation;
  int direction = 0;
  int stage = 0;  // the producing stage
  int microbatch = 0;

  friend bool operator==(const Item& a, const Item& b) {
    return a.kind == b.kind && a.direction == b.direction && a.stage == b.stage &&
           a.microbatch == b.microbatch;
  }
};

// The stage the item goes to: stage + 1 for an activation, stage - 1 for a gradient (possibly
// outside [0, num_stages) for an item no stage consumes).
int consumer_stage(const Item& item);

// What the forward of (d, s, m) consumes: the activation of (d, s-1, m); none for stage 0.
std::optional<Item> forward_input(int direction, int stage, int microbatch);
// What the forward of (d, s, m) produces for the next stage; none for the last stage.
std::optional<Item> forward_output(int direction, int stage, int microbatch, int num_stages);
// What the backward of (d, s, m) consumes: the gradient of (d, s+1, m); none for the last stage
// (it starts from its own loss).
std::optional<Item> backward_input(int direction, int stage, int microbatch, int num_stages);
// What the backward of (d, s, m) produces for the previous stage; none for stage 0.
std::optional<Item> backward_output(int direction, int stage, int microbatch);

// The item a communication op moves. Throws std::invalid_argument for a compute op.
Item item_of(const Op& communication_op);

// The op that sends / receives `item` to / from `peer`.
Op send_op(const Item& item, int peer);
Op recv_op(const Item& item, int peer);

// The ranks at the two ends of `item` under `placement` (Placement::rank_of checks the stages).
int producer_rank(const Item& item, const Placement& placement);
int consumer_rank(const Item& item, const Placement& placement);

// The rank at the other end of a communication op on `rank`'s program under `placement`: the
// consumer's rank for a send, the producer's for a receive.
int peer_of(const Op& communication_op, const Placement& placement);

}  // namespace dualpipe::schedule
