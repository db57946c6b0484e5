"""Elementwise ``activation`` through the selected backend (``ops/CONTRACTS.md`` 4): ``y = act(x)``.

:class:`Activation` is the Cell (GRAPH- and PYNATIVE-safe); :func:`activation` the functional form
(PYNATIVE). Fused for every contract activation code (:mod:`mindpet.kernels.activations`), e.g.
``Activation('gelu_erf')`` for the exact GELU of BERT; other activations run composed under ``auto``
(and raise under ``fused``). The fused kernel runs on CPU; GPU and Ascend run composed.
"""
from __future__ import annotations

from typing import Any, Optional

from mindspore import nn
from mindspore.common import dtype as mstype

from mindpet._eager import GradSafeCell
from mindpet.kernels import _primitives, backend as _backend
from mindpet.kernels.activations import ComposedActivation, activation_code

__all__ = ["Activation", "activation"]


class Activation(GradSafeCell):
    r"""``y = act(x)`` elementwise as one fused op when available (backward ``dx = dy * act'(x)``).

    Args:
        activation: None, a name (``'gelu_erf'`` exact GELU, ``'gelu'`` tanh approximation, ``'relu'``,
            ``'sigmoid'``, ``'tanh'``, ``'silu'``, ``'identity'``), Cell or Primitive.
        backend: ``'auto'``, ``'fused'``, ``'composed'`` or None (global choice).

    Input: ``x`` of any shape (float32/float16 fused, bfloat16 composed). Output: ``y``, shape of ``x``.
    """

    def __init__(self, activation: Any = "gelu_erf", backend: Optional[str] = None):
        super().__init__()
        if not (activation is None or isinstance(activation, (str, nn.Cell)) or callable(activation)):
            raise TypeError(f"'activation' must be None, a name, a Cell or a Primitive, but got {activation!r}.")
        code = activation_code(activation)
        self.code = -1 if code is None else code
        self.backend_choice = _backend.check_choice(backend) or _backend.get_backend()
        self.impl = _backend.resolve(self.backend_choice, "activation", supported=code is not None,
                                     unsupported_reason=f"the activation {activation!r} has no fused implementation",
                                     cpu_only=True)
        self.fused = self.impl != "composed"
        if code is not None:
            self.activation = ComposedActivation(code)
        elif isinstance(activation, str):
            self.activation = nn.get_activation(activation)  # raises KeyError for an unknown name
        else:
            self.activation = activation
        if self.fused:
            self.fwd = _primitives.activation_forward(self.impl)

    def construct(self, x):
        if not self.fused or x.dtype == mstype.bfloat16:
            if self.backend_choice == "fused" and x.dtype == mstype.bfloat16:
                raise TypeError("For 'activation', the fused backend supports float32 and float16, not bfloat16.")
            return self.activation(x)
        return self.fwd(x, self.code)

    def extend_repr(self) -> str:
        return f"activation_code={self.code}, impl={self.impl}"


def activation(x, act: Any = "gelu_erf", backend: Optional[str] = None):
    """Functional :class:`Activation` (PYNATIVE)."""
    return Activation(act, backend)(x)
