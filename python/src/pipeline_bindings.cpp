// _C.Pipeline: the Python package's engine. The package's Pipeline/DualPipe/DualPipeV
// (dualpipe/pipeline.py) keep the reference's Python API and call this for the step.

#include <pybind11/stl.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/autograd/python_variable.h>

#include <chrono>
#include <memory>
#include <string>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <tuple>
#include <vector>

#include "bindings.h"
#include "dualpipe/runtime/local_batch.h"
#include "dualpipe/runtime/pipeline.h"
#include "python_stage.h"

namespace dualpipe::python {

namespace {

// Tensors of a Python sequence, None entries left out (the reference passes `None` on ranks
// that have no inputs or labels).
runtime::TensorList defined_tensors(const py::sequence& values, const char* what) {
  runtime::TensorList tensors;
  for (const py::handle& value : values) {
    if (value.is_none()) continue;
    for (at::Tensor& t : tensors_from_python(value, what)) tensors.push_back(std::move(t));
  }
  return tensors;
}

at::Device first_parameter_device(const std::vector<std::shared_ptr<PythonStage>>& stages) {
  for (const auto& stage : stages) {
    for (const at::Tensor& p : stage->parameters()) return p.device();
  }
  return at::kCPU;
}

class PythonPipeline {
 public:
  // Called with the GIL held; does not communicate.
  PythonPipeline(const std::string& schedule, const py::list& modules, const py::object& group,
                 std::vector<int> rank_mapping, int batch_dim, bool sync_mirror_gradients,
                 double timeout_seconds, bool overlap, py::object store_class, bool trace) {
    auto store = std::make_shared<const PythonWeightGradStore>(std::move(store_class));
    for (const py::handle& module : modules) {
      stages_.push_back(std::make_shared<PythonStage>(py::reinterpret_borrow<py::object>(module),
                                                      store, overlap));
    }
    auto process_group = group.cast<c10::intrusive_ptr<c10d::ProcessGroup>>();
    const at::Device device = first_parameter_device(stages_);
    runtime::PipelineOptions options;
    options.rank_mapping = std::move(rank_mapping);
    options.batch_dim = batch_dim;
    options.sync_mirror_gradients = sync_mirror_gradients;
    options.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(timeout_seconds * 1000));
    options.trace = trace;
    std::vector<runtime::StagePtr> stages(stages_.begin(), stages_.end());
    pipeline_ = std::make_unique<runtime::Pipeline>(
        schedule, std::move(stages), runtime::communicator_of(process_group, device.type()),
        std::move(options));
  }

  // One step (see runtime::Pipeline::step); returns (per-micro-batch losses or None, list of
  // output tensors). Releases the GIL while the executor runs. `p2p_shapes`/`p2p_dtype` are
  // set_p2p_tensor_shapes/dtype's values (None when not set): the inputs every stage receives
  // are then checked against them.
  py::tuple step(const py::sequence& inputs, int num_chunks, const py::object& criterion,
                 const py::sequence& labels, bool return_outputs, const py::object& p2p_shapes,
                 const py::object& p2p_dtype) {
    set_expected_inputs(p2p_shapes, p2p_dtype);
    const runtime::TensorList input_tensors = defined_tensors(inputs, "inputs");
    const runtime::TensorList label_tensors = defined_tensors(labels, "labels");
    runtime::Criterion criterion_fn;
    if (!criterion.is_none()) criterion_fn = PythonCriterion{share(criterion)};
    runtime::StepResult result;
    {
      py::gil_scoped_release no_gil;
      result =
          pipeline_->step(input_tensors, num_chunks, criterion_fn, label_tensors, return_outputs);
    }
    py::object loss = py::none();
    if (result.loss.defined()) loss = tensors_to_python({result.loss})[0];
    return py::make_tuple(loss, tensors_to_python(result.outputs));
  }

  void sync_mirror_gradients() {
    py::gil_scoped_release no_gil;
    pipeline_->sync_mirror_gradients();
  }

