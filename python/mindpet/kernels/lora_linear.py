"""``lora_linear``: ``y = x W^T + b + s (x_d A^T) B^T`` through the selected backend.

:class:`LoraLinear` is the Cell a layer holds (GRAPH- and PYNATIVE-safe); :func:`lora_linear` is the
functional form for PYNATIVE code and tests. Contract: ``ops/CONTRACTS.md`` section 1.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
from mindspore import Parameter, Tensor, ops
from mindspore.common import dtype as mstype

from mindpet._mindspore import constexpr

from mindpet.kernels import _primitives
from mindpet.kernels.composed import lora_linear_composed
from mindpet.kernels.fused_op import FusedOp

__all__ = ["LoraLinear", "lora_linear"]


class LoraLinear(FusedOp):
    r"""``y = x W^T + b + s \cdot (x_d A^T) B^T``, ``x_d = x * mask``, as one fused op when available.

    Args:
        scale: ``s = lora_alpha / lora_rank``.
        has_bias: whether ``bias`` is added (``construct`` then takes a bias tensor, else None).
        backend: ``'auto'``, ``'fused'``, ``'composed'`` or None (global choice); see
            :mod:`mindpet.kernels.backend`.
        dtype: the dtype of the calls when known at construction (a layer's compute dtype): one without a
            fused kernel (bfloat16) selects composed under ``'auto'`` and raises under ``'fused'``. float32 or
            float16 with the fused backend: the graph holds the kernel call alone (checks at compile time; about
            1 MiB less of MindSpore's compiled-graph memory per instance), and a call in another dtype is a
            TypeError; without a dtype, such a call runs composed under ``'auto'``.
        transpose_b: the weight's layout: True ``[N, K]`` (``x W^T``, the fused kernels' layout), False
            ``[K, N]`` (``x W``, computed as laid out, never through a transposed copy): no fused kernel, so
            composed under ``'auto'`` and ``FusedBackendUnavailable`` under ``'fused'``.

    Inputs: ``x [*, K]``, ``weight [N, K]`` (``[K, N]`` with ``transpose_b=False``), ``bias [N]`` or None,
    ``lora_a [R, K]``, ``lora_b [N, R]``, ``mask [*, K]`` or None, ``base_frozen`` (Python bool, default False). One
    dtype for all (float32/float16 fused; bfloat16 runs composed under ``auto``). Output: ``y [*, N]``.

    The caller owns the dropout: it draws ``mask`` (0 or ``1/(1-p)``, e.g. its ``ops.Dropout`` applied to
    ones, so its seeds and ``shard`` strategy apply) and passes it; None means no dropout. Or, CPU kernel only,
    it passes ``dropout_key`` (int64 ``[3]``, :class:`~mindpet.kernels.DropoutKey`,
    :func:`~mindpet.kernels.dropout_key`) instead of ``mask``: the kernel then generates ``dropout_mask``'s mask of that key in the forward and again in
    the backward, so no ``[*, K]`` mask tensor exists (the result equals passing that mask).
    ``base_frozen=True`` is the caller's statement that no gradient of ``weight`` and ``bias`` is
    wanted: the fused backward then returns zeros for them instead of computing ``dy^T x`` and
    ``sum_M dy``. Inside a compiled graph pass False: GRAPH mode drops unused base gradients by itself,
    and a constant True would outlive a later unfreezing of the base.
    """

    op_name = "lora_linear"

    def __init__(self, scale: float, has_bias: bool = True, backend: Optional[str] = None, dtype: Any = None,
                 transpose_b: bool = True):
        super().__init__()
        self.scale = float(scale)
        self.has_bias = bool(has_bias)
        self.transpose_b = bool(transpose_b)
        self.matmul = ops.MatMul(transpose_b=self.transpose_b)
        self.select_backend(backend, supported=self.transpose_b, dtype=dtype, unsupported_reason=(
            "the fused lora_linear kernels take the weight as [out, in] (transpose_b=True), and this weight is "
            "[in, out] (transpose_b=False)"))
        if self.fused:
            self.fwd = _primitives.lora_linear_forward(self.impl, True)
            self.fwd_frozen_base = _primitives.lora_linear_forward(self.impl, False)
        # fused whatever the call: the construction dtype is float32/float16 (a layer casts its input to it)
        self.dtype_fused = bool(self.fused and dtype in (mstype.float32, mstype.float16))
        # 1-element stand-ins for an absent bias / mask (constants, one per dtype)
        self._absent32 = Tensor(np.zeros(1, np.float32))
        self._absent16 = Tensor(np.zeros(1, np.float16))

    def construct(self, x, weight, bias, lora_a, lora_b, mask=None, base_frozen=False, dropout_key=None):
        if self.dtype_fused:  # decided at construction: the graph holds the kernel call only
            return self._fused(x, weight, bias, lora_a, lora_b, mask, base_frozen, dropout_key)
        x_shape = x.shape
        x2d = x.reshape((-1, x_shape[-1]))
        if mask is not None:
            mask = mask.reshape((-1, x_shape[-1]))
        if not self.runs_fused(x.dtype):
            if dropout_key is not None:
                raise ValueError(f"For 'lora_linear', 'dropout_key' needs the fused CPU kernel, but this call runs "
                                 f"{self.impl if self.fused else 'composed'} for {x.dtype}; pass 'mask' instead.")
            y = lora_linear_composed(x2d, weight, bias, lora_a, lora_b, self.scale, mask, matmul=self.matmul)
        else:
            if weight.dtype != x.dtype or lora_a.dtype != x.dtype or lora_b.dtype != x.dtype:
                raise TypeError("For 'lora_linear', x, weight, lora_a, lora_b (and bias, mask) must share one dtype.")
            dummy = self._absent16 if x.dtype == mstype.float16 else self._absent32
            bias_in = bias if self.has_bias else dummy
            mask_in, has_mask = mask_input(mask, dropout_key, dummy, self.impl)
            has_bias = 1 if self.has_bias else 0
            if base_frozen:
                y, _ = self.fwd_frozen_base(x2d, weight, bias_in, lora_a, lora_b, mask_in, self.scale, has_bias,
                                            has_mask)
            else:
                y, _ = self.fwd(x2d, weight, bias_in, lora_a, lora_b, mask_in, self.scale, has_bias, has_mask)
        out_channels = weight.shape[0] if self.transpose_b else weight.shape[1]
        return y.reshape(x_shape[:-1] + (out_channels,))

    def _fused(self, x, weight, bias, lora_a, lora_b, mask, base_frozen, dropout_key):
        """The fused kernel call, its checks and shapes decided at compile time (:func:`_fused_plan`)."""
        rows, out_shape, half = _fused_plan(x.shape, x.dtype, weight.shape, weight.dtype, lora_a.dtype, lora_b.dtype,
                                            self.transpose_b)
        x2d = x.reshape(rows)
        dummy = self._absent16 if half else self._absent32
        bias_in = bias if self.has_bias else dummy
        mask_in, has_mask = mask_input(None if mask is None else mask.reshape(rows), dropout_key, dummy, self.impl)
        has_bias = 1 if self.has_bias else 0
        if base_frozen:
            y, _ = self.fwd_frozen_base(x2d, weight, bias_in, lora_a, lora_b, mask_in, self.scale, has_bias, has_mask)
        else:
            y, _ = self.fwd(x2d, weight, bias_in, lora_a, lora_b, mask_in, self.scale, has_bias, has_mask)
        return y.reshape(out_shape)

    def extend_repr(self) -> str:
        layout = "" if self.transpose_b else ", transpose_b=False"
        return f"scale={self.scale}, has_bias={self.has_bias}{layout}, impl={self.impl}"


def mask_input(mask, dropout_key, dummy, impl, op_name="lora_linear"):
    """The fused kernel's mask input and ``has_mask`` mode (``ops/CONTRACTS.md`` 1, *Mask modes*): ``(dummy, 0)``
    without dropout, ``(mask, 1)``, or ``(dropout_key, 2)`` (CPU kernel only). Shared with ``quant_lora_linear``."""
    if dropout_key is not None:
        if mask is not None:
            raise ValueError(f"For '{op_name}', pass either 'mask' or 'dropout_key', not both.")
        if impl != "cpu":
            raise ValueError(f"For '{op_name}', 'dropout_key' needs the CPU kernel, but the op runs {impl!r}; "
                             f"pass 'mask' instead.")
        return dropout_key, 2
    if mask is None:
        return dummy, 0
    return mask, 1


@constexpr(check=False)
def _fused_plan(x_shape, x_dtype, w_shape, w_dtype, a_dtype, b_dtype, transpose_b):
    """Compile-time checks and constant shapes of a fused call: ``(rows, out_shape, half)`` (x as ``[M, K]``,
    y as ``[*, N]``, whether x is float16). As plain code in ``construct`` the branches cost MindSpore
    compiled-graph memory per layer instance."""
    if x_dtype not in (mstype.float32, mstype.float16):
        raise TypeError(f"For 'lora_linear', the op was built with a float32/float16 'dtype' for the fused kernel, "
                        f"but got an input of {x_dtype}; build it with dtype=None to run other dtypes composed.")
    if w_dtype != x_dtype or a_dtype != x_dtype or b_dtype != x_dtype:
        raise TypeError("For 'lora_linear', x, weight, lora_a, lora_b (and bias, mask) must share one dtype.")
    out_channels = w_shape[0] if transpose_b else w_shape[1]
    return (-1, x_shape[-1]), tuple(x_shape[:-1]) + (out_channels,), x_dtype == mstype.float16


def _base_frozen(weight, bias) -> bool:
    """The base gradients (dW, db) may be skipped: the weight is a frozen Parameter and the bias is
    absent or a frozen Parameter (a plain Tensor counts as possibly needing a gradient)."""
    def frozen(t):
        return isinstance(t, Parameter) and not t.requires_grad
    return frozen(weight) and (bias is None or frozen(bias))


def lora_linear(x, weight, bias, lora_a, lora_b, scale: float, dropout_mask=None, backend: Optional[str] = None,
                dropout_key=None):
    r"""Functional ``lora_linear`` (PYNATIVE): ``x W^T + b + s (x_d A^T) B^T``, ``x_d = x * dropout_mask``.

    Shapes: x ``[*, K]``, weight ``[N, K]``, bias ``[N]`` or None, lora_a ``[R, K]``, lora_b ``[N, R]``,
    dropout_mask like x or None; returns ``[*, N]``. ``dropout_key`` (CPU kernel, instead of ``dropout_mask``):
    the int64 ``[3]`` key of :func:`~mindpet.kernels.dropout_key`, whose mask the kernel generates. Inside a
    GRAPH-mode ``construct`` hold a :class:`LoraLinear` instead.
    """
    op = LoraLinear(float(scale), has_bias=bias is not None, backend=backend)
    return op(x, weight, bias, lora_a, lora_b, dropout_mask, _base_frozen(weight, bias), dropout_key)
