"""``adapter`` and ``low_rank_adapter`` through the selected backend (``ops/CONTRACTS.md`` 2 and 3).

:class:`Adapter` / :class:`LowRankAdapter` are the Cells a layer holds (GRAPH- and PYNATIVE-safe);
:func:`adapter` / :func:`low_rank_adapter` are functional forms for PYNATIVE code and tests.
The activation is fused when it has a contract code (:mod:`mindpet.kernels.activations`); any
other activation runs composed under ``auto`` (and raises under ``fused``).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from mindspore import nn

from mindpet.kernels import _primitives
from mindpet.kernels.activations import ACTIVATION_CODES, ComposedActivation, activation_code
from mindpet.kernels.composed import adapter_composed, low_rank_adapter_composed
from mindpet.kernels.fused_op import FusedOp

__all__ = ["Adapter", "LowRankAdapter", "adapter", "low_rank_adapter"]


def _setup(cell: FusedOp, activation: Any, backend: Optional[str], forward: Callable) -> None:
    """Resolve the activation code, the backend, the composed activation and (fused) the forward primitive
    (``forward(impl)``) of an adapter Cell."""
    code = activation_code(activation)
    cell.code = -1 if code is None else code
    name = repr(activation) if isinstance(activation, str) else type(activation).__name__
    cell.select_backend(backend, supported=code is not None, unsupported_reason=(
        f"the activation {name} has no fused implementation (fusable: {', '.join(ACTIVATION_CODES)})"))
    if code is not None:
        cell.activation = ComposedActivation(code)
    elif isinstance(activation, str):
        cell.activation = nn.get_activation(activation)
    else:
        cell.activation = activation
    if cell.fused:
        cell.fwd = forward(cell.impl)


class Adapter(FusedOp):
    r"""``y = h + act(h W_down^T + b_down) W_up^T + b_up`` as one fused op when available.

    Args:
        activation: None, a name (``'relu'``, ``'gelu'`` = tanh approximation, ...), Cell or Primitive.
        backend: ``'auto'``, ``'fused'``, ``'composed'`` or None (global choice).

    Inputs: ``h [*, D]``, ``w_down [B, D]``, ``b_down [B]``, ``w_up [D, B]``, ``b_up [D]`` (one dtype).
    Output: ``y [*, D]``.
    """

    op_name = "adapter"

    def __init__(self, activation: Any = "gelu", backend: Optional[str] = None):
        super().__init__()
        _setup(self, activation, backend, _primitives.adapter_forward)

    def construct(self, h, w_down, b_down, w_up, b_up):
        h_shape = h.shape
        h2d = h.reshape((-1, h_shape[-1]))
        if not self.runs_fused(h.dtype):
            y = adapter_composed(h2d, w_down, b_down, w_up, b_up, self.activation)
        else:
            if w_down.dtype != h.dtype or w_up.dtype != h.dtype:
                raise TypeError("For 'adapter', h and the adapter parameters must share one dtype.")
            y, _ = self.fwd(h2d, w_down, b_down, w_up, b_up, self.code)
        return y.reshape(h_shape)

    def extend_repr(self) -> str:
        return f"activation_code={self.code}, impl={self.impl}"


class LowRankAdapter(FusedOp):
    r"""``y = h + act(h L_dl L_dr + b_down) L_ul L_ur + b_up`` as one fused op when available.

    Inputs: ``h [*, D]``, ``down_left [D, R]``, ``down_right [R, B]``, ``b_down [B]``,
    ``up_left [B, R]``, ``up_right [R, D]``, ``b_up [D]`` (one dtype). Output: ``y [*, D]``.
    Args as :class:`Adapter`.
    """

    op_name = "low_rank_adapter"

    def __init__(self, activation: Any = "gelu", backend: Optional[str] = None):
        super().__init__()
        _setup(self, activation, backend, _primitives.low_rank_adapter_forward)

    def construct(self, h, down_left, down_right, b_down, up_left, up_right, b_up):
        h_shape = h.shape
        h2d = h.reshape((-1, h_shape[-1]))
        if not self.runs_fused(h.dtype):
            y = low_rank_adapter_composed(h2d, down_left, down_right, b_down, up_left, up_right, b_up,
                                          self.activation)
        else:
            if down_left.dtype != h.dtype or up_right.dtype != h.dtype:
                raise TypeError("For 'low_rank_adapter', h and the adapter parameters must share one dtype.")
            y, _, _, _ = self.fwd(h2d, down_left, down_right, b_down, up_left, up_right, b_up, self.code)
        return y.reshape(h_shape)

    def extend_repr(self) -> str:
        return f"activation_code={self.code}, impl={self.impl}"


def adapter(h, w_down, b_down, w_up, b_up, activation: Any = "gelu", backend: Optional[str] = None):
    """Functional :class:`Adapter` (PYNATIVE)."""
    return Adapter(activation, backend)(h, w_down, b_down, w_up, b_up)


def low_rank_adapter(h, down_left, down_right, b_down, up_left, up_right, b_up, activation: Any = "gelu",
                     backend: Optional[str] = None):
    """Functional :class:`LowRankAdapter` (PYNATIVE)."""
    return LowRankAdapter(activation, backend)(h, down_left, down_right, b_down, up_left, up_right, b_up)
