"""``layer_norm`` and ``rms_norm`` (each with an optional fused residual add) through the selected backend
(``ops/CONTRACTS.md`` 5 and 7). :class:`RMSNorm` (the LLaMA norm, parameter ``weight``) returns the sum too.

:class:`LayerNorm` is a drop-in for ``nn.LayerNorm((D,), epsilon=...)``: same parameters ``gamma`` and
``beta`` (so checkpoints and weight loaders keep working), normalisation over the last dim only, and
``construct(x, residual=None)`` computing ``LN(x + residual)`` in one op when a residual is given.
The fused kernel runs on CPU; GPU and Ascend run the composed MindSpore ``LayerNorm``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
from mindspore import Parameter, Tensor, ops
from mindspore.common import dtype as mstype
from mindspore.common.initializer import initializer

from mindpet.kernels import _primitives, backend as _backend
from mindpet.kernels.composed import layer_norm_composed, layer_norm_primitive, rms_norm_composed
from mindpet.kernels.fused_op import FusedOp, fused_for_dtype

__all__ = ["LayerNorm", "layer_norm", "RMSNorm", "rms_norm"]


def _normalized_size(normalized_shape: Union[int, Sequence[int]]) -> int:
    if isinstance(normalized_shape, bool):
        raise TypeError(f"'normalized_shape' must be an int or a 1-element tuple/list, but got {normalized_shape!r}.")
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    if not isinstance(normalized_shape, (tuple, list)):
        raise TypeError(f"'normalized_shape' must be an int or a 1-element tuple/list, but got "
                        f"{type(normalized_shape).__name__}.")
    if len(normalized_shape) != 1 or not isinstance(normalized_shape[0], int) or normalized_shape[0] < 1:
        raise ValueError(f"'normalized_shape' must be (D,) with D >= 1 (normalisation over the last dim), "
                         f"but got {normalized_shape!r}.")
    return int(normalized_shape[0])


def _check_epsilon(epsilon: float) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
        raise TypeError(f"'epsilon' must be a float, but got {type(epsilon).__name__}.")
    if not epsilon >= 0.0:
        raise ValueError(f"'epsilon' must be >= 0, but got {epsilon}.")
    return float(epsilon)


class LayerNorm(FusedOp):
    r"""``y = (s - mean) / sqrt(var + eps) * gamma + beta`` over the last dim, ``s = x + residual`` (or ``x``).

    Args:
        normalized_shape: ``(D,)`` (or ``D``), the size of the last dim.
        epsilon: added to the variance.
        gamma_init, beta_init, dtype: as ``nn.LayerNorm``.
        backend: ``'auto'``, ``'fused'``, ``'composed'`` or None (global choice).

    Parameters: ``gamma [D]``, ``beta [D]`` (the names of ``nn.LayerNorm``).
    Inputs: ``x [*, D]``, optional ``residual [*, D]`` (its gradient equals the gradient of ``x``).
    Output: ``y [*, D]`` in the dtype of ``x`` (gamma/beta are cast to it). float32/float16 fused,
    bfloat16 composed.
    """

    op_name = "layer_norm"

    def __init__(self, normalized_shape: Union[int, Sequence[int]], epsilon: float = 1e-7, gamma_init="ones",
                 beta_init="zeros", dtype=mstype.float32, backend: Optional[str] = None):
        super().__init__()
        self.hidden = _normalized_size(normalized_shape)
        self.normalized_shape = (self.hidden,)
        self.epsilon = _check_epsilon(epsilon)
        self.gamma = Parameter(initializer(gamma_init, self.normalized_shape, dtype=dtype), name="gamma")
        self.beta = Parameter(initializer(beta_init, self.normalized_shape, dtype=dtype), name="beta")
        self.select_backend(backend, cpu_only=True)
        self.layer_norm = layer_norm_primitive(self.epsilon)
        if self.fused:
            self.fwd = _primitives.layer_norm_forward(self.impl)
        self._absent32 = Tensor(np.zeros(1, np.float32))
        self._absent16 = Tensor(np.zeros(1, np.float16))

    def construct(self, x, residual=None):
        gamma = self.gamma
        beta = self.beta
        if gamma.dtype != x.dtype:
            gamma = ops.cast(gamma, x.dtype)
            beta = ops.cast(beta, x.dtype)
        if not self.runs_fused(x.dtype):
            return layer_norm_composed(x, gamma, beta, self.layer_norm, residual)
        x_shape = x.shape
        x2d = x.reshape((-1, self.hidden))
        if residual is None:
            r2d = self._absent16 if x.dtype == mstype.float16 else self._absent32
            y, _, _ = self.fwd(x2d, r2d, gamma, beta, self.epsilon, 0)
        else:
            if residual.dtype != x.dtype:
                raise TypeError("For 'layer_norm', x and residual must share one dtype.")
            y, _, _ = self.fwd(x2d, residual.reshape((-1, self.hidden)), gamma, beta, self.epsilon, 1)
        return y.reshape(x_shape)

    def extend_repr(self) -> str:
        return f"normalized_shape={self.normalized_shape}, epsilon={self.epsilon}, impl={self.impl}"


def layer_norm(x, gamma, beta, epsilon: float = 1e-7, residual=None, backend: Optional[str] = None):
    """Functional ``layer_norm`` (PYNATIVE): ``LN(x + residual)`` over the last dim with the given gamma, beta.

    Shapes: x ``[*, D]``, residual like x or None, gamma/beta ``[D]`` (dtype of x); returns ``[*, D]``.
    Inside a GRAPH-mode ``construct`` hold a :class:`LayerNorm` instead.
    """
    epsilon = _check_epsilon(epsilon)
    selection = _backend.select(backend, "layer_norm", cpu_only=True)
    if not fused_for_dtype(selection.fused, selection.choice, x.dtype, "layer_norm"):
        return layer_norm_composed(x, gamma, beta, layer_norm_primitive(epsilon), residual)
    d = x.shape[-1]
    fwd = _primitives.layer_norm_forward(selection.impl)
    r2d = ops.zeros((1,), x.dtype) if residual is None else residual.reshape((-1, d))
    y, _, _ = fwd(x.reshape((-1, d)), r2d, gamma, beta, epsilon, 0 if residual is None else 1)
    return y.reshape(x.shape)


class RMSNorm(FusedOp):
    r"""``y = s / sqrt(mean_D(s^2) + eps) * weight`` over the last dim, ``s = x + residual`` (or ``x``).

    The LLaMA-family norm. With a residual it returns ``(y, s)``: a pre-norm block's ``h = x + attn(..)``
    followed by ``norm(h)`` is one op, ``y, h = norm(attn(..), x)``. The fused op saves only a float32
    ``rstd`` per row; its backward reads ``s`` from the returned sum (or ``x``), which the caller keeps anyway.

    Args:
        hidden_size: ``D``, the size of the last dim.
        epsilon: added to the mean square.
        weight_init, dtype: initial value and dtype of ``weight``.
        backend: ``'auto'``, ``'fused'``, ``'composed'`` or None (global choice).

    Parameter: ``weight [D]`` (the name of the Hugging Face / GGUF checkpoints).
    Inputs: ``x [*, D]``, optional ``residual [*, D]`` (same dtype; its gradient is that of ``x``).
    Output: ``y [*, D]`` in the dtype of ``x``; with a residual ``(y, s)``. float32/float16 fused,
    bfloat16 composed; the fused kernel runs on CPU, GPU and Ascend run composed.
    """

    op_name = "rms_norm"

    def __init__(self, hidden_size: int, epsilon: float = 1e-6, weight_init="ones", dtype=mstype.float32,
                 backend: Optional[str] = None):
        super().__init__()
        if isinstance(hidden_size, bool) or not isinstance(hidden_size, int):
            raise TypeError(f"'hidden_size' must be an int, but got {type(hidden_size).__name__}.")
        if hidden_size < 1:
            raise ValueError(f"'hidden_size' must be >= 1, but got {hidden_size}.")
        self.hidden = hidden_size
        self.epsilon = _check_epsilon(epsilon)
        self.weight = Parameter(initializer(weight_init, (self.hidden,), dtype=dtype), name="weight")
        self.select_backend(backend, cpu_only=True)
        if self.fused:
            self.fwd = _primitives.rms_norm_forward(self.impl)
        self._absent32 = Tensor(np.zeros(1, np.float32))
        self._absent16 = Tensor(np.zeros(1, np.float16))

    def construct(self, x, residual=None):
        weight = self.weight
        if weight.dtype != x.dtype:
            weight = ops.cast(weight, x.dtype)
        if residual is not None and residual.dtype != x.dtype:
            raise TypeError("For 'rms_norm', x and residual must share one dtype.")
        if not self.runs_fused(x.dtype):
            return rms_norm_composed(x, weight, self.epsilon, residual)
        x_shape = x.shape
        x2d = x.reshape((-1, self.hidden))
        if residual is None:
            r2d = self._absent16 if x.dtype == mstype.float16 else self._absent32
            y, _, _ = self.fwd(x2d, r2d, weight, self.epsilon, 0)
            return y.reshape(x_shape)
        y, h, _ = self.fwd(x2d, residual.reshape((-1, self.hidden)), weight, self.epsilon, 1)
        return y.reshape(x_shape), h.reshape(x_shape)

    def extend_repr(self) -> str:
        return f"hidden_size={self.hidden}, epsilon={self.epsilon}, impl={self.impl}"


def rms_norm(x, weight, epsilon: float = 1e-6, residual=None, backend: Optional[str] = None):
    """Functional :class:`RMSNorm` (PYNATIVE) with the given ``weight [D]`` (dtype of x).

    Returns ``y``, or ``(y, x + residual)`` with a residual."""
    epsilon = _check_epsilon(epsilon)
    selection = _backend.select(backend, "rms_norm", cpu_only=True)
    if not fused_for_dtype(selection.fused, selection.choice, x.dtype, "rms_norm"):
        return rms_norm_composed(x, weight, epsilon, residual)
    d = x.shape[-1]
    fwd = _primitives.rms_norm_forward(selection.impl)
    if residual is None:
        y, _, _ = fwd(x.reshape((-1, d)), ops.zeros((1,), x.dtype), weight, epsilon, 0)
        return y.reshape(x.shape)
    y, h, _ = fwd(x.reshape((-1, d)), residual.reshape((-1, d)), weight, epsilon, 1)
    return y.reshape(x.shape), h.reshape(x.shape)
