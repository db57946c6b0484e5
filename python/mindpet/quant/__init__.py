"""Quantised frozen base weights (issue #16): formats, GGUF loading, storage, the Ascend mapping."""
from mindpet.quant.formats import FORMATS, FormatSpec, QuantizedTensor, dequantize, format_spec, quantize

__all__ = ["FORMATS", "FormatSpec", "QuantizedTensor", "dequantize", "format_spec", "quantize"]
