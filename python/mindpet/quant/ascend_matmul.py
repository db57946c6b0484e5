"""The Ascend path of a layer on a quantised base: ``x deq(W)^T`` by ``WeightQuantBatchMatmul``, read in graph.

NOT RUN ON AN NPU (no Ascend device was available): the argument mapping and the backward run on CPU in the
tests, against the documented operator formula emulated with MindSpore ops and a float64 numpy dequantiser.

A layer keeps its weight in the unified layout (``ops/CONTRACTS.md`` section 6: one checkpoint format on every
device); :class:`AscendQuantMatmul` maps it on the fly to the operator's inputs, with ``transpose_weight=True``
so the ``[N, K]`` codes are used where they lie (``mindpet.quant.ascend`` has the facts about the operator):

- 8 bits (``int8`` per channel, ``q8_0``): the int8 codes as they are; the scales ``[N, K / G]`` transposed to
  ``(K / G, N)`` (per-channel ``(N,)`` when ``G == K``). No offset.
- 4 bits (``q4_0``, ``q4_1``): the nibbles unpacked to int8 ``[N, K]`` codes ``c - 8`` per call (1 byte per
  weight, never a float copy) and run through the operator's int8 per-group mode (Atlas A2/A3), which needs no
  assumption about int4 packing. ``q4_0``: scale ``d``. ``q4_1``: :func:`mindpet.quant.ascend.offset_affine`
  (offset ``8 + m / d`` rounded to float16; a group with ``d == 0`` as codes 0, offset 1, scale ``m``).
- 5 bits (``q5_0``, ``q5_1``): the low nibbles and the 5th bits unpacked to int8 ``[N, K]`` codes ``c - 16``,
  the same int8 per-group mode; ``q5_1``'s offset ``16 + m / d`` as q4_1's.
- ``nf4``: no mapping (a lookup table is not affine): :func:`weight_quant_matmul` returns None and the layer
  runs composed (dequantise in graph, then MatMul).

The operator takes float16 ``x`` and scales, so ``x`` is cast to float16 and the result back. The backward
(the operator registers none that the package relies on) is ``dx = dy deq(W)``, with ``deq(W)`` built from the
same mapped arguments in float16 (one layer's weight at a time, freed after the call); the quantised tensors get
zero gradients (never trainable).
"""
from __future__ import annotations

from typing import Optional

import mindspore as ms
from mindspore import nn, ops
from mindspore.common import dtype as mstype

from mindpet._eager import GradSafeCell
from mindpet.quant.ascend import CODE_CENTER, MAPPABLE_FORMATS, offset_affine
from mindpet.quant.formats import format_spec

__all__ = ["AscendQuantMatmul", "weight_quant_matmul"]



def weight_quant_matmul(format: str, group_size: int,  # pylint: disable=redefined-builtin
                        matmul: Optional[nn.Cell] = None) -> Optional["AscendQuantMatmul"]:
    """The Cell computing ``x deq(W)^T`` for a base of ``format`` on Ascend, or None for ``nf4`` (runs composed)."""
    return AscendQuantMatmul(format, group_size, matmul) if format in MAPPABLE_FORMATS else None


