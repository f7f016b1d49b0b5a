#include "dualpipe/schedule/op.h"

#include <sstream>

namespace dualpipe::schedule {
namespace {

Op make(OpKind kind, int direction, int stage, int microbatch, int peer = -1) {
  Op op;
  op.kind = kind;
  op.direction = direction;
  op.stage = stage;
  op.microbatch = microbatch;
  op.peer = peer;
  return op;
}

}  // namespace

Op Op::forward(int direction, int stage, int microbatch) {
  return make(OpKind::kForward, direction, stage, microbatch);
}

Op Op::backward(int direction, int stage, int microbatch, bool defer_weight_grad) {
  Op op = make(OpKind::kBackward, direction, stage, microbatch);
  op.defer_weight_grad = defer_weight_grad;
  return op;
}

Op Op::weight(int direction, int stage, int microbatch) {
  return make(OpKind::kWeight, direction, stage, microbatch);
}

Op Op::forward_backward(int direction, int stage, int microbatch, int backward_direction,
                        int backward_stage, int backward_microbatch) {
  Op op = make(OpKind::kForwardBackward, direction, stage, microbatch);
  op.backward_direction = backward_direction;
  op.backward_stage = backward_stage;
  op.backward_microbatch = backward_microbatch;
  return op;
}

Op Op::send_activation(int direction, int stage, int microbatch, int peer) {
  return make(OpKind::kSendActivation, direction, stage, microbatch, peer);
}
Op Op::recv_activation(int direction, int stage, int microbatch, int peer) {
  return make(OpKind::kRecvActivation, direction, stage, microbatch, peer);
}
Op Op::send_grad(int direction, int stage, int microbatch, int peer) {
  return make(OpKind::kSendGrad, direction, stage, microbatch, peer);
}
Op Op::recv_grad(int direction, int stage, int microbatch, int peer) {
  return make(OpKind::kRecvGrad, direction, stage, microbatch, peer);
}

bool Op::is_compute() const {
  return kind == OpKind::kForward || kind == OpKind::kBackward || kind == OpKind::kWeight ||
         kind == OpKind::kForwardBackward;
}
bool Op::is_communication() const {
  return !is_compute();
}
bool Op::is_send() const {
  return kind == OpKind::kSendActivation || kind == OpKind::kSendGrad;
}
bool Op::is_recv() const {
  return kind == OpKind::kRecvActivation || kind == OpKind::kRecvGrad;
}

bool operator==(const Op& a, const Op& b) {
  return a.kind == b.kind && a.direction == b.direction && a.stage == b.stage &&
         a.microbatch == b.microbatch && a.defer_weight_grad == b.defer_weight_grad &&
         a.backward_direction == b.backward_direction && a.backward_stage == b.backward_stage &&
         a.backward_microbatch == b.backward_microbatch && a.peer == b.peer;
}

const char* to_string(OpKind kind) {
  switch (kind) {
    case OpKind::kForward: return "F";
    case OpKind::kBackward: return "B";
    case OpKind::kWeight: return "W";
    case OpKind::kForwardBackward: return "FB";
    case OpKind::kSendActivation: return "sendA";
    case OpKind::kRecvActivation: return "recvA";
    case OpKind::kSendGrad: return "sendG";
    case OpKind::kRecvGrad: return "recvG";
  }
  return "?";
}

std::string describe(const Op& op) {
  std::ostringstream out;
  out << to_string(op.kind) << "(d=" << op.direction << ",s=" << op.stage << ",m=" << op.microbatch;
  if (op.kind == OpKind::kBackward && op.defer_weight_grad) out << ",deferred";
  if (op.kind == OpKind::kForwardBackward) {
    out << " / d=" << op.backward_direction << ",s=" << op.backward_stage
        << ",m=" << op.backward_microbatch;
  }
  if (op.is_communication()) out << ",peer=" << op.peer;
  out << ")";
  return out.str();
}

}  // namespace dualpipe::schedule
