// _C.schedule: the schedule registry, builders, serializer and validator (dualpipe/schedule.py
// wraps them). Everything here is pure C++ on plain values: no tensors, no communication.

#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bindings.h"
#include "dualpipe/schedule/registry.h"
#include "dualpipe/schedule/serialize.h"
#include "dualpipe/schedule/validator.h"

namespace dualpipe::python {
namespace {

namespace py = pybind11;
using schedule::Op;
using schedule::Schedule;

// The programs' ops as tokens on their ranks (the oracle files' form, serialize.h).
std::vector<std::vector<std::string>> tokens_of(const Schedule& s) {
  std::vector<std::vector<std::string>> ranks(s.programs.size());
  for (std::size_t rank = 0; rank < s.programs.size(); ++rank) {
    for (const Op& op : s.programs[rank]) {
      ranks[rank].push_back(schedule::to_token(op, static_cast<int>(rank), s.placement));
    }
  }
  return ranks;
}

std::vector<std::string> problems_of(const Schedule& s, std::size_t max_problems) {
  std::vector<std::string> problems;
  for (const auto& problem : schedule::find_problems(s, max_problems)) {
    problems.push_back(schedule::to_string(problem));
  }
  return problems;
}

// (direction, stage) of each stage instance on `rank`, by slot.
std::vector<std::pair<int, int>> stage_ids(const schedule::Placement& placement, int rank) {
  std::vector<std::pair<int, int>> ids;
  for (const schedule::StageId& id : placement.stages_on(rank)) {
    ids.emplace_back(id.direction, id.stage);
  }
  return ids;
}

void bind_op(py::module_& m) {
  py::class_<Op>(m, "Op", "One operation of a rank's program (read-only; see schedule/op.h).")
      .def_property_readonly(
          "kind", [](const Op& op) { return std::string(to_string(op.kind)); },
          "'F', 'B', 'W', 'FB', 'sendA', 'recvA', 'sendG' or 'recvG'")
      .def_readonly("direction", &Op::direction)
      .def_readonly("stage", &Op::stage)
      .def_readonly("microbatch", &Op::microbatch)
      .def_readonly("defer_weight_grad", &Op::defer_weight_grad)
      .def_readonly("backward_direction", &Op::backward_direction)
      .def_readonly("backward_stage", &Op::backward_stage)
      .def_readonly("backward_microbatch", &Op::backward_microbatch)
      .def_readonly("peer", &Op::peer)
      .def_property_readonly("is_compute", &Op::is_compute)
      .def_property_readonly("is_communication", &Op::is_communication)
      .def("__eq__", [](const Op& a, const Op& b) { return a == b; })
      .def("__hash__", [](const Op& op) { return py::hash(py::str(describe(op))); })
      .def("__repr__", [](const Op& op) { return describe(op); });
}

void bind_facts(py::module_& m) {
  using schedule::ScheduleFacts;
  py::class_<ScheduleFacts>(m, "ScheduleFacts", "What a schedule is, as data (registry.h).")
      .def_readonly("name", &ScheduleFacts::name)
      .def_readonly("summary", &ScheduleFacts::summary)
      .def_readonly("rank_multiple", &ScheduleFacts::rank_multiple)
      .def_readonly("microbatch_multiple", &ScheduleFacts::microbatch_multiple)
      .def_readonly("min_microbatches_per_rank", &ScheduleFacts::min_microbatches_per_rank)
      .def("accepts", &ScheduleFacts::accepts, py::arg("num_ranks"), py::arg("num_microbatches"))
      .def("accepted_sizes", &ScheduleFacts::accepted_sizes, py::arg("num_ranks"))
      .def("smallest_microbatches", &ScheduleFacts::smallest_microbatches, py::arg("num_ranks"),
           py::arg("at_least") = 1)
      .def("__repr__", [](const ScheduleFacts& f) {
        return "ScheduleFacts(" + f.name + ": " + f.summary + ")";
      });

  using schedule::PublishedFigures;
  py::class_<PublishedFigures>(m, "PublishedFigures",
                               "A schedule paper's bubble and memory formulas, evaluated.")
      .def_readonly("bubble_formula", &PublishedFigures::bubble_formula)
      .def_readonly("pp_meaning", &PublishedFigures::pp_meaning)
      .def_readonly("bubble", &PublishedFigures::bubble)
      .def_readonly("parameters_formula", &PublishedFigures::parameters_formula)
      .def_readonly("parameter_copies", &PublishedFigures::parameter_copies)
      .def_readonly("activations_formula", &PublishedFigures::activations_formula)
      .def_readonly("peak_activations", &PublishedFigures::peak_activations);
}

void bind_schedule_class(py::module_& m) {
  py::class_<Schedule>(m, "Schedule", "A whole schedule: sizes, placement, one program per rank.")
      .def_readonly("name", &Schedule::name)
      .def_readonly("num_microbatches", &Schedule::num_microbatches)
      .def_property_readonly("num_ranks", &Schedule::num_ranks)
      .def_property_readonly("num_directions", &Schedule::num_directions)
      .def_property_readonly("num_stages", &Schedule::num_stages)
      .def_readonly("programs", &Schedule::programs, "programs[rank]: that rank's ops, in order")
      .def(
          "stages_on", [](const Schedule& s, int rank) { return stage_ids(s.placement, rank); },
          py::arg("rank"))
      .def("tokens", &tokens_of)
      .def("to_text", &schedule::to_text)
      .def("to_json", [](const Schedule& s) { return schedule::to_json(s).dump(); })
      .def("to_oracle_json", [](const Schedule& s) { return schedule::to_oracle_json(s).dump(); })
      .def("validate", &schedule::validate)
      .def("problems", &problems_of, py::arg("max_problems") = schedule::kDefaultMaxProblems)
      .def("__eq__", [](const Schedule& a, const Schedule& b) { return a == b; });
}

}  // namespace

void bind_schedule(py::module_& parent) {
  py::module_ m = parent.def_submodule("schedule", "the schedule registry and builders");
  bind_op(m);
  bind_facts(m);
  bind_schedule_class(m);
  m.def("names", &schedule::schedule_names);
  m.def("facts", &schedule::schedule_facts, py::arg("name"));
  m.def(
      "build",
      [](const std::string& name, int num_ranks, int num_microbatches, int stages_per_rank) {
        return schedule::build_schedule(name, num_ranks, num_microbatches,
                                        schedule::BuildOptions{stages_per_rank});
      },
      py::arg("name"), py::arg("num_ranks"), py::arg("num_microbatches"),
      py::arg("stages_per_rank") = 0, py::call_guard<py::gil_scoped_release>());
  m.def(
      "placement",
      [](const std::string& name, int num_ranks, int rank) {
        return stage_ids(schedule::schedule_placement(name, num_ranks), rank);
      },
      py::arg("name"), py::arg("num_ranks"), py::arg("rank"));
  m.def(
      "published_figures",
      [](const std::string& name, int num_ranks, int num_microbatches, double forward,
         double backward, double weight, double forward_backward) {
        return schedule::published_figures(name, num_ranks, num_microbatches,
                                           {forward, backward, weight, forward_backward});
      },
      py::arg("name"), py::arg("num_ranks"), py::arg("num_microbatches"), py::arg("F"),
      py::arg("B"), py::arg("W"), py::arg("FB"));
  m.def("from_json", &schedule::parse_schedule_json, py::arg("text"));
  m.def("from_text", &schedule::parse_schedule_text, py::arg("text"));
}

}  // namespace dualpipe::python
