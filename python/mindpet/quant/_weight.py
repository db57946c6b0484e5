"""The frozen quantised weight a layer holds: the one place that turns a QuantizedTensor into Parameters and back.

A layer on a quantised base (``QuantizedDense``, a ``LoRADense`` built on one) holds, as its own Parameters,
``weight_codes`` (int8 ``[N, K]``, uint8 ``[N, K/2]`` or, 5-bit, ``[N, K/2 + K/8]``), ``weight_scales``
(float16 ``[N, K/G]``) and, for formats with offsets (``q4_1``, ``q5_1``), ``weight_offsets`` (float16
``[N, K/G]``), all ``requires_grad=False``; the 4-/5-bit lookup table and the stand-ins for absent operands
are constants (not Parameters). Layout and formula: ``/work/wt/QUANT_LAYOUT.md``, :mod:`mindpet.quant.formats`.

:class:`QuantizedWeight` is the description (format, shape, bits, group size) that the layer keeps and its
kernel is built from; :func:`attach` creates or takes over the Parameters; :func:`read` and :func:`assign`
move a :class:`~mindpet.quant.formats.QuantizedTensor` out of and into a layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
from mindspore import Parameter, Tensor, nn

from mindpet.quant.formats import FORMATS, QuantizedTensor, codes_layout, dequantize, format_spec

__all__ = ["QuantizedWeight", "PARAM_NAMES", "check_format", "group_size_of", "describe", "attach", "read",
           "assign", "dequantized", "frozen_parameters"]

PARAM_NAMES = ("weight_codes", "weight_scales", "weight_offsets")


def check_format(fmt: Any, func: str, arg: str = "format") -> str:
    """``fmt`` if it names a known format; TypeError/ValueError naming ``func`` and ``arg`` otherwise."""
    if not isinstance(fmt, str):
        raise TypeError(f"For '{func}', '{arg}' must be a str, one of {list(FORMATS)}, but got "
                        f"{type(fmt).__name__}: {fmt!r}.")
    if fmt not in FORMATS:
        raise ValueError(f"For '{func}', '{arg}' must be one of {list(FORMATS)}, but got {fmt!r}.")
    return fmt


def group_size_of(fmt: str, in_channels: int) -> int:
    """The group size G of ``fmt`` for a weight of ``in_channels`` columns (per-channel ``int8``: G = K)."""
    return format_spec(fmt).group_size_for(in_channels)


@dataclass(frozen=True)
class QuantizedWeight:
    """What a layer knows of its quantised weight ``W [out_channels, in_channels]`` (no data)."""

    format: str
    out_channels: int
    in_channels: int

    @property
    def bits(self) -> int:
        return int(format_spec(self.format).bits)

    @property
    def group_size(self) -> int:
        return group_size_of(self.format, self.in_channels)

    @property
    def has_offsets(self) -> bool:
        return bool(format_spec(self.format).has_offsets)

    @property
    def lut(self) -> Optional[np.ndarray]:
        lut = format_spec(self.format).lut
        return None if lut is None else np.asarray(lut, np.float32)

    @property
    def codes_shape(self) -> Tuple[int, int]:
        return codes_layout(self.bits, self.out_channels, self.in_channels)[1]

    @property
    def codes_dtype(self):
        return codes_layout(self.bits, self.out_channels, self.in_channels)[0]

    @property
    def groups_shape(self) -> Tuple[int, int]:
        return (self.out_channels, self.in_channels // self.group_size)

    @property
    def nbytes(self) -> int:
        """Static bytes of codes + scales (+ offsets)."""
        groups = self.groups_shape[0] * self.groups_shape[1]
        return (int(np.prod(self.codes_shape)) * np.dtype(self.codes_dtype).itemsize
                + 2 * groups * (2 if self.has_offsets else 1))

    def check(self, func: str) -> "QuantizedWeight":
        """ValueError naming ``in_channels`` when K is not a multiple of the group size (or odd for 4-bit)."""
        spec_group = format_spec(self.format).group_size
        if spec_group is not None and self.in_channels % spec_group:
            raise ValueError(f"For '{func}', 'in_channels' ({self.in_channels}) must be a multiple of the group "
                             f"size {int(spec_group)} of format {self.format!r}; pad the layer or choose a "
                             f"per-channel format ('int8').")
        return self


def describe(q: QuantizedTensor) -> QuantizedWeight:
    out_channels, in_channels = (int(d) for d in q.shape)
    return QuantizedWeight(q.format, out_channels, in_channels)


def _constant_lut(weight: QuantizedWeight) -> Tensor:
    lut = weight.lut
    return Tensor(np.zeros(1, np.float32) if lut is None else lut)


def attach(cell: nn.Cell, weight: QuantizedWeight, params: Optional[Dict[str, Parameter]] = None) -> None:
    """Give ``cell`` the Parameters of ``weight`` (``params``: take over these objects; else zero codes) and its
    constants (``_lut``, ``_no_offsets``); sets ``cell.quantized_weight``."""
    cell.quantized_weight = weight
    if params is None:
        params = {"weight_codes": Parameter(Tensor(np.zeros(weight.codes_shape, weight.codes_dtype)),
                                            name="weight_codes", requires_grad=False),
                  "weight_scales": Parameter(Tensor(np.zeros(weight.groups_shape, np.float16)),
                                             name="weight_scales", requires_grad=False)}
        if weight.has_offsets:
            params["weight_offsets"] = Parameter(Tensor(np.zeros(weight.groups_shape, np.float16)),
                                                 name="weight_offsets", requires_grad=False)
    cell.weight_codes = params["weight_codes"]
    cell.weight_scales = params["weight_scales"]
    cell.weight_offsets = params.get("weight_offsets") if weight.has_offsets else None
    cell.quant_has_offsets = weight.has_offsets  # a plain bool, read in construct
    cell._lut = _constant_lut(weight)  # pylint: disable=protected-access
    cell._no_offsets = Tensor(np.zeros(1, np.float16))  # pylint: disable=protected-access


def own_params(cell: nn.Cell) -> Dict[str, Parameter]:
    """The quantised weight's Parameters of ``cell`` by attribute name (offsets only when present)."""
    return {name: getattr(cell, name) for name in PARAM_NAMES if getattr(cell, name, None) is not None}


