#include "python_stage.h"

#include <torch/csrc/autograd/python_variable.h>

#include <string>
#include <utility>

#include "dualpipe/runtime/weight_grad_store.h"

namespace dualpipe::python {

SharedPyObject share(py::object object) {
  return SharedPyObject(new py::object(std::move(object)), [](py::object* o) {
    py::gil_scoped_acquire gil;
    delete o;
  });
}

runtime::TensorList tensors_from_python(const py::handle& value, const char* what) {
  auto one = [&](const py::handle& item) -> at::Tensor {
    if (item.is_none()) return at::Tensor();
    if (!THPVariable_Check(item.ptr())) {
      throw py::type_error(std::string(what) +
                           " must be a tensor or a list/tuple of tensors, got " +
                           py::str(py::type::handle_of(item).attr("__name__")).cast<std::string>());
    }
    return THPVariable_Unpack(item.ptr());
  };
  if (py::isinstance<py::list>(value) || py::isinstance<py::tuple>(value)) {
    runtime::TensorList tensors;
    for (const py::handle& item : value) tensors.push_back(one(item));
    return tensors;
  }
  if (value.is_none()) {
    throw py::type_error(std::string(what) +
                         " must be a tensor or a list/tuple of tensors, got None");
  }
  return {one(value)};
}

py::list tensors_to_python(const runtime::TensorList& tensors) {
  py::list list;
  for (const at::Tensor& t : tensors) {
    if (t.defined()) {
      list.append(py::reinterpret_steal<py::object>(THPVariable_Wrap(t)));
    } else {
      list.append(py::none());
    }
  }
  return list;
}

namespace {

py::tuple call_arguments(const runtime::TensorList& first, const runtime::TensorList& second = {}) {
  py::list args = tensors_to_python(first);
  for (const py::handle& t : tensors_to_python(second)) args.append(t);
  return py::tuple(args);
}

at::Tensor loss_from_python(const py::handle& value, const char* what) {
  if (!THPVariable_Check(value.ptr())) {
    throw py::type_error(std::string(what) + " must return a tensor, got " +
                         py::str(py::type::handle_of(value).attr("__name__")).cast<std::string>());
  }
  return THPVariable_Unpack(value.ptr());
}

}  // namespace

at::Tensor PythonCriterion::operator()(const runtime::TensorList& outputs,
                                       const runtime::TensorList& labels) const {
  py::gil_scoped_acquire gil;
  py::object loss = (*callable)(*call_arguments(outputs, labels));
  return loss_from_python(loss, "criterion(*outputs, *labels)");
}

PythonWeightGradStore::PythonWeightGradStore(py::object store_class)
    : store_class_(share(std::move(store_class))) {}

void PythonWeightGradStore::run(const std::function<void()>& backward) const {
  runtime::WeightGradStore* store = runtime::DeferWeightGradGuard::current();
  if (store == nullptr) {
    backward();
    return;
  }
  {
    py::gil_scoped_acquire gil;
    store_class_->attr("enabled") = true;
  }
  try {
    backward();
  } catch (...) {
    py::gil_scoped_acquire gil;
    store_class_->attr("enabled") = false;
    throw;
  }
  py::gil_scoped_acquire gil;
  store_class_->attr("enabled") = false;
  store_class_->attr("flush")();
  // NOTE: the executor's W op for this group runs the Python group flushed just now: both
  // queues are FIFO and every deferred backward adds one group to each.
  store->push([store_class = store_class_] {
    py::gil_scoped_acquire gil;
    store_class->attr("pop")();
  });
}

PythonStage::PythonStage(py::object module, std::shared_ptr<const PythonWeightGradStore> store,
                         bool overlap)
    : store_(std::move(store)), overlap_(overlap) {
  int index = 0;
  for (const py::handle& p : module.attr("parameters")()) {
    at::Tensor parameter = THPVariable_Unpack(p.ptr());
    register_parameter("p" + std::to_string(index++), parameter, parameter.requires_grad());
  }
  module_ = share(std::move(module));
}

PythonStage::~PythonStage() = default;

runtime::TensorList PythonStage::forward(const runtime::MicrobatchId& id,
                                         const runtime::TensorList& inputs) {
  py::gil_scoped_acquire gil;
  py::object outputs = (*module_)(*call_arguments(inputs));
  return tensors_from_python(outputs, "a pipeline stage's forward");
}

void PythonStage::backward(const runtime::MicrobatchId& id, const runtime::TensorList& outputs,
                           const runtime::TensorList& output_grads) {
  store_->run([&] { runtime::StageModule::backward(id, outputs, output_grads); });
}

runtime::ForwardResult PythonStage::overlapped_forward_backward(
    const runtime::ForwardHalf& forward, runtime::StageModule& backward_stage,
    const runtime::BackwardHalf& backward) {
  auto* other = dynamic_cast<PythonStage*>(&backward_stage);
  runtime::ForwardResult result;
  if (other == nullptr) {  // NOTE: a C++ stage in the same pipeline: no shared hook
    result.outputs = this->forward(forward.id, forward.inputs);
    if (forward.criterion != nullptr) {
      result.loss = (*forward.criterion)(result.outputs, forward.labels);
    }
    backward_stage.backward(backward.id, backward.outputs, backward.output_grads);
    return result;
  }
  store_->run([&] {
    py::gil_scoped_acquire gil;
    py::object criterion0 = py::none();
    if (forward.criterion != nullptr) {
      const auto* python_criterion = forward.criterion->target<PythonCriterion>();
      criterion0 = python_criterion != nullptr ? *python_criterion->callable
                                               : py::cpp_function(*forward.criterion);
    }
    py::object loss1 = py::none();
    py::object outputs1 = py::list();
    py::object output_grads1 = py::list();
    if (backward.output_grads.empty()) {  // a last stage: back-propagate its loss
      loss1 = tensors_to_python({backward.outputs.at(0)})[0];
    } else {  // the outputs that got a gradient, as the reference passes them
      runtime::TensorList kept_outputs, kept_grads;
      for (std::size_t i = 0; i < backward.outputs.size(); ++i) {
        if (!backward.output_grads.at(i).defined()) continue;
        kept_outputs.push_back(backward.outputs[i]);
        kept_grads.push_back(backward.output_grads[i]);
      }
      outputs1 = py::tuple(tensors_to_python(kept_outputs));
      output_grads1 = py::tuple(tensors_to_python(kept_grads));
    }
    py::object hook = py::type::handle_of(*module_).attr("overlapped_forward_backward");
    py::object returned =
        hook(*module_, tensors_to_python(forward.inputs), criterion0,
             tensors_to_python(forward.labels), other->module(), loss1, outputs1, output_grads1);
    if (!py::isinstance<py::tuple>(returned) && !py::isinstance<py::list>(returned)) {
      throw py::type_error(
          "overlapped_forward_backward must return (outputs0, loss0), got " +
          py::str(py::type::handle_of(returned).attr("__name__")).cast<std::string>());
    }
    py::sequence pair = returned;
    if (pair.size() != 2) {
      throw py::value_error("overlapped_forward_backward must return (outputs0, loss0), got " +
                            std::to_string(pair.size()) + " values");
    }
    result.outputs = tensors_from_python(pair[0], "outputs0 of overlapped_forward_backward");
    if (forward.criterion != nullptr) {
      result.loss = loss_from_python(pair[1], "overlapped_forward_backward's loss0");
    }
  });
  return result;
}

}  // namespace dualpipe::python
