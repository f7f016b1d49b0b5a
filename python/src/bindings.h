#pragma once
// The parts of the extension module `dualpipe._C`, one function per concept, called once by
// PYBIND11_MODULE in module.cpp.

#include <pybind11/pybind11.h>

namespace dualpipe::python {

// _C.Pipeline: the C++ Pipeline over Python stage modules and a torch.distributed group.
void bind_pipeline(pybind11::module_& m);

}  // namespace dualpipe::python
