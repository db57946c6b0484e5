"""Merge LoRA into the pre-trained weights for inference, undo it, or unload LoRA entirely.

For every :class:`LoRADense` of a model, merging sets ``W' = W + (lora_alpha / lora_rank) B A``
(``W: [out, in]``, ``B: [out, r]``, ``A: [r, in]``; ``W'^T = W^T + s (B A)^T`` in place for a
``[in, out]`` weight, ``transpose_b=False``), after which the layer computes ``activation(x W'^T + b)``
(``x W' + b``) at the cost of the layer it replaced. See :meth:`LoRADense.merge` for the numerics.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
from mindspore import Tensor, nn
from mindspore.common import dtype as mstype

from mindpet._cells import cell_slots, check_cell, param_prefix
from mindpet.delta import LoRADense
from mindpet.delta.lora import _as_float64
from mindpet.inject import replaced_cell, swap_cell
from mindpet.linear_adapters import linear_adapter
from mindpet._mindspore import invalidate_compiled_graphs

__all__ = ["lora_layers", "merge_lora", "unmerge_lora", "merge_and_unload"]


def lora_layers(model: nn.Cell, func: str = "lora_layers") -> List[Tuple[str, LoRADense]]:
    """``(path, layer)`` for every :class:`LoRADense` of ``model`` (``model`` itself has path ``''``), by path.

    Raises:
        TypeError: ``model`` is not a Cell. ValueError: it holds no LoRADense (names ``func``).
    """
    check_cell(model, func)
    found = [(path, cell) for path, cell in model.cells_and_names() if isinstance(cell, LoRADense)]
    if not found:
        raise ValueError(f"For '{func}', the model has no LoRADense layer; add LoRA first, e.g. "
                         f"mindpet.inject(model, 'lora', ['*query', '*value'], lora_rank=8, lora_alpha=16).")
    return sorted(found, key=lambda item: item[0])


def _refuse_quantized(layers: List[Tuple[str, LoRADense]], func: str) -> None:
    """ValueError naming the first LoRADense on a quantised base (merging into it is lossy), before any change."""
    for path, layer in layers:
        if layer.quantized_base:
            from mindpet.quant.lora_base import merge_error  # pylint: disable=import-outside-toplevel
            raise merge_error(layer, func, path)


def merge_lora(model: nn.Cell) -> List[str]:
    """Merge every LoRADense of ``model`` (:meth:`LoRADense.merge`); return the paths merged now.

    Layers already merged are left as they are (merging is idempotent). While merged, a layer skips its
    LoRA branch and refuses to run in training mode; :func:`unmerge_lora` undoes the merge. A LoRADense on a
    quantised base cannot be merged (ValueError naming it, before any layer changes; see
    :func:`merge_and_unload` with ``dequantize=True``).
    """
    layers = lora_layers(model, "merge_lora")
    _refuse_quantized(layers, "merge_lora")
    return [path for path, layer in layers if layer.merge()]


def unmerge_lora(model: nn.Cell) -> List[str]:
    """Unmerge every merged LoRADense of ``model`` (:meth:`LoRADense.unmerge`); return the paths unmerged."""
    return [path for path, layer in lora_layers(model, "unmerge_lora") if layer.unmerge()]


def _dequantized_dense(layer: LoRADense) -> nn.Dense:
    r"""An ``nn.Dense`` (float32) holding ``deq(W_q) + s B A`` (float64 sum, rounded once) and the bias of a
    LoRADense on a quantised base."""
    a = _as_float64(layer.mindpet_delta_lora_a)
    b = _as_float64(layer.mindpet_delta_lora_b)
    from mindpet.quant._weight import dequantized  # pylint: disable=import-outside-toplevel
    merged = dequantized(layer, np.float64) + layer.scaling * (b @ a)
    dense = nn.Dense(layer.in_channels, layer.out_channels, weight_init=Tensor(merged.astype(np.float32)),
                     bias_init="zeros", has_bias=layer.has_bias, activation=layer.activation)
    if layer.has_bias:
        dense.bias.set_data(layer.bias.astype(mstype.float32))
    dense.set_train(bool(layer.training))
    return dense


def _base_cell(layer: LoRADense, path: str) -> nn.Cell:
    """The cell that takes the place of a merged ``layer``: the cell it replaced (``inject``), if that still
    holds the layer's weight and bias Parameters; else an ``nn.Dense`` holding them (``[out, in]`` only)."""
    original = replaced_cell(layer)
    if original is not None:
        adapter = linear_adapter(original)
        view = adapter.view(original) if adapter is not None else None
        if view is not None and view.weight is layer.weight and view.bias is (layer.bias if layer.has_bias else None):
            original.set_train(bool(layer.training))
            return original
    if not layer.transpose_b:
        raise ValueError(f"For 'merge_and_unload', the LoRADense at {path!r} has a [in, out] weight "
                         f"(transpose_b=False) and no cell of its own class to return to (built directly or by "
                         f"mindformers, or by mindpet.inject with a cast copy of the weight); nn.Dense would need "
                         f"a transposed copy of the weight. "
                         f"Use mindpet.merge_lora(model) instead (the layer then computes as the plain layer).")
    return _to_dense(layer)


