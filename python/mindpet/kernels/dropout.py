r"""``dropout_mask``: a dropout mask from a counter hash of ``(seed, offset + i)`` (``ops/CONTRACTS.md`` 10).

.. math::
    \mathrm{mask}_i = \begin{cases} 1/(1-p) & \mathrm{bits}(\mathrm{seed}, \mathrm{offset} + i) \ge
    \lfloor p\,2^{24} \rfloor \\ 0 & \text{otherwise} \end{cases}, \qquad i < N = \mathrm{numel}(x)

CPU kernel only, forward only (the mask has no gradient). :class:`DropoutMask` is the Cell a layer holds: it
takes ``offset`` from MindSpore's default generator (``mindspore.common.generator``), whose state lives in
Parameters, so every call site of a graph, also each inlined copy of one shared (``lazy_inline``) block graph,
gets its own ``offset``, and the generator advances by ``N`` per call: the counter ranges of successive calls
never overlap. The seed is the Cell's own constant (``stream``): the generator's seed is not used, because in
MindSpore 2.10 a compiled graph reads it from a Parameter holding a random per-process value that
``mindspore.manual_seed`` does not change (PYNATIVE reads the seeded state instead). :func:`dropout_mask` is
the functional form with an explicit seed and offset (PYNATIVE, tests).

The fused LoRA ops also take the mask as its *dropout key* ``(seed, offset, bits of float32 p)`` (int64 ``[3]``,
``has_mask = 2``, ``ops/CONTRACTS.md`` 1) and generate ``dropout_mask``'s values where they use them, so no mask
tensor exists: :class:`DropoutKey` draws the key as :class:`DropoutMask` draws the mask, :func:`dropout_key`
builds one from explicit values.
"""
from __future__ import annotations

import secrets
from typing import Optional, Tuple, Union

import numpy as np
from mindspore import Tensor, ops
from mindspore.common import dtype as mstype

from mindpet._mindspore import constexpr, default_generator, generator_offset
from mindpet.kernels import _primitives
from mindpet.kernels.fused_op import FusedOp

__all__ = ["DropoutMask", "DropoutKey", "dropout_mask", "dropout_key", "generator_state"]

_INT64_MIN, _INT64_MAX = -2 ** 63, 2 ** 63 - 1


def _check_p(p, name: str = "p") -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"For 'dropout_mask', '{name}' must be a float, but got {type(p).__name__}.")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"For 'dropout_mask', '{name}' must be in [0, 1), but got {p}.")
    return float(p)


def _as_int64(value, name: str) -> Tensor:
    """An int64 scalar Tensor from a Python int or a 1-element int64 Tensor."""
    if isinstance(value, Tensor):
        if value.dtype != mstype.int64 or value.size != 1:
            raise TypeError(f"For 'dropout_mask', '{name}' must be an int or an int64 Tensor of 1 element, but got "
                            f"a {value.dtype} Tensor of shape {value.shape}.")
        return value.reshape(())
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"For 'dropout_mask', '{name}' must be an int or an int64 Tensor, but got "
                        f"{type(value).__name__}.")
    if not _INT64_MIN <= int(value) <= _INT64_MAX:
        raise ValueError(f"For 'dropout_mask', '{name}' must fit in int64, but got {value}.")
    return Tensor(int(value), mstype.int64)


def _p_bits(p: float) -> int:
    """The bits of float32 ``p`` (the value the kernels' float32 ``p`` attribute holds) as an int."""
    return int(np.array([p], np.float32).view(np.uint32)[0])


def dropout_key(seed: Union[int, Tensor], offset: Union[int, Tensor], p: float) -> Tensor:
    """The dropout key ``[seed, offset, bits of float32 p]`` (int64 ``[3]``) of the mask ``dropout_mask(x, p, seed,
    offset)``, for a fused LoRA op's ``dropout_key`` input (PYNATIVE, tests); arguments as :func:`dropout_mask`."""
    p = _check_p(p)
    seed_t, offset_t = _as_int64(seed, "seed"), _as_int64(offset, "offset")
    return ops.stack((seed_t, offset_t, Tensor(_p_bits(p), mstype.int64)))


def generator_state() -> Tuple[int, int]:
    """``(seed, offset)`` of MindSpore's default generator, from its ``get_state()`` (two little-endian int64;
    the host copies of its Parameters are not kept up to date)."""
    seed, offset = np.frombuffer(default_generator().get_state().asnumpy().astype(np.uint8).tobytes(), "<i8")
    return int(seed), int(offset)


@constexpr
def _count(shape) -> Tensor:
    """numel of ``shape`` as an int64 Tensor: the generator's step (compile-time constant)."""
    return Tensor(int(np.prod(shape, dtype=np.int64)), mstype.int64)


