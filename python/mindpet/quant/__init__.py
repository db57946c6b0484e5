"""Quantised frozen base weights (issue #16): formats, GGUF loading, storage, the Ascend mapping, and the layers
(QuantizedDense, quantize_dense; LoRA on a quantised base through ``LoRADense(base=...)`` / ``mindpet.inject``)."""
from mindpet.quant.formats import (FORMATS, FormatSpec, QuantizedTensor, dequantize, format_spec, quantize,
                                   requantize)
from mindpet.quant.gguf import read_gguf_quantized
from mindpet.quant.storage import load_quantized, save_quantized
from mindpet.quant.layers import QuantizedDense
from mindpet.quant.convert import quantize_dense
from mindpet.quant.lora_base import merge_cost
from mindpet.quant.state import QuantizedLoadReport, load_quantized_into, quantized_tensors

__all__ = ["FORMATS", "FormatSpec", "QuantizedTensor", "dequantize", "format_spec", "load_quantized", "quantize",
           "read_gguf_quantized", "requantize", "save_quantized",
           "QuantizedDense", "quantize_dense", "merge_cost", "quantized_tensors", "load_quantized_into",
           "QuantizedLoadReport"]