def _to_dense(layer: LoRADense) -> nn.Dense:
    """An ``nn.Dense`` holding the merged weight Parameter and the bias of a merged ``layer``."""
    dense = nn.Dense(layer.in_channels, layer.out_channels, weight_init="zeros", bias_init="zeros",
                     has_bias=layer.has_bias, activation=layer.activation)
    dense.weight = layer.weight
    if layer.has_bias:
        dense.bias = layer.bias
    dense.set_train(bool(layer.training))
    return dense


def merge_and_unload(model: nn.Cell, dequantize: bool = False) -> nn.Cell:
    """Replace every LoRADense of ``model`` by the plain layer it replaced, holding ``W + s B A``; return ``model``.

    A layer built by :func:`mindpet.inject` gives back the very cell it replaced (an ``nn.Dense``, a
    mindformers ``Linear``, a registered class), which holds the same ``weight`` and ``bias`` Parameter
    objects, now merged (names and ``requires_grad`` kept). Any other LoRADense (built directly, or by
    ``inject`` with a cast copy of the weight) becomes an ``nn.Dense`` taking over the merged ``weight`` and
    the ``bias`` Parameters, ``has_bias`` and ``activation``, computing in its weight's dtype (``nn.Dense``
    semantics). The LoRA parameters are dropped. The result is an ordinary model: it trains and saves like
    the pre-trained one. Compiled graphs are invalidated.

    A LoRADense on a quantised base (``mindpet.quant``) is refused unless ``dequantize=True``: merging into the
    quantised weight would requantise ``W + s B A`` (see :func:`mindpet.quant.merge_cost`). With
    ``dequantize=True`` it becomes a float32 ``nn.Dense`` holding ``deq(W_q) + s B A`` (computed in float64,
    rounded once) and its bias: 4 bytes per weight again, the quantised base gone.

    Raises:
        TypeError: ``model`` is not a Cell; ``dequantize`` not a bool. ValueError: ``model`` holds no
            LoRADense, or is itself one (the root cannot be replaced in place: use ``merge()``); a LoRADense
            with a ``[in, out]`` weight that has no cell of its own to return to; a LoRADense on a quantised
            base without ``dequantize=True`` (checked for every layer before any change).
    """
    layers = lora_layers(model, "merge_and_unload")
    if not isinstance(dequantize, bool):
        raise TypeError(f"For 'merge_and_unload', 'dequantize' must be a bool, but got {type(dequantize).__name__}.")
    if layers[0][0] == "":
        raise ValueError("For 'merge_and_unload', 'model' is itself a LoRADense and cannot be replaced in "
                         "place; call model.merge() instead.")
    if not dequantize:
        _refuse_quantized(layers, "merge_and_unload")
    # any error before anything changes
    bases = {path: _dequantized_dense(layer) if layer.quantized_base else _base_cell(layer, path)
             for path, layer in layers}
    slots = cell_slots(model)
    for path, layer in layers:
        base, prefix = bases[path], param_prefix(layer, path)
        if not layer.quantized_base:
            layer.merge()
        keep = (layer.weight, layer.bias) if not layer.quantized_base else ()
        for slot in [s for s in slots.values() if s.cell is layer]:  # every path of a shared layer
            swap_cell(slot, base, prefix, keep)
    invalidate_compiled_graphs()
    return model
