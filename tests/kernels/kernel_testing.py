"""Shared helpers of the kernel tests: run an op and its gradients, compare to a reference."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest
from mindspore import Tensor, nn, ops

import mindpet.kernels.backend as kbackend


def fused_available() -> bool:
    impl, _ = kbackend.fused_implementation("CPU")
    return impl == "cpu"


requires_fused = pytest.mark.skipif(not fused_available(), reason="mindpet CPU kernel library not built")


class _Weighted(nn.Cell):
    """``sum(op(*inputs) * cotangent)``: its gradients are the vector-Jacobian products."""

    def __init__(self, op: nn.Cell):
        super().__init__()
        self.op = op

    def construct(self, *args):
        inputs, cot = args[:-1], args[-1]
        return (self.op(*inputs) * cot).sum()


class _ValueAndGrads(nn.Cell):
    """Forward value and the gradient of every tensor input (GRAPH: compiled as one graph)."""

    def __init__(self, op: nn.Cell):
        super().__init__()
        self.op = op
        self.loss = _Weighted(op)
        self.grad = ops.GradOperation(get_all=True)

    def construct(self, *args):
        return self.op(*args[:-1]), self.grad(self.loss)(*args)


def value_and_grads(op: nn.Cell, inputs: Sequence[np.ndarray], cotangent: np.ndarray):
    """``(op(*inputs), [d sum(op * cot) / d input for each input])`` as numpy arrays."""
    tensors = [Tensor(a) for a in inputs] + [Tensor(cotangent)]
    value, grads = _ValueAndGrads(op)(*tensors)
    return value.asnumpy(), [g.asnumpy() for g in grads[:len(inputs)]]


def assert_close(actual: np.ndarray, expected: np.ndarray, rel: float, name: str) -> None:
    """|actual - expected| <= rel * max|expected| elementwise (a scale-aware tolerance)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.abs(expected).max()), 1e-6)
    err = float(np.abs(actual - expected).max())
    assert err <= rel * scale, f"{name}: max error {err:.3g} > {rel} * {scale:.3g}"


def min_parallel_macs() -> int:
    """Multiply-adds below which a CPU kernel call runs on one thread."""
    import ctypes  # pylint: disable=import-outside-toplevel
    from mindpet.kernels import _library  # pylint: disable=import-outside-toplevel
    fn = ctypes.CDLL(_library.load()).MindpetMinParallelMacs
    fn.restype = ctypes.c_int64
    return int(fn())


def call_aot(symbol: str, arrays) -> tuple:
    """Call the CPU kernel ``symbol(nparam, params, ndims, shapes, dtypes, stream, extra)`` on numpy
    arrays (inputs, trailing scalar attributes, then outputs, filled in place); return (code, arrays)."""
    import ctypes  # pylint: disable=import-outside-toplevel
    from mindpet.kernels import _library  # pylint: disable=import-outside-toplevel
    lib = ctypes.CDLL(_library.load())
    arrays = [np.ascontiguousarray(a) for a in arrays]
    n = len(arrays)
    params = (ctypes.c_void_p * n)(*[a.ctypes.data for a in arrays])
    ndims = (ctypes.c_int * n)(*[a.ndim for a in arrays])
    shape_bufs = [(ctypes.c_int64 * max(a.ndim, 1))(*a.shape) for a in arrays]
    shapes = (ctypes.POINTER(ctypes.c_int64) * n)(*[ctypes.cast(s, ctypes.POINTER(ctypes.c_int64))
                                                    for s in shape_bufs])
    dtypes = (ctypes.c_char_p * n)(*[str(a.dtype).encode() for a in arrays])
    fn = getattr(lib, symbol)
    fn.restype = ctypes.c_int
    return fn(n, params, ndims, shapes, dtypes, None, None), arrays


def kernel_calls(symbol: str) -> int:
    """How often the CPU entry point ``symbol`` has run in this process (call after a sync)."""
    import ctypes  # pylint: disable=import-outside-toplevel
    from mindpet.kernels import _library  # pylint: disable=import-outside-toplevel
    fn = ctypes.CDLL(_library.load()).MindpetKernelCalls
    fn.restype = ctypes.c_int64
    return int(fn(symbol.encode()))
