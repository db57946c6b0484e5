// pybind11 module mindpet._native: the host-side arithmetic of the fused kernels (Ascend tiling) and the
// op contracts, compiled on every machine so they are unit-tested even where the Ascend kernels cannot run.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "contract_bindings.h"
#include "mindpet/build_info.h"
#include "tiling_bindings.h"

namespace py = pybind11;

PYBIND11_MODULE(_native, m) {
  m.doc() = "mindpet native helpers (fused-op contracts, tiling of the fused kernels, build information)";
  m.def("build_info", []() {
    const mindpet::BuildInfo info = mindpet::GetBuildInfo();
    py::dict d;
    d["version"] = info.version;
    d["compiler"] = info.compiler;
    d["openmp"] = info.openmp;
    return d;
  }, "Return {'version', 'compiler', 'openmp'} describing how the native part was built.");
  py::module_ tiling = m.def_submodule("tiling", "Tiling of the fused Ascend kernels (pure C++)");
  mindpet::pybind_tiling::Bind(tiling);
  py::module_ contracts = m.def_submodule(
      "contracts", "The fused-op contracts of mindpet/contracts.h: ops (symbol, input/output counts), activation codes");
  mindpet::pybind_contracts::Bind(contracts);
}
