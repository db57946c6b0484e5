"""Quantised frozen base weights (issue #16): formats, GGUF loading, storage, the Ascend mapping."""
from mindpet.quant.formats import (FORMATS, FormatSpec, QuantizedTensor, dequantize, format_spec, quantize,
                                   requantize)
from mindpet.quant.gguf import read_gguf_quantized
from mindpet.quant.storage import load_quantized, save_quantized

__all__ = ["FORMATS", "FormatSpec", "QuantizedTensor", "dequantize", "format_spec", "load_quantized", "quantize",
           "read_gguf_quantized", "requantize", "save_quantized"]
