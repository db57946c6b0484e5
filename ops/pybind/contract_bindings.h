// pybind11 bindings of the fused-op contracts (mindpet/contracts.h), included by native_module.cc.
// mindpet._native.contracts exposes what the kernels are compiled against: per op its aot symbol and
// its numbers of inputs (tensors, then scalar attributes) and outputs, and the activation codes. The
// Python table (mindpet.kernels.contracts) is tested against it, so the two cannot drift apart.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>

#include "mindpet/contracts.h"

namespace mindpet {
namespace pybind_contracts {

namespace py = pybind11;

struct OpRow {
  const char* name;    // contract name, e.g. "lora_linear_fwd"
  const char* symbol;  // aot entry point of the CPU kernel library
  int num_inputs;
  int num_outputs;
};

inline void Bind(py::module_& m) {
  namespace c = mindpet::contracts;
  const OpRow rows[] = {
      {"lora_linear_fwd", c::lora_linear::kForwardSymbol, c::lora_linear::kFwdNumInputs,
       c::lora_linear::kFwdNumOutputs},
      {"lora_linear_bwd", c::lora_linear::kBackwardSymbol, c::lora_linear::kBwdNumInputs,
       c::lora_linear::kBwdNumOutputs},
      {"adapter_fwd", c::adapter::kForwardSymbol, c::adapter::kFwdNumInputs, c::adapter::kFwdNumOutputs},
      {"adapter_bwd", c::adapter::kBackwardSymbol, c::adapter::kBwdNumInputs, c::adapter::kBwdNumOutputs},
      {"low_rank_adapter_fwd", c::low_rank_adapter::kForwardSymbol, c::low_rank_adapter::kFwdNumInputs,
       c::low_rank_adapter::kFwdNumOutputs},
      {"low_rank_adapter_bwd", c::low_rank_adapter::kBackwardSymbol, c::low_rank_adapter::kBwdNumInputs,
       c::low_rank_adapter::kBwdNumOutputs},
      {"activation_fwd", c::activation::kForwardSymbol, c::activation::kFwdNumInputs,
       c::activation::kFwdNumOutputs},
      {"activation_bwd", c::activation::kBackwardSymbol, c::activation::kBwdNumInputs,
       c::activation::kBwdNumOutputs},
      {"layer_norm_fwd", c::layer_norm::kForwardSymbol, c::layer_norm::kFwdNumInputs,
       c::layer_norm::kFwdNumOutputs},
      {"layer_norm_bwd", c::layer_norm::kBackwardSymbol, c::layer_norm::kBwdNumInputs,
       c::layer_norm::kBwdNumOutputs},
  };
  py::dict ops;
  for (const OpRow& row : rows) {
    py::dict entry;
    entry["symbol"] = row.symbol;
    entry["num_inputs"] = row.num_inputs;
    entry["num_outputs"] = row.num_outputs;
    ops[row.name] = entry;
  }
  m.attr("OPS") = ops;

  py::dict codes;
  codes["identity"] = static_cast<int64_t>(c::Activation::kIdentity);
  codes["relu"] = static_cast<int64_t>(c::Activation::kRelu);
  codes["gelu"] = static_cast<int64_t>(c::Activation::kGelu);
  codes["gelu_erf"] = static_cast<int64_t>(c::Activation::kGeluErf);
  codes["sigmoid"] = static_cast<int64_t>(c::Activation::kSigmoid);
  codes["tanh"] = static_cast<int64_t>(c::Activation::kTanh);
  codes["silu"] = static_cast<int64_t>(c::Activation::kSilu);
  m.attr("ACTIVATION_CODES") = codes;
  m.attr("NUM_ACTIVATIONS") = c::kNumActivations;
}

}  // namespace pybind_contracts
}  // namespace mindpet
