"""``lora_linear``: ``y = x W^T + b + s (x_d A^T) B^T`` through the selected backend.

:class:`LoraLinear` is the Cell a layer holds (GRAPH- and PYNATIVE-safe); :func:`lora_linear` is the
functional form for PYNATIVE code and tests. Contract: ``ops/CONTRACTS.md`` section 1.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, ops
from mindspore.common import dtype as mstype

from mindpet._mindspore import graph_seeds
from mindpet.kernels import _primitives
from mindpet.kernels.composed import lora_linear_composed
from mindpet.kernels.fused_op import FusedOp

__all__ = ["LoraLinear", "lora_linear"]


class LoraLinear(FusedOp):
    r"""``y = x W^T + b + s \cdot (x_d A^T) B^T``, ``x_d = x * mask``, as one fused op when available.

    Args:
        scale: ``s = lora_alpha / lora_rank``.
        has_bias: whether ``bias`` is added (``construct`` then takes a bias tensor, else None).
        dropout: LoRA dropout probability p in [0, 1); in training mode (``set_train()``) a mask
            (0 or 1/(1-p), the shape of x) is drawn and x_d = x * mask.
        backend: ``'auto'``, ``'fused'``, ``'composed'`` or None (global choice); see
            :mod:`mindpet.kernels.backend`.
        base_frozen: optional callable telling whether the base weight is frozen (e.g.
            ``lambda: not layer.weight.requires_grad``); PYNATIVE uses it to skip computing the base
            gradients (GRAPH mode prunes them by itself). Without it, PYNATIVE checks whether the
            ``weight`` argument is a Parameter with ``requires_grad=False``.
        dtype: the dtype of the calls when known at construction (a layer's compute dtype): one without a
            fused kernel (bfloat16) selects composed under ``'auto'`` and raises under ``'fused'``.

    Inputs: ``x [*, K]``, ``weight [N, K]``, ``bias [N]`` or None, ``lora_a [R, K]``,
    ``lora_b [N, R]``, optional ``mask [*, K]`` (overrides the drawn mask). One dtype for all
    (float32/float16 fused; bfloat16 runs composed under ``auto``). Output: ``y [*, N]``.
    """

    op_name = "lora_linear"

    def __init__(self, scale: float, has_bias: bool = True, dropout: float = 0.0, backend: Optional[str] = None,
                 base_frozen: Optional[Callable[[], bool]] = None, dtype: Any = None):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"'dropout' must be in [0, 1), but got {dropout}.")
        self.scale = float(scale)
        self.has_bias = bool(has_bias)
        self.dropout_p = float(dropout)
        self.select_backend(backend, dtype=dtype)
        if self.fused:
            self.fwd = _primitives.lora_linear_forward(self.impl, True)
            self.fwd_frozen_base = _primitives.lora_linear_forward(self.impl, False)
        seed0, seed1 = graph_seeds("dropout")
        self.dropout = ops.Dropout(1.0 - self.dropout_p, seed0, seed1)
        self.ones_like = ops.OnesLike()
        # 1-element stand-ins for an absent bias / mask (constants, one per dtype)
        self._absent32 = Tensor(np.zeros(1, np.float32))
        self._absent16 = Tensor(np.zeros(1, np.float16))
        self._base_frozen = base_frozen
        self._skip_base_grads = False  # True only during a PYNATIVE call with a frozen base

    def __call__(self, *args, **kwargs):
        if not self.fused or ms.get_context("mode") != ms.PYNATIVE_MODE:
            return super().__call__(*args, **kwargs)
        if self._base_frozen is not None:
            frozen = bool(self._base_frozen())
        else:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            frozen = _base_frozen(weight, bias)
        self._skip_base_grads = frozen
        try:
            return super().__call__(*args, **kwargs)
        finally:
            self._skip_base_grads = False

    def construct(self, x, weight, bias, lora_a, lora_b, mask=None):
        x_shape = x.shape
        x2d = x.reshape((-1, x_shape[-1]))
        if mask is not None:
            mask = mask.reshape((-1, x_shape[-1]))
        elif self.training and self.dropout_p > 0.0:
            mask, _ = self.dropout(self.ones_like(x2d))
        if not self.runs_fused(x.dtype):
            y = lora_linear_composed(x2d, weight, bias, lora_a, lora_b, self.scale, mask)
        else:
            if weight.dtype != x.dtype or lora_a.dtype != x.dtype or lora_b.dtype != x.dtype:
                raise TypeError("For 'lora_linear', x, weight, lora_a, lora_b (and bias, mask) must share one dtype.")
            dummy = self._absent16 if x.dtype == mstype.float16 else self._absent32
            bias_in = bias if self.has_bias else dummy
            mask_in = dummy if mask is None else mask
            has_mask = 0 if mask is None else 1
            has_bias = 1 if self.has_bias else 0
            if self._skip_base_grads:
                y, _ = self.fwd_frozen_base(x2d, weight, bias_in, lora_a, lora_b, mask_in, self.scale, has_bias,
                                            has_mask)
            else:
                y, _ = self.fwd(x2d, weight, bias_in, lora_a, lora_b, mask_in, self.scale, has_bias, has_mask)
        return y.reshape(x_shape[:-1] + (weight.shape[0],))

    def extend_repr(self) -> str:
        return f"scale={self.scale}, has_bias={self.has_bias}, dropout={self.dropout_p}, impl={self.impl}"


def _base_frozen(weight, bias) -> bool:
    """The base gradients (dW, db) may be skipped: the weight is a frozen Parameter and the bias is
    absent or a frozen Parameter (a plain Tensor counts as possibly needing a gradient)."""
    def frozen(t):
        return isinstance(t, Parameter) and not t.requires_grad
    return frozen(weight) and (bias is None or frozen(bias))


def lora_linear(x, weight, bias, lora_a, lora_b, scale: float, dropout_mask=None, backend: Optional[str] = None):
    r"""Functional ``lora_linear`` (PYNATIVE): ``x W^T + b + s (x_d A^T) B^T``, ``x_d = x * dropout_mask``.

    Shapes: x ``[*, K]``, weight ``[N, K]``, bias ``[N]`` or None, lora_a ``[R, K]``, lora_b ``[N, R]``,
    dropout_mask like x or None; returns ``[*, N]``. Inside a GRAPH-mode ``construct`` hold a
    :class:`LoraLinear` instead.
    """
    return LoraLinear(float(scale), has_bias=bias is not None, backend=backend)(x, weight, bias, lora_a, lora_b,
                                                                                dropout_mask)
