"""Cells of a network: the "is a Cell" check, cell paths and in-place replacement (shared by every sub-package).

A *path* is the dotted attribute path of a sub-cell, as in ``model.cells_and_names()``
(``'bert.layers.0.attention.query'``); the root has no path and is never replaced.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List

from mindspore import nn

from mindpet._mindspore import child_cells


def check_cell(model: Any, func: str, arg: str = "model") -> None:
    """TypeError (naming ``func`` and ``arg``) unless ``model`` is a ``mindspore.nn.Cell``."""
    if not isinstance(model, nn.Cell):
        raise TypeError(f"For '{func}', '{arg}' must be a mindspore.nn.Cell, but got {type(model).__name__}.")


def is_plain_dense(cell: nn.Cell) -> bool:
    """Whether ``cell`` computes what ``nn.Dense`` computes (an ``nn.Dense``, or a subclass keeping its ``construct``)."""
    return isinstance(cell, nn.Dense) and type(cell).construct is nn.Dense.construct


@dataclass(frozen=True)
class CellSlot:
    """Where a sub-cell lives: ``getattr(parent, attr) is cell`` (or ``parent[attr]`` for containers)."""

    path: str
    parent: nn.Cell
    attr: str
    cell: nn.Cell


def cell_slots(model: nn.Cell) -> Dict[str, CellSlot]:
    """Every sub-cell of ``model`` by path, in definition order.

    Unlike ``cells_and_names()``, a cell reachable through two paths (shared) is listed under both,
    so that callers can refuse to replace it at one path only.
    """
    slots: Dict[str, CellSlot] = {}
    on_stack = set()

    def walk(parent: nn.Cell, prefix: str) -> None:
        on_stack.add(id(parent))
        for attr, child in child_cells(parent).items():
            if child is None or id(child) in on_stack:
                continue
            path = f"{prefix}{attr}"
            slots[path] = CellSlot(path, parent, attr, child)
            walk(child, path + ".")
        on_stack.discard(id(parent))

    walk(model, "")
    return slots


def shared_paths(slots: Dict[str, CellSlot], paths: List[str]) -> Dict[str, List[str]]:
    """For each of ``paths`` whose cell is also reachable through another path: all its paths."""
    by_cell: Dict[int, List[str]] = {}
    for path, slot in slots.items():
        by_cell.setdefault(id(slot.cell), []).append(path)
    return {p: by_cell[id(slots[p].cell)] for p in paths if len(by_cell[id(slots[p].cell)]) > 1}


def param_prefix(cell: nn.Cell, path: str) -> str:
    """The prefix of ``cell``'s parameter names: ``'<prefix>weight'`` is its ``weight``'s name.

    Read from the existing ``weight`` so a replacement keeps the names the model's checkpoints use
    (normally ``path + '.'``, but a wrapper built with ``auto_prefix=False`` may differ).
    """
    name = getattr(getattr(cell, "weight", None), "name", "")
    if name.endswith("weight"):
        return name[:-len("weight")]
    return path + "."


def replace_cell(slot: CellSlot, new: nn.Cell, prefix: str) -> None:
    """Put ``new`` where ``slot.cell`` was and name its parameters ``prefix + <local name>``."""
    parent = slot.parent
    if isinstance(parent, (nn.SequentialCell, nn.CellList)):
        parent[int(slot.attr)] = new  # keeps the container's own bookkeeping in step
    elif isinstance(parent, nn.CellDict):
        parent[slot.attr] = new
    else:
        setattr(parent, slot.attr, new)
    new.update_parameters_name(prefix)
