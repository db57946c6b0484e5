"""The counter hash of ``ops/cpu/attention_dropout.h`` (``mix64``, ``mix32``) and the ``dropout_mask`` op
(``ops/CONTRACTS.md`` 10) written out in numpy, independently of the C++ kernels: the hash in uint64/uint32
arithmetic, the threshold and the kept value in float64."""
from __future__ import annotations

import numpy as np

U64, U32 = np.uint64, np.uint32
GOLDEN = U64(0x9E3779B97F4A7C15)


def mix64(z):
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


def mix32(x):
    x = x ^ (x >> U32(16))
    x = x * U32(0x7FEB352D)
    x = x ^ (x >> U32(15))
    x = x * U32(0x846CA68B)
    return x ^ (x >> U32(16))


def mask_reference(shape, p: float, seed: int, offset: int) -> np.ndarray:
    """float64 mask of ``shape``: ``1/(1-p)`` where ``bits(seed, offset + i) >= floor(p 2^24)``, else 0;
    ``p`` taken at its float32 value (the op's attribute), seed and offset as int64 (wrapping to uint64)."""
    n = int(np.prod(shape, dtype=np.int64))
    with np.errstate(over="ignore"):
        counter = U64(offset % 2 ** 64) + np.arange(n, dtype=U64)
        row = mix64(U64(seed % 2 ** 64) + ((counter >> U64(12)) + U64(1)) * GOLDEN)
        lo, hi = (row & U64(0xFFFFFFFF)).astype(U32), (row >> U64(32)).astype(U32)
        bits = mix32(lo ^ mix32((counter & U64(4095)).astype(U32) + hi)) >> U32(8)
    p32 = float(np.float32(p))
    keep = bits >= U32(int(np.floor(p32 * 2.0 ** 24)))
    return np.where(keep, 1.0 / (1.0 - p32), 0.0).reshape(shape)