  int rank() const { return pipeline_->rank(); }
  int num_ranks() const { return pipeline_->num_ranks(); }
  // What the last step ran (with trace=True): (name, category, start_us, duration_us) per event.
  std::vector<std::tuple<std::string, std::string, std::int64_t, std::int64_t>> trace_events()
      const {
    std::vector<std::tuple<std::string, std::string, std::int64_t, std::int64_t>> events;
    for (const runtime::TraceEvent& e : pipeline_->executor().trace().events()) {
      events.emplace_back(e.name, e.category, e.start_us, e.duration_us);
    }
    return events;
  }

 private:
  void set_expected_inputs(const py::object& shapes, const py::object& dtype) {
    std::vector<runtime::TensorSpec> specs;
    if (!shapes.is_none() && !dtype.is_none()) {
      if (!THPDtype_Check(dtype.ptr())) {
        throw py::type_error(
            "set_p2p_tensor_dtype takes a torch.dtype, got " +
            py::str(py::type::handle_of(dtype).attr("__name__")).cast<std::string>());
      }
      const at::ScalarType scalar_type = reinterpret_cast<THPDtype*>(dtype.ptr())->scalar_type;
      const at::Device device = first_parameter_device(stages_);
      for (const py::handle& shape : shapes) {
        runtime::TensorSpec spec;
        spec.dtype = scalar_type;
        spec.shape = shape.cast<std::vector<std::int64_t>>();
        spec.device = device;
        specs.push_back(std::move(spec));
      }
    }
    for (const auto& stage : stages_) stage->set_expected_inputs(specs);
  }

  std::vector<std::shared_ptr<PythonStage>> stages_;
  std::unique_ptr<runtime::Pipeline> pipeline_;
};

}  // namespace

void bind_pipeline(py::module_& m) {
  py::class_<PythonPipeline>(m, "Pipeline")
      .def(py::init<const std::string&, const py::list&, const py::object&, std::vector<int>, int,
                    bool, double, bool, py::object, bool>(),
           py::arg("schedule"), py::arg("modules"), py::arg("process_group"),
           py::arg("rank_mapping"), py::arg("batch_dim"), py::arg("sync_mirror_gradients"),
           py::arg("timeout_seconds"), py::arg("overlap"), py::arg("weight_grad_store"),
           py::arg("trace"))
      .def("step", &PythonPipeline::step, py::arg("inputs"), py::arg("num_chunks"),
           py::arg("criterion"), py::arg("labels"), py::arg("return_outputs"),
           py::arg("p2p_shapes"), py::arg("p2p_dtype"))
      .def("sync_mirror_gradients", &PythonPipeline::sync_mirror_gradients)
      .def("trace_events", &PythonPipeline::trace_events)
      .def_property_readonly("rank", &PythonPipeline::rank)
      .def_property_readonly("num_ranks", &PythonPipeline::num_ranks);
  m.def(
      "takes_inputs",
      [](const std::string& schedule, int num_ranks, int rank) {
        return runtime::Pipeline::takes_inputs(schedule, num_ranks, rank);
      },
      py::arg("schedule"), py::arg("num_ranks"), py::arg("rank"));
  m.def(
      "takes_labels",
      [](const std::string& schedule, int num_ranks, int rank) {
        return runtime::Pipeline::takes_labels(schedule, num_ranks, rank);
      },
      py::arg("schedule"), py::arg("num_ranks"), py::arg("rank"));
  m.def(
      "local_batch",
      [](const std::string& schedule, int num_ranks, int rank, int num_microbatches,
         const py::sequence& inputs, const py::sequence& labels) {
        const runtime::LocalBatch batch = runtime::local_batch(
            schedule, num_ranks, rank, num_microbatches, defined_tensors(inputs, "inputs"),
            defined_tensors(labels, "labels"));
        return py::make_tuple(tensors_to_python(batch.inputs), tensors_to_python(batch.labels),
                              batch.loss_microbatches);
      },
      py::arg("schedule"), py::arg("num_ranks"), py::arg("rank"), py::arg("num_microbatches"),
      py::arg("inputs"), py::arg("labels"),
      "This rank's share of a global batch: (inputs, labels, global micro-batch of each loss)");
}

}  // namespace dualpipe::python
