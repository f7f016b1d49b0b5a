#pragma once
// A user's Python nn.Module as a pipeline stage of the C++ executor.
//
// The executor runs on the thread that called step() with the GIL released; every call into
// Python here takes the GIL for just that call (the module's forward, the criterion, the
// overlap hook, the WeightGradStore switches). Backward passes run in the autograd engine
// without the GIL; Python autograd Functions in the graph take it themselves.

#include <torch/csrc/utils/pybind.h>

#include <memory>
#include <optional>
#include <vector>

#include "dualpipe/runtime/stage_module.h"

namespace dualpipe::python {

namespace py = pybind11;

// A Python object that may be destroyed without the GIL held (by the executor's weight-gradient
// queue, a std::function, a stage): its last owner takes the GIL to release it.
using SharedPyObject = std::shared_ptr<py::object>;
SharedPyObject share(py::object object);

// The Python criterion of a step, as the executor's Criterion: `criterion(*outputs, *labels)`,
// which must return a tensor. Kept recognisable (Criterion::target) so that the overlap hook can
// hand the user's own callable to `overlapped_forward_backward`.
struct PythonCriterion {
  SharedPyObject callable;
  at::Tensor operator()(const runtime::TensorList& outputs,
                        const runtime::TensorList& labels) const;
};

// The reference's deferral protocol on dualpipe.utils.WeightGradStore (a Python class with
// class-level state): `enabled` is set around deferred backward passes, `flush()` closes the
// group of closures those passes `put`, and each W op runs `pop()`. One instance per pipeline.
class PythonWeightGradStore {
 public:
  explicit PythonWeightGradStore(py::object store_class);
  // Runs `backward` (without the GIL) with the Python store enabled when the executor defers
  // weight gradients (a DeferWeightGradGuard is active), then flushes the Python group and
  // queues its `pop()` in the executor's store, so the executor's W op runs it (FIFO on both).
  void run(const std::function<void()>& backward) const;

 private:
  SharedPyObject store_class_;
};

class PythonStage : public runtime::StageModule {
 public:
  // `module` is the user's nn.Module; its parameters are registered here under "p<i>" (the same
  // tensors, so gradients written by either side are seen by both). `overlap` says whether FB
  // ops call type(module).overlapped_forward_backward (the pipeline decides: both modules of
  // one class that defines it). Called with the GIL held.
  PythonStage(py::object module, std::shared_ptr<const PythonWeightGradStore> store, bool overlap);
  ~PythonStage() override;

  runtime::TensorList forward(const runtime::MicrobatchId& id,
                              const runtime::TensorList& inputs) override;
  void backward(const runtime::MicrobatchId& id, const runtime::TensorList& outputs,
                const runtime::TensorList& output_grads) override;
  bool has_overlap_hook() const override { return overlap_; }
  runtime::ForwardResult overlapped_forward_backward(
      const runtime::ForwardHalf& forward, runtime::StageModule& backward_stage,
      const runtime::BackwardHalf& backward) override;
  // From set_p2p_tensor_shapes/set_p2p_tensor_dtype when the user called them, else empty.
  std::vector<runtime::TensorSpec> expected_inputs() const override { return expected_; }
  void set_expected_inputs(std::vector<runtime::TensorSpec> specs) { expected_ = std::move(specs); }

  const py::object& module() const { return *module_; }

 private:
  SharedPyObject module_;
  std::shared_ptr<const PythonWeightGradStore> store_;
  bool overlap_;
  std::vector<runtime::TensorSpec> expected_;
};

// The tensors a Python stage or hook returned: a tensor, or a list/tuple of tensors (None
// entries become undefined tensors). Throws py::type_error naming `what` and the type otherwise.
// Call with the GIL held.
runtime::TensorList tensors_from_python(const py::handle& value, const char* what);
// A list of tensors (undefined -> None). Call with the GIL held.
py::list tensors_to_python(const runtime::TensorList& tensors);

}  // namespace dualpipe::python
