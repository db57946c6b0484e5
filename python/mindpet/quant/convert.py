"""Quantise a model's Linear-like cells by path pattern: ``quantize_dense(net, ['*attention.*'], 'nf4')``."""
from __future__ import annotations

from typing import List, Optional

import numpy as np
from mindspore import Parameter, nn
from mindspore.common import dtype as mstype

from mindpet._cells import check_cell, param_prefix
from mindpet._mindspore import invalidate_compiled_graphs
from mindpet.inject import Patterns, select_linear, swap_cell
from mindpet.linear_adapters import linear_adapter
from mindpet.quant import _weight
from mindpet.quant.formats import quantize
from mindpet.quant.layers import QuantizedDense

__all__ = ["quantize_dense", "quantize_cell"]


def _host_weight(view) -> np.ndarray:
    """The cell's weight as float32 ``[out, in]`` on the host: one copy of this weight only."""
    w = view.weight
    host = (w if w.dtype != mstype.bfloat16 else w.astype(mstype.float32)).asnumpy().astype(np.float32, copy=False)
    return host if view.transpose_b else np.ascontiguousarray(host.T)


def _checked_view(cell: nn.Cell, fmt: str, func: str, path: str = ""):
    """The cell's LinearView, checked for quantisation (ValueError naming the path and ``in_channels``)."""
    adapter = linear_adapter(cell)
    where = f" at {path!r}" if path else ""
    if adapter is None or isinstance(cell, QuantizedDense):
        raise ValueError(f"For '{func}', the cell{where} ({type(cell).__name__}) is not a float Linear-like cell "
                         f"(nn.Dense or a class registered with mindpet.register_linear).")
    view = adapter.view(cell)
    try:
        _weight.QuantizedWeight(fmt, view.out_channels, view.in_channels).check(func)
    except ValueError as err:
        raise ValueError(f"{err} (the layer{where})") from None
    return view


def quantize_cell(cell: nn.Cell, fmt: str, func: str = "quantize_cell", path: str = "",
                  backend: Optional[str] = None) -> QuantizedDense:
    """The :class:`QuantizedDense` replacing one Linear-like ``cell``: weight quantised, bias Parameter taken over
    (cast copy if its dtype is not the compute dtype), activation kept; the compute dtype is the cell's
    (bfloat16: float32)."""
    _weight.check_format(fmt, func)
    view = _checked_view(cell, fmt, func, path)
    compute_dtype = view.compute_dtype if view.compute_dtype in (mstype.float32, mstype.float16) else mstype.float32
    bias = view.bias
    if bias is not None and bias.dtype != compute_dtype:
        bias = Parameter(bias.astype(compute_dtype), name=bias.name, requires_grad=False)
    layer = QuantizedDense.from_quantized(quantize(_host_weight(view), fmt), bias=bias, activation=view.activation,
                                          compute_dtype=compute_dtype, backend=backend)
    layer.set_train(bool(cell.training))
    return layer


def quantize_dense(net: nn.Cell, target_cells: Patterns, format: str,  # pylint: disable=redefined-builtin
                   exclude_cells: Optional[Patterns] = None, *, backend: Optional[str] = None) -> List[str]:
    """Replace the Linear-like cells of ``net`` selected by path patterns with frozen :class:`QuantizedDense` layers.

    Patterns follow :func:`mindpet.inject` (case-sensitive shell wildcards over ``net.cells_and_names()``
    paths, ``*`` crossing dots, or ``re:<regex>``; every target pattern must select a Linear-like cell: an
    ``nn.Dense``, mindformers' ``Linear`` or a class registered with :func:`mindpet.register_linear`; a
    ``[in, out]`` weight is transposed once). Each weight is quantised on its own (one float32 copy of one
    weight at a time, never of the model), its bias Parameter taken over frozen, its activation kept; the
    replaced float weight is released with the cell. The parameters of the new layers are named
    ``<path>.weight_codes``, ``<path>.weight_scales`` (``<path>.weight_offsets``), ``<path>.bias``.
    Every selected cell is checked (format, group size) before anything changes; the layers are then built
    and swapped one at a time. Compiled graphs are invalidated. Then ``inject(net, 'lora', ...)`` puts LoRA
    on top of the quantised layers.

    Args:
        net: the model (changed in place).
        target_cells: a pattern or a list of patterns.
        format: ``'int8'``, ``'nf4'``, ``'q4_0'``, ``'q4_1'``, ``'q5_0'``, ``'q5_1'`` or ``'q8_0'``.
        exclude_cells: patterns removing cells from the selection.
        backend: the kernel backend of the new layers (``'auto'``, ``'fused'``, ``'composed'``, None).

    Returns:
        The replaced paths, sorted.

    Raises:
        TypeError: ``net`` not a Cell; ``format`` not a str; bad pattern lists.
        ValueError: an unknown format; a pattern selecting no Linear-like cell; a selected cell that is
            already quantised or a delta layer, or of an unregistered class; an ``in_channels`` that is not a
            multiple of the format's group size (the message names the layer).
    """
    func = "quantize_dense"
    check_cell(net, func, "net")
    _weight.check_format(format, func)
    slots = select_linear(net, target_cells, exclude_cells, func=func, target_arg="target_cells",
                          exclude_arg="exclude_cells")
    done = [p for p, s in slots.items() if isinstance(s.cell, QuantizedDense)]
    if done:
        raise ValueError(f"For '{func}', target_cells select layers that are already quantised: {done[:5]}; "
                         f"exclude them (exclude_cells) or narrow target_cells.")
    for path, slot in slots.items():  # everything checked before anything changes
        _checked_view(slot.cell, format, func, path)
    for path, slot in slots.items():  # one weight at a time
        layer = quantize_cell(slot.cell, format, func, path, backend)
        swap_cell(slot, layer, param_prefix(slot.cell, path), ())
    invalidate_compiled_graphs()
    return list(slots)
