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

// One row per op: contract name "<op>_<suffix>", its symbol and the counts of its enum prefix.
#define MINDPET_CONTRACT_ROW(op, suffix, symbol, prefix) \
  { #op "_" suffix, contracts::op::symbol, contracts::op::prefix##NumInputs, contracts::op::prefix##NumOutputs }

inline void Bind(py::module_& m) {
  namespace c = mindpet::contracts;
  const OpRow rows[] = {
      MINDPET_CONTRACT_ROW(lora_linear, "fwd", kForwardSymbol, kFwd),
      MINDPET_CONTRACT_ROW(lora_linear, "bwd", kBackwardSymbol, kBwd),
      MINDPET_CONTRACT_ROW(lora_linear, "bwd_weights", kBackwardWeightsSymbol, kBwdW),
      MINDPET_CONTRACT_ROW(lora_linear, "bwd_input", kBackwardInputSymbol, kBwdX),
      MINDPET_CONTRACT_ROW(adapter, "fwd", kForwardSymbol, kFwd),
      MINDPET_CONTRACT_ROW(adapter, "bwd", kBackwardSymbol, kBwd),
      MINDPET_CONTRACT_ROW(low_rank_adapter, "fwd", kForwardSymbol, kFwd),
      MINDPET_CONTRACT_ROW(low_rank_adapter, "bwd", kBackwardSymbol, kBwd),
      MINDPET_CONTRACT_ROW(activation, "fwd", kForwardSymbol, kFwd),
      MINDPET_CONTRACT_ROW(activation, "bwd", kBackwardSymbol, kBwd),
      MINDPET_CONTRACT_ROW(layer_norm, "fwd", kForwardSymbol, kFwd),
      MINDPET_CONTRACT_ROW(layer_norm, "bwd", kBackwardSymbol, kBwd),
      MINDPET_CONTRACT_ROW(quant_lora_linear, "fwd", kForwardSymbol, kFwd),
      MINDPET_CONTRACT_ROW(quant_lora_linear, "bwd_input", kBackwardInputSymbol, kBwdX),
      MINDPET_CONTRACT_ROW(attention, "fwd", kForwardSymbol, kFwd),
      MINDPET_CONTRACT_ROW(attention, "bwd", kBackwardSymbol, kBwd),
      MINDPET_CONTRACT_ROW(attention_masked, "fwd", kForwardSymbol, kFwd),
      MINDPET_CONTRACT_ROW(attention_masked, "bwd", kBackwardSymbol, kBwd),
      MINDPET_CONTRACT_ROW(rms_norm, "fwd", kForwardSymbol, kFwd),
      MINDPET_CONTRACT_ROW(rms_norm, "bwd", kBackwardSymbol, kBwd),
      MINDPET_CONTRACT_ROW(swiglu, "fwd", kForwardSymbol, kFwd),
      MINDPET_CONTRACT_ROW(swiglu, "bwd", kBackwardSymbol, kBwd),
      MINDPET_CONTRACT_ROW(dropout_mask, "fwd", kForwardSymbol, kFwd),
  };
#undef MINDPET_CONTRACT_ROW
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
