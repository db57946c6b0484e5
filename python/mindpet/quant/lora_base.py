"""A delta layer on a quantised base: what ``LoRADense(..., base=QuantizedDense)`` (and ``AdapterDense`` /
``LowRankAdapterDense`` with ``base=``) does differently from a float base.

The layer takes over the QuantizedDense's frozen Parameters (``weight_codes``, ``weight_scales``[,
``weight_offsets``], ``bias``: the same objects and names, so the quantised checkpoint still loads) and
computes ``y = x deq(W_q)^T + b + s (x_d A^T) B^T`` through ``quant_lora_linear`` (fused on CPU, composed
elsewhere); the LoRA parameters keep their names ``mindpet_delta_lora_a`` / ``mindpet_delta_lora_b``.

Merging is lossy and refused (:func:`merge_error`): ``W_q`` can only hold values of its quantisation grid, so
``W' = deq(W_q) + s B A`` would be requantised, with an error per weight of up to half a quantisation step
(:func:`merge_cost` measures it), of the size of a LoRA update or larger: the merged quantised model would
not compute what the trained one does.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np
from mindspore import nn
from mindspore.common import dtype as mstype

from mindpet.quant import _weight
from mindpet.quant.formats import dequantize, quantize
from mindpet.quant.layers import QuantizedDense, quant_kernel

__all__ = ["check_base", "attach_base", "base_kernel", "lora_kernel", "merge_error", "merge_cost"]


def check_base(base: Any, in_channels: int, out_channels: int, has_bias: bool, transpose_b: bool, compute_dtype,
               cls: str) -> None:
    """TypeError/ValueError (naming ``base`` and the mismatching argument) unless ``base`` fits the layer."""
    if not isinstance(base, QuantizedDense):
        raise TypeError(f"For '{cls}', 'base' must be a mindpet.quant.QuantizedDense or None, but got "
                        f"{type(base).__name__}.")
    for name, mine, theirs in (("in_channels", in_channels, base.in_channels),
                               ("out_channels", out_channels, base.out_channels),
                               ("has_bias", has_bias, base.has_bias)):
        if mine != theirs:
            raise ValueError(f"For '{cls}', '{name}' ({mine}) must equal the base's ({theirs}).")
    if not transpose_b:
        raise ValueError(f"For '{cls}', a quantised 'base' is laid out [out_channels, in_channels]; "
                         f"'transpose_b' must be True.")
    if compute_dtype not in (mstype.float32, mstype.float16):
        raise ValueError(f"For '{cls}', on a quantised 'base' the 'compute_dtype' must be float32 or float16, "
                         f"but got {compute_dtype}.")


def attach_base(layer: nn.Cell, base: QuantizedDense) -> None:
    """``layer`` takes over ``base``'s frozen Parameters (same objects) and constants; ``layer.weight`` is None."""
    _weight.attach(layer, base.quantized_weight, _weight.own_params(base))
    layer.weight = None
    layer.bias = base.bias if base.has_bias else None


def base_kernel(layer: nn.Cell, backend):
    """The ``quant_lora_linear`` op without the LoRA term (``has_lora=False``): the frozen base of an
    ``AdapterDense`` / ``LowRankAdapterDense`` on a quantised base."""
    return quant_kernel(layer.quantized_weight, layer.has_bias, has_lora=False, backend=backend,
                        dtype=layer.compute_dtype)


def lora_kernel(layer: nn.Cell, backend):
    """The ``quant_lora_linear`` op (``has_lora=True``) of ``layer``."""
    return quant_kernel(layer.quantized_weight, layer.has_bias, has_lora=True, scale=layer.scaling,
                        backend=backend, dtype=layer.compute_dtype)


def merge_cost(layer: nn.Cell) -> Dict[str, float]:
    r"""What merging ``layer``'s LoRA update into its quantised base would cost (host, float64).

    Returns ``{"update_rms": rms(s B A), "requantization_rms": rms(deq(q(W')) - W'), "lost_fraction":
    rms(deq(q(W')) - deq(W_q) - s B A) / rms(s B A)}`` for ``W' = deq(W_q) + s B A`` requantised in the
    base's format: the last is the part of the update the merged quantised model would not compute
    (1.0 when the update is zero and nothing is lost counts as 0.0).
    """
    w = _weight.dequantized(layer, np.float64)
    a = layer.mindpet_delta_lora_a.astype(mstype.float32).asnumpy().astype(np.float64)
    b = layer.mindpet_delta_lora_b.astype(mstype.float32).asnumpy().astype(np.float64)
    update = layer.scaling * (b @ a)
    merged = w + update
    requant = dequantize(quantize(merged.astype(np.float32), layer.quantized_weight.format), dtype=np.float64)
    rms = lambda t: float(np.sqrt(np.mean(np.square(t))))  # noqa: E731
    update_rms = rms(update)
    lost = rms(requant - w - update)
    return {"update_rms": update_rms, "requantization_rms": rms(requant - merged),
            "lost_fraction": lost / update_rms if update_rms > 0 else 0.0}


def merge_error(layer: nn.Cell, func: str, path: str = "") -> ValueError:
    """The error of merging into a quantised base: it names the layer and what to do instead."""
    where = f" at {path!r}" if path else ""
    return ValueError(
        f"For '{func}', the LoRADense{where} runs on a quantised base ({layer.quantized_weight.format}); merging "
        f"its update into the quantised weight would requantise W + s B A, with an error of up to half a "
        f"quantisation step per weight, of the size of the update itself (mindpet.quant.merge_cost(layer) "
        f"measures the part lost). Keep the "
        f"LoRA branch for inference, or merge into a float base with "
        f"mindpet.merge_and_unload(model, dequantize=True) (nn.Dense holding deq(W_q) + s B A in float32).")
