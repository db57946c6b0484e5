"""Activations of the fused ops: which activation has which contract code, and their composed versions.

=====  ============  ==================================================  =============================
code   name          act(z)                                              MindSpore equivalent
=====  ============  ==================================================  =============================
0      identity      z                                                   ``None``
1      relu          max(z, 0)                                           ``nn.ReLU``, ``ops.ReLU``
2      gelu          0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))     ``nn.GELU()``, ``ops.GeLU``
3      gelu_erf      0.5 z (1 + erf(z / sqrt(2)))                        ``nn.GELU(approximate=False)``
4      sigmoid       1 / (1 + exp(-z))                                   ``nn.Sigmoid``, ``ops.Sigmoid``
5      tanh          tanh(z)                                             ``nn.Tanh``, ``ops.Tanh``
6      silu          z sigmoid(z)                                        ``nn.SiLU``, ``SiLU`` primitive
=====  ============  ==================================================  =============================
"""
from __future__ import annotations

from typing import Any, Optional

from mindspore import nn, ops
from mindspore.ops.auto_generate import SiLU
from mindspore.ops.primitive import Primitive

from mindpet._eager import GradSafeCell
from mindpet._mindspore import cell_primitives
# the codes are the contract's (mindpet.kernels.contracts, ops/include/mindpet/contracts.h)
from mindpet.kernels.contracts import ACTIVATION_CODES, GELU, GELU_ERF, IDENTITY, RELU, SIGMOID, SILU, TANH

_CELL_CODES = ((nn.ReLU, RELU), (nn.Sigmoid, SIGMOID), (nn.Tanh, TANH), (nn.SiLU, SILU))
_PRIMITIVE_CODES = ((ops.ReLU, RELU), (ops.GeLU, GELU), (ops.Sigmoid, SIGMOID), (ops.Tanh, TANH),
                    (SiLU, SILU))


def _primitive_code(prim: Primitive) -> Optional[int]:
    for cls, code in _PRIMITIVE_CODES:
        if type(prim) is cls:  # pylint: disable=unidiomatic-typecheck
            return code
    return None


def activation_code(activation: Any) -> Optional[int]:
    """The contract code of ``activation`` (None, name, Cell or Primitive); None when not fusable.

    A Cell is recognised by its type (``nn.GELU`` by its ``approximate`` flag) or, for a Cell that
    only wraps one known primitive (as the delta layers' ``PrimitiveActivation``), by that primitive.
    """
    if activation is None:
        return IDENTITY
    if isinstance(activation, str):
        key = activation.lower()
        return ACTIVATION_CODES.get(key)
    if isinstance(activation, Primitive):
        return _primitive_code(activation)
    if isinstance(activation, nn.GELU):
        approximate = getattr(activation, "approximate", "tanh")  # 'tanh' / 'none' (older: bool)
        return GELU_ERF if approximate in (False, "none") else GELU
    for cls, code in _CELL_CODES:
        if type(activation) is cls:  # pylint: disable=unidiomatic-typecheck
            return code
    if isinstance(activation, nn.Cell):
        prims = cell_primitives(activation)
        children = list(activation.cells())
        if len(prims) == 1 and not children:
            return _primitive_code(prims[0])
    return None


class ComposedActivation(GradSafeCell):
    """``act(z)`` for a contract code, from MindSpore primitives (autodiff gives ``act'``)."""

    def __init__(self, code: int):
        super().__init__()
        if code not in ACTIVATION_CODES.values():
            raise ValueError(f"unknown activation code {code}; known: {ACTIVATION_CODES}")
        self.code = code
        self.relu = ops.ReLU()
        self.gelu = ops.GeLU()
        self.erf = ops.Erf()
        self.sigmoid = ops.Sigmoid()
        self.tanh = ops.Tanh()

    def construct(self, z):
        if self.code == RELU:
            return self.relu(z)
        if self.code == GELU:
            return self.gelu(z)
        if self.code == GELU_ERF:
            return 0.5 * z * (1.0 + self.erf(z * 0.7071067811865476))
        if self.code == SIGMOID:
            return self.sigmoid(z)
        if self.code == TANH:
            return self.tanh(z)
        if self.code == SILU:
            return z * self.sigmoid(z)
        return z
