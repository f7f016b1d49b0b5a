// _C.sim: the discrete-event simulator over a schedule and a cost model, with its pictures
// (dualpipe/sim.py wraps it). Pure C++ on plain values.

#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "bindings.h"
#include "dualpipe/sim/cost_model.h"
#include "dualpipe/sim/paper.h"
#include "dualpipe/sim/simulator.h"
#include "dualpipe/sim/svg.h"

namespace dualpipe::python {
namespace {

namespace py = pybind11;

// One simulation with what its pictures need: the schedule and costs it ran on (copies; a
// Python user may drop the schedule object).
struct Simulation {
  schedule::Schedule schedule;
  sim::CostModel costs;
  sim::SimResult result;
};

Simulation simulate(const schedule::Schedule& s, double forward, double backward, double weight,
                    double forward_backward, double comm, std::vector<double> stage_scale) {
  sim::CostModel costs;
  costs.forward = forward;
  costs.backward = backward;
  costs.weight = weight;
  costs.forward_backward = forward_backward;
  costs.comm = comm;
  costs.stage_scale = std::move(stage_scale);
  costs.check();
  sim::SimResult result = sim::simulate(s, costs);
  return Simulation{s, costs, std::move(result)};
}

std::string svg_of(const Simulation& run, const std::string& title, double max_width) {
  sim::SvgOptions options;
  options.title = title;
  options.max_width = max_width;
  return sim::render_svg(run.schedule, run.result, run.costs, options);
}

// (op_index, start, end) of each compute op on the rank, in time order.
std::vector<std::tuple<int, double, double>> timeline_of(const sim::RankResult& rank) {
  std::vector<std::tuple<int, double, double>> ops;
  for (const sim::TimedOp& op : rank.timeline) ops.emplace_back(op.op_index, op.start, op.end);
  return ops;
}

}  // namespace

void bind_sim(py::module_& parent) {
  py::module_ m = parent.def_submodule("sim", "the pipeline simulator");
  py::class_<sim::RankResult>(m, "RankResult", "One rank's simulated numbers (simulator.h).")
      .def_readonly("busy", &sim::RankResult::busy)
      .def_readonly("bubble", &sim::RankResult::bubble)
      .def_readonly("peak_activations", &sim::RankResult::peak_activations)
      .def_readonly("parameter_copies", &sim::RankResult::parameter_copies)
      .def_property_readonly("timeline", &timeline_of);

  py::class_<Simulation>(m, "Simulation", "A simulated schedule: makespan, per-rank results.")
      .def_property_readonly("makespan", [](const Simulation& r) { return r.result.makespan; })
      .def_property_readonly("ranks", [](const Simulation& r) { return r.result.ranks; })
      .def_property_readonly("max_bubble",
                             [](const Simulation& r) { return r.result.max_bubble(); })
      .def_property_readonly("max_peak_activations",
                             [](const Simulation& r) { return r.result.max_peak_activations(); })
      .def_property_readonly("max_parameter_copies",
                             [](const Simulation& r) { return r.result.max_parameter_copies(); })
      .def_property_readonly("costs", [](const Simulation& r) { return sim::to_string(r.costs); })
      .def_property_readonly("schedule", [](const Simulation& r) { return r.schedule; })
      .def_property_readonly(
          "paper",
          [](const Simulation& r) {
            return sim::paper_figures(r.schedule.name, r.schedule.num_ranks(),
                                      r.schedule.num_microbatches, r.costs);
          },
          "the registry's published figures on these costs, None for an unknown name")
      .def("svg", &svg_of, py::arg("title") = "", py::arg("max_width") = 2400.0)
      .def("chrome_trace",
           [](const Simulation& r) { return sim::chrome_trace(r.schedule, r.result); });

  m.def("simulate", &simulate, py::arg("schedule"), py::arg("F"), py::arg("B"), py::arg("W"),
        py::arg("FB"), py::arg("comm"), py::arg("stage_scale"),
        py::call_guard<py::gil_scoped_release>());
}

}  // namespace dualpipe::python