class AscendQuantMatmul(GradSafeCell):
    r"""``y [M, N] = x [M, K] deq(W)^T`` by ``WeightQuantBatchMatmul`` from the unified layout (module docstring).

    Args:
        format: one of :data:`~mindpet.quant.ascend.MAPPABLE_FORMATS` (not ``'nf4'``).
        group_size: the format's ``G`` (``K`` for int8 per channel).
        matmul: the operator to call as ``(x, weight, antiquant_scale, antiquant_offset, None, None, None)``;
            None builds ``WeightQuantBatchMatmul`` (Ascend only). The tests pass an emulation to run on CPU.

    Inputs: ``x [M, K]``, ``codes``, ``scales``, ``offsets`` (a 1-element stand-in when the format has none).
    """

    def __init__(self, format: str, group_size: int,  # pylint: disable=redefined-builtin
                 matmul: Optional[nn.Cell] = None):
        super().__init__()
        if format not in MAPPABLE_FORMATS:
            raise ValueError(f"For 'AscendQuantMatmul', 'format' must be one of {MAPPABLE_FORMATS}, but got "
                             f"{format!r}.")
        self.format = format
        self.bits = format_spec(format).bits
        self.has_offsets = format_spec(format).has_offsets
        self.group_size = int(group_size)
        if matmul is None:
            from mindspore.ops.auto_generate import WeightQuantBatchMatmul  # pylint: disable=import-outside-toplevel
            self.per_group_matmul = WeightQuantBatchMatmul(False, True, self.group_size)
            self.per_channel_matmul = WeightQuantBatchMatmul(False, True, 0)
        else:
            self.per_group_matmul = self.per_channel_matmul = matmul
        self.low_nibble = ms.Tensor(15, mstype.uint8)
        self.shift = ms.Tensor([4], mstype.uint8)
        self.right_shift = ops.RightShift()

    def antiquant_args(self, codes, scales, offsets):
        """``(weight int8 [N, K], antiquant_scale, antiquant_offset or None)`` float16, scales ``(K / G, N)`` or
        ``(N,)`` per channel: ``deq(W)^T = (weight^T + offset) * scale`` repeated over each group of k."""
        n, groups = scales.shape
        if self.bits == 8:
            weight = codes
        else:
            half = codes.shape[1] if self.bits == 4 else codes.shape[1] // 5 * 4  # bytes of nibbles: K / 2
            low = codes[:, :half]
            nibbles = ops.stack((ops.bitwise_and(low, self.low_nibble), self.right_shift(low, self.shift)), -1)
            values = ops.cast(nibbles.reshape((n, -1)), mstype.int8)
            if self.bits == 5:  # + 16 * bit k % 8 of byte K / 2 + k // 8
                high = ops.cast(codes[:, half:], mstype.int32)
                fifth = ops.stack([(high // (1 << b)) % 2 for b in range(8)], -1).reshape((n, -1))
                values = values + ops.cast(fifth * 16, mstype.int8)
            weight = values - CODE_CENTER[self.bits]  # [N, K]: codes c - 8 / c - 16
        scale, offset = scales, None
        if self.has_offsets:
            scale, offset, keep = offset_affine(ops.cast(scales, mstype.float32), ops.cast(offsets, mstype.float32),
                                                ops.where, CODE_CENTER[self.bits])
            scale, offset = ops.cast(scale, mstype.float16), ops.cast(offset, mstype.float16)
            weight = (weight.reshape((n, groups, -1)) * ops.cast(keep, mstype.int8).reshape((n, groups, 1))
                      ).reshape((n, -1))
        if groups == 1:
            return weight, scale.reshape((n,)), None if offset is None else offset.reshape((n,))
        return weight, scale.T, None if offset is None else offset.T

    def dequantized(self, codes, scales, offsets):
        """``deq(W) [N, K]`` float16 from :meth:`antiquant_args` (the backward's weight)."""
        weight, scale, offset = self.antiquant_args(codes, scales, offsets)
        n, k = weight.shape
        groups = 1 if scale.ndim == 1 else scale.shape[0]
        w = ops.cast(weight, mstype.float16).reshape((n, groups, k // groups))
        if offset is not None:
            w = w + offset.reshape((groups, n)).T.reshape((n, groups, 1))
        return (w * scale.reshape((groups, n)).T.reshape((n, groups, 1))).reshape((n, k))

    def construct(self, x, codes, scales, offsets):
        weight, scale, offset = self.antiquant_args(codes, scales, offsets)
        matmul = self.per_channel_matmul if scale.ndim == 1 else self.per_group_matmul
        y = matmul(ops.cast(x, mstype.float16), weight, scale, offset, None, None, None)
        return ops.cast(y, x.dtype)

    def bprop(self, x, codes, scales, offsets, out, dout):  # pylint: disable=unused-argument
        dx = ops.matmul(ops.cast(dout, mstype.float16), self.dequantized(codes, scales, offsets))
        return ops.cast(dx, x.dtype), ops.zeros_like(codes), ops.zeros_like(scales), ops.zeros_like(offsets)
