"""Quantised frozen base weights (issue #16): formats, GGUF loading, storage, the Ascend mapping."""
from mindpet.quant.formats import FORMATS, FormatSpec, QuantizedTensor, dequantize, format_spec, quantize
from mindpet.quant.layers import QuantizedDense
from mindpet.quant.convert import quantize_dense
from mindpet.quant.lora_base import merge_cost

__all__ = ["FORMATS", "FormatSpec", "QuantizedTensor", "dequantize", "format_spec", "quantize",
           "QuantizedDense", "quantize_dense", "merge_cost"]
