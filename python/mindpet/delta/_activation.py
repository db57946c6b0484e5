"""Activation resolution and sharding shared by the delta layers.

An activation may be given as a name (``'relu'``), a ``Cell`` or a ``Primitive``, exactly as for
``mindspore.nn.Dense``.  Names resolve through ``mindspore.nn.get_activation``; where MindSpore's Cell
computes through functional ops and so holds no primitive (``'gelu'``), the equivalent primitive is used
instead, so that ``shard`` always has a primitive to attach its strategy to.
"""
from __future__ import annotations

from typing import Any, List, Optional, Union

import mindspore as ms
from mindspore import nn, ops
from mindspore.ops.primitive import Primitive

from mindpet._eager import GradSafeCell
from mindpet._mindspore import activation_names, cell_primitives
from mindpet.delta._strategy import check_strategy

ActivationType = Union[str, nn.Cell, Primitive, None]


class UnknownActivationError(KeyError, ValueError):
    """An activation name MindSpore does not know (a KeyError, as documented, and a ValueError)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PrimitiveActivation(GradSafeCell):
    """A Cell that applies one activation primitive: ``y = prim(x)``."""

    def __init__(self, primitive: Primitive):
        super().__init__()
        self.activation = primitive

    def construct(self, x):
        return self.activation(x)


# Names whose nn Cell holds no primitive in MindSpore 2.10, with the primitive computing the same thing.
_PRIMITIVE_EQUIVALENTS = {
    "gelu": ops.GeLU,  # nn.GELU() defaults to the tanh approximation, as ops.GeLU
}


# The layers apply their activations to 2-D (N, C) data: every entry of an activation strategy has 2 dims.
ACTIVATION_DATA_RANK = 2

# Names MindSpore knows that can never run here: the layers apply the activation to 2-D (N, C) data.
_UNUSABLE_NAMES = {
    "softmax2d": "needs 3-D or 4-D input, but the layer applies its activation to 2-D (N, C) data.",
}


def resolve_activation(activation: Any, name: str, cls_name: str, allow_none: bool = True):
    """Return the activation as a Cell or Primitive (or None).

    Raises:
        TypeError: not a str, Cell, Primitive (or None when allowed).
        UnknownActivationError: a str that is not a known activation name.
        ValueError: a known name that cannot be used here (``'softmax2d'``, ``'threshold'``).
    """
    if activation is None and allow_none:
        return None
    if isinstance(activation, str):
        names = activation_names()
        # MindSpore's names are case-sensitive (e.g. 'logsoftmaxExt'); also accept any case ('ReLU').
        key = activation if activation in names else activation.lower()
        if key not in names:
            raise UnknownActivationError(
                f"For '{cls_name}', '{name}' must be one of {names}, but got {activation!r}.")
        if key in _PRIMITIVE_EQUIVALENTS:
            return PrimitiveActivation(_PRIMITIVE_EQUIVALENTS[key]())
        if key in _UNUSABLE_NAMES:
            raise ValueError(f"For '{cls_name}', '{name}' {activation!r} {_UNUSABLE_NAMES[key]}")
        try:
            return nn.get_activation(key)
        except TypeError as err:  # e.g. 'threshold': its Cell has required arguments
            raise ValueError(f"For '{cls_name}', '{name}' {activation!r} cannot be built from its name alone "
                             f"({err}); pass an activation Cell instance instead.") from err
    if isinstance(activation, (nn.Cell, Primitive)):
        return activation
    expected = "str, Cell, Primitive or None" if allow_none else "str, Cell or Primitive"
    raise TypeError(f"For '{cls_name}', '{name}' must be a {expected}, but got {type(activation).__name__}.")


def activation_primitives(activation) -> List[Primitive]:
    """The primitives an activation runs (the Primitive itself, or those a Cell holds)."""
    if activation is None:
        return []
    if isinstance(activation, Primitive):
        return [activation]
    prims = cell_primitives(activation)
    for _, cell in activation.cells_and_names():
        if cell is not activation:
            prims += cell_primitives(cell)
    return prims


def _is_log_softmax(activation) -> bool:
    if isinstance(activation, (nn.LogSoftmax, ops.LogSoftmax)):
        return True
    return any(isinstance(p, ops.LogSoftmax) for p in activation_primitives(activation))


def check_activation_parallel(activation, name: str, cls_name: str) -> None:
    """ValueError for LogSoftmax under semi-auto/auto parallel (not supported there, as documented)."""
    mode = ms.get_auto_parallel_context("parallel_mode")
    if activation is not None and mode in ("semi_auto_parallel", "auto_parallel") and _is_log_softmax(activation):
        raise ValueError(f"For '{cls_name}', '{name}' LogSoftmax is not supported in {mode} mode.")


def activation_shard_plan(activation, strategy: Optional[tuple], arg_name: str, strategy_name: str,
                          cls_name: str) -> list:
    """Validate an activation's strategy and return ``(primitive, strategy)`` pairs to attach later.

    Nothing is attached here, so a caller can validate every strategy first. No pairs when
    ``strategy`` or ``activation`` is None (a given strategy is validated even then). ValueError for
    LogSoftmax under (semi-)auto parallel, an entry that does not have 2 dims (activations run on
    2-D data), or an activation Cell that holds no primitive to carry the strategy.
    """
    check_activation_parallel(activation, arg_name, cls_name)
    if strategy is None:
        return []
    check_strategy(strategy, strategy_name, cls_name, entry_rank=ACTIVATION_DATA_RANK)
    if activation is None:
        return []
    prims = activation_primitives(activation)
    if not prims:
        raise ValueError(f"For '{cls_name}', the {arg_name} {type(activation).__name__} holds no primitive to "
                         f"apply '{strategy_name}' to; pass a Primitive such as mindspore.ops.ReLU().")
    return [(prim, strategy) for prim in prims]
