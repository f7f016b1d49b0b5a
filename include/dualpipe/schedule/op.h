#pragma once
// One operation of a per-rank pipeline program. A schedule is data: builders return
// programs made of these, and the validator, the simulator, the pictures and the
// runtime executor all read the same programs.

#include <cstdint>
#include <string>
#include <vector>

namespace dualpipe::schedule {

enum class OpKind : std::uint8_t {
  kForward,          // F: forward of (direction, stage, microbatch)
  kBackward,         // B: backward; `defer_weight_grad` makes it input-gradient only (Bz)
  kWeight,           // W: the deferred weight-gradient work of an earlier Bz (FIFO per rank)
  kForwardBackward,  // FB: forward of (direction, stage, microbatch) overlapped with the
                     //     backward of (backward_direction, backward_stage, backward_microbatch)
  kSendActivation,   // send the output activation of (direction, stage, microbatch) to `peer`
  kRecvActivation,   // receive the output activation of (direction, stage, microbatch) from `peer`
  kSendGrad,         // send the input gradient of (direction, stage, microbatch) to `peer`
  kRecvGrad,         // receive the input gradient of (direction, stage, microbatch) from `peer`
};

// NOTE: a (direction, stage) pair names one pipeline stage instance. Single-direction
// schedules use direction 0 only; DualPipe runs two pipelines (directions 0 and 1) over the
// same model stages, so (0, s) and (1, s) are two copies of model stage s on different
// ranks. Micro-batch numbers count from 0 within each direction.
struct Op {
  OpKind kind = OpKind::kForward;
  int direction = 0;
  int stage = -1;
  int microbatch = -1;
  // kBackward (and the backward half of kForwardBackward): weight gradients are deferred
  // to a later kWeight op instead of being computed now.
  bool defer_weight_grad = false;
  // kForwardBackward only: the backward half.
  int backward_direction = 0;
  int backward_stage = -1;
  int backward_microbatch = -1;
  // Communication ops only: the other rank.
  int peer = -1;

  static Op forward(int direction, int stage, int microbatch);
  static Op backward(int direction, int stage, int microbatch, bool defer_weight_grad = false);
  static Op weight(int direction, int stage, int microbatch);
  static Op forward_backward(int direction, int stage, int microbatch, int backward_direction,
                             int backward_stage, int backward_microbatch);
  static Op send_activation(int direction, int stage, int microbatch, int peer);
  static Op recv_activation(int direction, int stage, int microbatch, int peer);
  static Op send_grad(int direction, int stage, int microbatch, int peer);
  static Op recv_grad(int direction, int stage, int microbatch, int peer);

  bool is_compute() const;
  bool is_communication() const;
  bool is_send() const;
  bool is_recv() const;

  friend bool operator==(const Op& a, const Op& b);
  friend bool operator!=(const Op& a, const Op& b) { return !(a == b); }
};

// The operations of one rank, in execution order.
using Program = std::vector<Op>;

// Short human-readable name for kind, e.g. "F", "B", "W", "FB", "sendA", "recvG".
const char* to_string(OpKind kind);

// Debug description of an op with all of its fields, e.g. "B(d=0,s=2,m=5,deferred)".
std::string describe(const Op& op);

}  // namespace dualpipe::schedule
