"""Activation resolution and sharding shared by the delta layers.

An activation may be given as a name (``'relu'``), a ``Cell`` or a ``Primitive``, exactly as for
``mindspore.nn.Dense``.  Names resolve through ``mindspore.nn.get_activation``; where MindSpore's Cell
computes through functional ops and so holds no primitive (``'gelu'``, ``'silu'``, ``'leakyrelu'``,
``'hardtanh'``, ``'softmin'``, ``'tanhshrink'``, ``'preluExt'``) or through primitives of different inputs
(``'logsigmoid'``), a form built from primitives computing the same thing is used instead
(:class:`ShardableActivation`), so that ``shard`` has a primitive for every name.

An activation strategy has one entry per input of the activation (:func:`activation_shard_plan`).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.ops.auto_generate import ClampScalar, SiLU
from mindspore.ops.primitive import Primitive

from mindpet._eager import GradSafeCell
from mindpet._mindspore import activation_names, cell_primitives
from mindpet.delta._strategy import check_strategy

ActivationType = Union[str, nn.Cell, Primitive, None]


class UnknownActivationError(KeyError, ValueError):
    """An activation name MindSpore does not know (a KeyError, as documented, and a ValueError)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# The layers apply their activations to 2-D (N, C) data: the data input of an activation has rank 2.
ACTIVATION_DATA_RANK = 2


class ShardableActivation(GradSafeCell):
    """An activation computed by primitives ``shard`` can reach.

    ``input_ranks`` are the ranks of the activation's inputs (its data ``(N, C)``, then any parameter of
    its own); a strategy for it has one entry per input. :meth:`shard_pairs` maps such a strategy to the
    ``(primitive, strategy)`` pairs of the primitives that compute the activation.
    """

    input_ranks: Tuple[int, ...] = (ACTIVATION_DATA_RANK,)

    def shard_pairs(self, strategy: tuple) -> List[tuple]:
        raise NotImplementedError


class PrimitiveActivation(ShardableActivation):
    """``y = prim(x, *constants)``: one primitive whose only Tensor input is ``x``."""

    def __init__(self, primitive: Primitive, *constants):
        super().__init__()
        self.activation = primitive
        self.constants = constants

    def construct(self, x):
        return self.activation(x, *self.constants)

    def shard_pairs(self, strategy: tuple) -> List[tuple]:
        return [(self.activation, strategy)]


class LeakyReLUActivation(ShardableActivation):
    """``y = max(x, alpha x)`` (``nn.LeakyReLU`` for ``0 <= alpha <= 1``; MindSpore's default alpha 0.2)."""

    def __init__(self, alpha: float = 0.2):
        super().__init__()
        self.alpha = alpha
        self.mul = ops.Mul()
        self.maximum = ops.Maximum()

    def construct(self, x):
        return self.maximum(x, self.mul(x, self.alpha))

    def shard_pairs(self, strategy: tuple) -> List[tuple]:
        (data,) = strategy
        return [(self.mul, (data, ())), (self.maximum, (data, data))]


class SoftminActivation(ShardableActivation):
    """``y = softmax(-x)`` over the last axis (``nn.Softmin``)."""

    def __init__(self):
        super().__init__()
        self.neg = ops.Neg()
        self.softmax = ops.Softmax(axis=-1)

    def construct(self, x):
        return self.softmax(self.neg(x))

    def shard_pairs(self, strategy: tuple) -> List[tuple]:
        return [(self.neg, strategy), (self.softmax, strategy)]


class TanhshrinkActivation(ShardableActivation):
    """``y = x - tanh(x)`` (``nn.Tanhshrink``)."""

    def __init__(self):
        super().__init__()
        self.tanh = ops.Tanh()
        self.sub = ops.Sub()

    def construct(self, x):
        return self.sub(x, self.tanh(x))

    def shard_pairs(self, strategy: tuple) -> List[tuple]:
        (data,) = strategy
        return [(self.tanh, strategy), (self.sub, (data, data))]


class LogSigmoidActivation(ShardableActivation):
    """``y = log(sigmoid(x)) = -softplus(-x)`` (``nn.LogSigmoid``, without its overflow for large ``-x``)."""

    def __init__(self):
        super().__init__()
        self.neg_in = ops.Neg()
        self.softplus = ops.Softplus()
        self.neg_out = ops.Neg()

    def construct(self, x):
        return self.neg_out(self.softplus(self.neg_in(x)))

    def shard_pairs(self, strategy: tuple) -> List[tuple]:
        return [(self.neg_in, strategy), (self.softplus, strategy), (self.neg_out, strategy)]


class PReLUActivation(ShardableActivation):
    """``y = max(x, 0) + w min(x, 0)`` with one trainable slope ``weight: (1,)`` = 0.25 (``nn.PReLUExt``).

    Its inputs are the data and the weight: a strategy has two entries, ``((n, c), (1,))``.
    """

    input_ranks = (ACTIVATION_DATA_RANK, 1)

    def __init__(self, init: float = 0.25):
        super().__init__()
        self.weight = Parameter(Tensor(np.full((1,), init, np.float32)), name="weight")
        self.prelu = ops.PReLU()

    def construct(self, x):
        return self.prelu(x, ops.cast(self.weight, x.dtype))  # functional: the weight's cast takes no strategy

    def shard_pairs(self, strategy: tuple) -> List[tuple]:
        return [(self.prelu, strategy)]


