// The extension module `dualpipe._C`. Import torch before it (dualpipe/__init__.py does): the
// tensor and process-group types it takes are torch's.

#include <torch/csrc/Exceptions.h>

#include "bindings.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "dualpipe's C++ engine (use the package `dualpipe`, not this module)";
  // NOTE: an exception raised by Python code inside the C++ autograd engine (a custom
  // autograd.Function's backward) reaches us as torch's python_error: restore it, traceback and
  // all. c10::Error becomes RuntimeError with its message (without the C++ backtrace).
  pybind11::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (python_error& e) {
      e.restore();
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });
  dualpipe::python::bind_pipeline(m);
  dualpipe::python::bind_schedule(m);
  dualpipe::python::bind_sim(m);
  dualpipe::python::bind_eplb(m);
}
