#pragma once
// The parts of the extension module `dualpipe._C`, one function per concept, called once by
// PYBIND11_MODULE in module.cpp.

#include <pybind11/pybind11.h>

namespace dualpipe::python {

// _C.Pipeline: the C++ Pipeline over Python stage modules and a torch.distributed group.
void bind_pipeline(pybind11::module_& m);

// _C.schedule: the registry, builders, serializer and validator over Schedule and Op.
void bind_schedule(pybind11::module_& m);

// _C.sim: simulate() and its result with the SVG and Chrome-trace pictures. Needs
// bind_schedule first (it returns Schedule and PublishedFigures).
void bind_sim(pybind11::module_& m);

// _C.eplb: rebalance_experts over nested lists.
void bind_eplb(pybind11::module_& m);

}  // namespace dualpipe::python