# Names whose nn Cell in MindSpore 2.10 computes through functional ops (no primitive for ``shard``) or
# through several primitives of different inputs, with a primitive-backed form computing the same thing.
_PRIMITIVE_FORMS: Dict[str, Callable[[], ShardableActivation]] = {
    "gelu": lambda: PrimitiveActivation(ops.GeLU()),  # nn.GELU() defaults to the tanh approximation, as ops.GeLU
    "silu": lambda: PrimitiveActivation(SiLU()),
    "hardtanh": lambda: PrimitiveActivation(ClampScalar(), -1.0, 1.0),
    "leakyrelu": LeakyReLUActivation,
    "softmin": SoftminActivation,
    "tanhshrink": TanhshrinkActivation,
    "logsigmoid": LogSigmoidActivation,
    "preluExt": PReLUActivation,
}

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
        if key in _PRIMITIVE_FORMS:
            return _PRIMITIVE_FORMS[key]()
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
    return [p for _, cell in activation.cells_and_names() for p in cell_primitives(cell)]


def _is_log_softmax(activation) -> bool:
    if isinstance(activation, (nn.LogSoftmax, ops.LogSoftmax)):
        return True
    return any(isinstance(p, ops.LogSoftmax) for p in activation_primitives(activation))


def check_activation_parallel(activation, name: str, cls_name: str) -> None:
    """ValueError for LogSoftmax under semi-auto/auto parallel (not supported there, as documented)."""
    mode = ms.get_auto_parallel_context("parallel_mode")
    if activation is not None and mode in ("semi_auto_parallel", "auto_parallel") and _is_log_softmax(activation):
        raise ValueError(f"For '{cls_name}', '{name}' LogSoftmax is not supported in {mode} mode.")


def primitive_input_ranks(prim: Primitive) -> Tuple[int, ...]:
    """The ranks of a primitive's Tensor inputs when it computes an activation of 2-D data.

    Tensor inputs are the call's positional parameters without a default (MindSpore 2.10's generated
    primitives; older ones declare ``input_names``). Each has the data's rank, except PReLU's weight (1).
    """
    if isinstance(prim, ops.PReLU):
        return (ACTIVATION_DATA_RANK, 1)
    try:
        params = list(inspect.signature(type(prim).__call__).parameters.values())[1:]
    except (TypeError, ValueError):
        params = []
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        count = len(getattr(prim, "input_names", None) or ["x"])
    else:
        count = sum(1 for p in params if p.default is inspect.Parameter.empty
                    and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD))
    return (ACTIVATION_DATA_RANK,) * max(count, 1)


def _shard_layout(activation, arg_name: str, strategy_name: str,
                  cls_name: str) -> Tuple[Tuple[int, ...], Callable[[tuple], List[tuple]]]:
    """The input ranks of ``activation`` and the map from its strategy to ``(primitive, strategy)`` pairs."""
    if isinstance(activation, ShardableActivation):
        return activation.input_ranks, activation.shard_pairs
    if isinstance(activation, Primitive):
        return primitive_input_ranks(activation), lambda strategy: [(activation, strategy)]
    prims = activation_primitives(activation)
    if not prims:
        raise ValueError(f"For '{cls_name}', the {arg_name} {type(activation).__name__} holds no primitive to "
                         f"apply '{strategy_name}' to; pass its name or a Primitive such as mindspore.ops.ReLU().")
    layouts = {primitive_input_ranks(p) for p in prims}
    if len(layouts) > 1:
        names = ", ".join(f"{type(p).__name__}{primitive_input_ranks(p)}" for p in prims)
        raise ValueError(f"For '{cls_name}', the {arg_name} {type(activation).__name__} computes through primitives "
                         f"with different inputs ({names}), so one '{strategy_name}' cannot fit them all; pass "
                         f"its name (e.g. 'logsigmoid') or a Primitive instead.")
    return layouts.pop(), lambda strategy: [(p, strategy) for p in prims]


def activation_shard_plan(activation, strategy: Optional[tuple], arg_name: str, strategy_name: str,
                          cls_name: str) -> list:
    """Validate an activation's strategy and return ``(primitive, strategy)`` pairs to attach later.

    The strategy has one entry per input of the activation, each as long as the input's rank: ``((n, c),)``
    for the data alone, ``((n, c), (1,))`` for PReLU (data and weight); an activation computed by several
    primitives (``'logsigmoid'``, ``'tanhshrink'``, ...) passes it on to each of them. Without activation
    the strategy has no effect and only its form is checked (entries of 2 dims, as the spec's examples).
    Nothing is attached here, so a caller can validate every strategy first. ValueError for LogSoftmax
    under (semi-)auto parallel, a strategy that does not fit the activation's inputs, or an activation Cell
    that holds no primitive (or primitives of different inputs) to carry the strategy.
    """
    check_activation_parallel(activation, arg_name, cls_name)
    if strategy is None:
        return []
    if activation is None:
        check_strategy(strategy, strategy_name, cls_name, entry_rank=ACTIVATION_DATA_RANK)
        return []
    check_strategy(strategy, strategy_name, cls_name)  # the form first: TypeError/ValueError naming it
    ranks, pairs = _shard_layout(activation, arg_name, strategy_name, cls_name)
    check_strategy(strategy, strategy_name, cls_name, input_ranks=ranks)
    return pairs(strategy)