class _GeneratorDraws(FusedOp):
    """What :class:`DropoutMask` and :class:`DropoutKey` share: ``p``, the ``stream`` (seed) and the counter
    ``offset - base`` of a call, ``offset`` drawn from MindSpore's default generator (advanced by ``numel(x)``)."""

    op_name = "dropout_mask"

    def __init__(self, p: float, stream: Optional[int] = None, backend: Optional[str] = None):
        super().__init__()
        self.p = _check_p(p)
        if stream is None:
            stream = secrets.randbits(62)
        if isinstance(stream, bool) or not isinstance(stream, int) or not 0 <= stream <= _INT64_MAX:
            raise ValueError(f"For 'dropout_mask', 'stream' must be an int in [0, 2^63), but got {stream!r}.")
        if backend == "composed":
            raise ValueError("For 'dropout_mask', there is no composed implementation: backend must be 'auto', "
                             "'fused' or None.")
        self.select_backend("fused" if backend in (None, "auto") else backend, cpu_only=True)
        self.stream_value = stream
        self.base_value = generator_state()[1]
        self.generator = default_generator()

    def extend_repr(self) -> str:
        return f"p={self.p}, impl={self.impl}"


class DropoutKey(_GeneratorDraws):
    r"""``key = [stream, offset - base, bits of float32 p]`` (int64 ``[3]``): the dropout key of the mask
    :class:`DropoutMask` would draw for ``x`` (same arguments, same generator step), for the fused LoRA ops'
    ``dropout_key`` input, which then generate the mask themselves and store none.

    Input: ``x [*]`` (its values are not read). Output: ``key`` int64 ``[3]``.
    """

    def __init__(self, p: float, stream: Optional[int] = None, backend: Optional[str] = None):
        super().__init__(p, stream, backend)
        # key = key_base + offset * offset_slot: one Mul and one Add per call
        self.key_base = Tensor(np.array([self.stream_value, -self.base_value, _p_bits(self.p)], np.int64))
        self.offset_slot = Tensor(np.array([0, 1, 0], np.int64))

    def construct(self, x):
        offset = generator_offset(self.generator, _count(x.shape))
        return self.key_base + offset * self.offset_slot


class DropoutMask(_GeneratorDraws):
    r"""``mask = dropout_mask(x, stream, offset - base, p)``, ``offset`` drawn from MindSpore's default generator,
    which then advances by ``numel(x)``.

    ``stream`` is the seed (a constant of the owner, e.g. from its graph seeds, so that ``mindspore.set_seed``
    decides the masks); ``base`` is the generator's offset when the Cell was built, so a model built again
    after the same ``mindspore.set_seed`` draws the same masks, also in the same process.

    Args:
        p: dropout probability in ``[0, 1)``.
        stream: int in ``[0, 2^63)``; None: a random one (as MindSpore's random ops when no seed is set).
        backend: ``'auto'``, ``'fused'`` or None: the CPU kernel is required (FusedBackendUnavailable where it
            cannot run; ``'composed'`` has no implementation and raises ValueError).

    Input: ``x [*]`` float32/float16 (its values are not read). Output: ``mask``, shape and dtype of ``x``.
    """

    def __init__(self, p: float, stream: Optional[int] = None, backend: Optional[str] = None):
        super().__init__(p, stream, backend)
        self.fwd = _primitives.dropout_mask_forward(self.impl)
        self.stream = Tensor(self.stream_value, mstype.int64)
        self.base = Tensor(self.base_value, mstype.int64)
        self.sub = ops.Sub()
        self.stop_gradient = ops.stop_gradient

    def construct(self, x):
        offset = generator_offset(self.generator, _count(x.shape))
        return self.fwd(self.stop_gradient(x), self.stream, self.sub(offset, self.base), self.p)


def dropout_mask(x: Tensor, p: float, seed: Union[int, Tensor], offset: Union[int, Tensor]) -> Tensor:
    """Functional ``dropout_mask`` (PYNATIVE, CPU kernel): the mask of ``x``'s shape and dtype for counters
    ``offset .. offset + numel(x) - 1`` under ``seed`` (ints in int64 range, or int64 Tensors of 1 element).

    Raises:
        TypeError: ``x`` not a float32/float16 Tensor; ``p`` not a float; ``seed``/``offset`` not an int or an
            int64 Tensor of 1 element.
        ValueError: ``p`` outside ``[0, 1)``; ``seed``/``offset`` outside int64.
        mindpet.kernels.FusedBackendUnavailable: the CPU kernel cannot run here.
    """
    if not isinstance(x, Tensor) or x.dtype not in (mstype.float32, mstype.float16):
        got = f"a {x.dtype} Tensor" if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"For 'dropout_mask', 'x' must be a float32 or float16 Tensor, but got {got}.")
    p = _check_p(p)
    seed_t, offset_t = _as_int64(seed, "seed"), _as_int64(offset, "offset")
    return DropoutMask(p).fwd(x, seed_t, offset_t, p)