def read(cell: nn.Cell) -> QuantizedTensor:
    """A host copy of ``cell``'s quantised weight."""
    w = cell.quantized_weight
    offsets = cell.weight_offsets.asnumpy() if w.has_offsets else None
    return QuantizedTensor(w.format, (w.out_channels, w.in_channels), cell.weight_codes.asnumpy(),
                           cell.weight_scales.asnumpy(), offsets)


def assign(cell: nn.Cell, q: QuantizedTensor, func: str = "load_quantized") -> None:
    """Set ``cell``'s Parameters from ``q`` bit-exact; ValueError (naming ``func``) for another format or shape."""
    w = cell.quantized_weight
    if q.format != w.format or tuple(q.shape) != (w.out_channels, w.in_channels):
        raise ValueError(f"For '{func}', the layer holds a {w.format} weight of shape {(w.out_channels, w.in_channels)}, "
                         f"but got a {q.format} weight of shape {tuple(q.shape)}.")
    cell.weight_codes.set_data(Tensor(np.ascontiguousarray(q.codes, w.codes_dtype)))
    cell.weight_scales.set_data(Tensor(np.ascontiguousarray(q.scales, np.float16)))
    if w.has_offsets:
        cell.weight_offsets.set_data(Tensor(np.ascontiguousarray(q.offsets, np.float16)))


def dequantized(cell: nn.Cell, dtype=np.float64) -> np.ndarray:
    """``deq(W) [N, K]`` on the host in ``dtype`` (the layout's formula)."""
    return dequantize(read(cell), dtype=dtype)


def frozen_parameters(cell: nn.Cell) -> Tuple[Parameter, ...]:
    """The Parameters of ``cell``'s frozen quantised base: codes, scales, offsets and the bias."""
    params = list(own_params(cell).values())
    bias = getattr(cell, "bias", None)
    if isinstance(bias, Parameter):
        params.append(bias)
    return tuple(params)
