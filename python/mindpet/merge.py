"""Merge LoRA into the pre-trained weights for inference, undo it, or unload LoRA entirely.

For every :class:`LoRADense` of a model, merging sets ``W' = W + (lora_alpha / lora_rank) B A``
(``W: [out, in]``, ``B: [out, r]``, ``A: [r, in]``), after which the layer computes
``activation(x W'^T + b)`` at the cost of an ``nn.Dense``. See :meth:`LoRADense.merge` for the numerics.
"""
from __future__ import annotations

from typing import List, Tuple

from mindspore import nn

from mindpet._cells import cell_slots, check_cell, param_prefix, replace_cell
from mindpet.delta import LoRADense
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


def merge_lora(model: nn.Cell) -> List[str]:
    """Merge every LoRADense of ``model`` (:meth:`LoRADense.merge`); return the paths merged now.

    Layers already merged are left as they are (merging is idempotent). While merged, a layer skips its
    LoRA branch and refuses to run in training mode; :func:`unmerge_lora` undoes the merge.
    """
    return [path for path, layer in lora_layers(model, "merge_lora") if layer.merge()]


def unmerge_lora(model: nn.Cell) -> List[str]:
    """Unmerge every merged LoRADense of ``model`` (:meth:`LoRADense.unmerge`); return the paths unmerged."""
    return [path for path, layer in lora_layers(model, "unmerge_lora") if layer.unmerge()]


def _to_dense(layer: LoRADense) -> nn.Dense:
    """An ``nn.Dense`` holding the merged weight Parameter and the bias of a merged ``layer``."""
    dense = nn.Dense(layer.in_channels, layer.out_channels, weight_init="zeros", bias_init="zeros",
                     has_bias=layer.has_bias, activation=layer.activation)
    dense.weight = layer.weight
    if layer.has_bias:
        dense.bias = layer.bias
    dense.set_train(bool(layer.training))
    return dense


def merge_and_unload(model: nn.Cell) -> nn.Cell:
    """Replace every LoRADense of ``model`` by a plain ``nn.Dense`` holding ``W + s B A``; return ``model``.

    The Dense takes over the merged ``weight`` and the ``bias`` Parameters (names and ``requires_grad``
    kept), ``has_bias`` and ``activation``; the LoRA parameters are dropped. The Dense computes in its
    weight's dtype (``nn.Dense`` semantics), not in the LoRA layer's ``compute_dtype``. The result is an
    ordinary model: it trains and saves like the pre-trained one. Compiled graphs are invalidated.

    Raises:
        TypeError: ``model`` is not a Cell. ValueError: ``model`` holds no LoRADense, or is itself one
            (the root cannot be replaced in place: use ``merge()``).
    """
    layers = lora_layers(model, "merge_and_unload")
    if layers[0][0] == "":
        raise ValueError("For 'merge_and_unload', 'model' is itself a LoRADense and cannot be replaced in "
                         "place; call model.merge() instead.")
    slots = cell_slots(model)
    for path, layer in layers:
        layer.merge()
        dense, prefix = _to_dense(layer), param_prefix(layer, path)
        for slot in [s for s in slots.values() if s.cell is layer]:  # every path of a shared layer
            replace_cell(slot, dense, prefix)
    invalidate_compiled_graphs()
    return model
