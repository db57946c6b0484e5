"""Elementwise ``activation`` through the selected backend (``ops/CONTRACTS.md`` 4): ``y = act(x)``.

:class:`Activation` is the Cell (GRAPH- and PYNATIVE-safe); :func:`activation` the functional form
(PYNATIVE). :class:`SwiGLU` is the gated ``silu(gate) * up`` of LLaMA MLPs (``ops/CONTRACTS.md`` 8).
Fused for every contract activation code (:mod:`mindpet.kernels.activations`), e.g.
``Activation('gelu_erf')`` for the exact GELU of BERT; other activations run composed under ``auto``
(and raise under ``fused``). The fused kernel runs on CPU; GPU and Ascend run composed.
"""
from __future__ import annotations

from typing import Any, Optional

from mindspore import nn

from mindpet.kernels import _primitives
from mindpet.kernels.composed import swiglu_composed
from mindpet.kernels.activations import ComposedActivation, activation_code
from mindpet.kernels.fused_op import FusedOp

__all__ = ["Activation", "activation", "SwiGLU", "swiglu"]


class Activation(FusedOp):
    r"""``y = act(x)`` elementwise as one fused op when available (backward ``dx = dy * act'(x)``).

    Args:
        activation: None, a name (``'gelu_erf'`` exact GELU, ``'gelu'`` tanh approximation, ``'relu'``,
            ``'sigmoid'``, ``'tanh'``, ``'silu'``, ``'identity'``), Cell or Primitive.
        backend: ``'auto'``, ``'fused'``, ``'composed'`` or None (global choice).

    Input: ``x`` of any shape (float32/float16 fused, bfloat16 composed). Output: ``y``, shape of ``x``.
    """

    op_name = "activation"

    def __init__(self, activation: Any = "gelu_erf", backend: Optional[str] = None):
        super().__init__()
        if not (activation is None or isinstance(activation, (str, nn.Cell)) or callable(activation)):
            raise TypeError(f"'activation' must be None, a name, a Cell or a Primitive, but got {activation!r}.")
        code = activation_code(activation)
        self.code = -1 if code is None else code
        self.select_backend(backend, supported=code is not None, cpu_only=True,
                            unsupported_reason=f"the activation {activation!r} has no fused implementation")
        if code is not None:
            self.activation = ComposedActivation(code)
        elif isinstance(activation, str):
            self.activation = nn.get_activation(activation)  # raises KeyError for an unknown name
        else:
            self.activation = activation
        if self.fused:
            self.fwd = _primitives.activation_forward(self.impl)

    def construct(self, x):
        if not self.runs_fused(x.dtype):
            return self.activation(x)
        return self.fwd(x, self.code)

    def extend_repr(self) -> str:
        return f"activation_code={self.code}, impl={self.impl}"


def activation(x, act: Any = "gelu_erf", backend: Optional[str] = None):
    """Functional :class:`Activation` (PYNATIVE)."""
    return Activation(act, backend)(x)


class SwiGLU(FusedOp):
    r"""``y = silu(gate) * up`` elementwise as one fused op when available (the LLaMA MLP's gate).

    The fused backward recomputes ``silu`` from ``gate`` (``dgate = dy up silu'(gate)``, ``dup = dy silu(gate)``):
    nothing but the two inputs is kept for it, where the composed form keeps ``sigmoid(gate)`` and
    ``silu(gate)`` too.

    Args:
        backend: ``'auto'``, ``'fused'``, ``'composed'`` or None (global choice).

    Inputs: ``gate``, ``up`` of one shape and dtype (float32/float16 fused, bfloat16 composed).
    Output: ``y``, their shape. The fused kernel runs on CPU; GPU and Ascend run composed.
    """

    op_name = "swiglu"

    def __init__(self, backend: Optional[str] = None):
        super().__init__()
        self.select_backend(backend, cpu_only=True)
        if self.fused:
            self.fwd = _primitives.swiglu_forward(self.impl)

    def construct(self, gate, up):
        if gate.shape != up.shape or gate.dtype != up.dtype:
            raise ValueError("For 'swiglu', gate and up must have one shape and dtype.")
        if not self.runs_fused(gate.dtype):
            return swiglu_composed(gate, up)
        return self.fwd(gate, up)


def swiglu(gate, up, backend: Optional[str] = None):
    """Functional :class:`SwiGLU` (PYNATIVE): ``silu(gate) * up``."""
    return SwiGLU(backend)(gate, up)
