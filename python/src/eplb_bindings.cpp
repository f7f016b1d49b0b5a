// _C.eplb: the expert-parallel load balancer (dualpipe/eplb.py turns its result into eplb.py's
// tensors). Pure C++ on plain values; the only Python it calls is the sort order it is given.

#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include <tuple>
#include <vector>

#include "bindings.h"
#include "dualpipe/eplb/rebalance.h"

namespace dualpipe::python {
namespace {

namespace py = pybind11;

using PlacementMaps =
    std::tuple<std::vector<std::vector<int>>, std::vector<std::vector<std::vector<int>>>,
               std::vector<std::vector<int>>>;

// Called with the GIL held (descending_order is Python code).
PlacementMaps rebalance(const eplb::LoadMatrix& weight, int num_replicas, int num_groups,
                        int num_nodes, int num_gpus, bool float32,
                        eplb::DescendingOrder descending_order) {
  eplb::RebalanceOptions options;
  options.float32 = float32;
  options.descending_order = std::move(descending_order);
  eplb::ExpertPlacement p =
      eplb::rebalance_experts(weight, num_replicas, num_groups, num_nodes, num_gpus, options);
  return {std::move(p.physical_to_logical), std::move(p.logical_to_physical),
          std::move(p.replica_count)};
}

}  // namespace

void bind_eplb(py::module_& parent) {
  py::module_ m = parent.def_submodule("eplb", "the expert-parallel load balancer");
  m.def("rebalance", &rebalance, py::arg("weight"), py::arg("num_replicas"), py::arg("num_groups"),
        py::arg("num_nodes"), py::arg("num_gpus"), py::arg("float32"),
        py::arg("descending_order") = py::none(),
        "(physical_to_logical, logical_to_physical, replica_count) as nested lists");
  m.def("uses_hierarchical_policy", &eplb::uses_hierarchical_policy, py::arg("num_groups"),
        py::arg("num_nodes"));
}

}  // namespace dualpipe::python
