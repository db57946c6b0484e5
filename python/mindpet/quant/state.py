"""A model's quantised base as a dict for :mod:`mindpet.quant.storage`, and back into a model.

``save_quantized(quantized_tensors(net), "base.safetensors")`` writes every frozen quantised weight of ``net``
(each ``QuantizedDense`` and each ``LoRADense`` on one) as a QuantizedTensor under ``<layer path>.weight``, and
every other non-delta parameter (bias, norms, embeddings, a float head) as a float array under its name;
``load_quantized_into(net, load_quantized("base.safetensors"))`` sets them bit-exact in a model of the same
structure. The delta parameters (``mindpet_delta_*``) are never part of the base: they travel with
:func:`mindpet.save_delta`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Union

import numpy as np
from mindspore import Tensor, nn
from mindspore.common import dtype as mstype

from mindpet._cells import check_cell
from mindpet.methods import DELTA_PREFIX
from mindpet.quant import _weight
from mindpet.quant.formats import QuantizedTensor

__all__ = ["quantized_tensors", "load_quantized_into", "QuantizedLoadReport"]

StoredTensor = Union[QuantizedTensor, np.ndarray]


def _quantized_cells(net: nn.Cell) -> Dict[str, nn.Cell]:
    """``{weight key: cell}`` for every cell holding a quantised weight (key: its codes' name minus ``_codes``)."""
    cells = {}
    for _, cell in net.cells_and_names():
        if getattr(cell, "quantized_weight", None) is not None:
            cells[cell.weight_codes.name[:-len("_codes")]] = cell
    return cells


def _base_params(net: nn.Cell, quantized: Dict[str, nn.Cell]) -> Dict[str, object]:
    """The non-delta Parameters of ``net`` that are not a quantised weight's, by name."""
    skip = {id(p) for cell in quantized.values() for p in _weight.own_params(cell).values()}
    return {p.name: p for _, p in net.parameters_and_names() if id(p) not in skip and DELTA_PREFIX not in p.name}


def quantized_tensors(net: nn.Cell) -> Dict[str, StoredTensor]:
    """``{name: QuantizedTensor | numpy.ndarray}``: the quantised base of ``net`` (see the module docstring);
    bfloat16 parameters as float32."""
    check_cell(net, "quantized_tensors", "net")
    cells = _quantized_cells(net)
    out: Dict[str, StoredTensor] = {key: _weight.read(cell) for key, cell in cells.items()}
    for name, param in _base_params(net, cells).items():
        out[name] = (param.astype(mstype.float32) if param.dtype == mstype.bfloat16 else param).asnumpy()
    return out


@dataclass(frozen=True)
class QuantizedLoadReport:
    """What :func:`load_quantized_into` set (``loaded_keys``) and found missing in the dict or unexpected in it."""

    loaded_keys: List[str] = field(default_factory=list)
    missing_keys: List[str] = field(default_factory=list)
    unexpected_keys: List[str] = field(default_factory=list)


def load_quantized_into(net: nn.Cell, tensors: Dict[str, StoredTensor], strict: bool = True) -> QuantizedLoadReport:
    """Set ``net``'s quantised weights and other base parameters from ``tensors`` (:func:`quantized_tensors`'s
    form, e.g. from :func:`mindpet.quant.load_quantized`), bit-exact.

    Raises:
        TypeError: ``net`` not a Cell, ``tensors`` not a dict. ValueError: a format, shape or dtype kind that
            does not match the model (a QuantizedTensor for a float parameter or the reverse); with ``strict``
            (default) a missing or unexpected key. Everything is checked before any parameter changes.
    """
    func = "load_quantized_into"
    check_cell(net, func, "net")
    if not isinstance(tensors, dict):
        raise TypeError(f"For '{func}', 'tensors' must be a dict, but got {type(tensors).__name__}.")
    cells = _quantized_cells(net)
    params = _base_params(net, cells)
    missing = sorted(k for k in list(cells) + list(params) if k not in tensors)
    unexpected = sorted(k for k in tensors if k not in cells and k not in params)
    if strict and (missing or unexpected):
        raise ValueError(f"For '{func}', the tensors do not match the model: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]} (pass strict=False to load the common keys).")
    plan = []
    for key, value in tensors.items():
        if key in cells:
            cell = cells[key]
            w = cell.quantized_weight
            if not isinstance(value, QuantizedTensor) or value.format != w.format or \
                    tuple(value.shape) != (w.out_channels, w.in_channels):
                got = (f"a {value.format} weight of shape {tuple(value.shape)}" if isinstance(value, QuantizedTensor)
                       else f"a {type(value).__name__}")
                raise ValueError(f"For '{func}', {key!r} is a {w.format} weight of shape "
                                 f"{(w.out_channels, w.in_channels)} in the model, but got {got}.")
            plan.append((key, lambda c=cell, v=value: _weight.assign(c, v, func)))
        elif key in params:
            param = params[key]
            if not isinstance(value, np.ndarray) or tuple(value.shape) != tuple(param.shape):
                got = f"shape {tuple(value.shape)}" if isinstance(value, np.ndarray) else type(value).__name__
                raise ValueError(f"For '{func}', {key!r} is a parameter of shape {tuple(param.shape)}, but got {got}.")
            plan.append((key, lambda p=param, v=value: p.set_data(Tensor(v).astype(p.dtype))))
    for _, apply in plan:
        apply()
    return QuantizedLoadReport([k for k, _ in plan], missing, unexpected)
