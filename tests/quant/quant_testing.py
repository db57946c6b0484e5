"""Helpers of the quantised-layer tests: an independent float64 dequantiser (the layout's formula), toy models."""
from __future__ import annotations

import numpy as np
import pytest
from mindspore import Tensor, nn

from mindpet.kernels import backend as kbackend

FORMATS = ("int8", "nf4", "q4_0", "q4_1", "q8_0", "q5_0", "q5_1")
FUSED_OK = kbackend.fused_implementation("CPU")[0] == "cpu"
requires_fused = pytest.mark.skipif(not FUSED_OK, reason="mindpet CPU kernel library not built")
BACKENDS = ["composed", pytest.param("fused", marks=requires_fused)]
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0])
LUTS = {"nf4": NF4, "q4_0": np.arange(-8, 8, dtype=np.float64), "q4_1": np.arange(16, dtype=np.float64),
        "q5_0": np.arange(-16, 16, dtype=np.float64), "q5_1": np.arange(32, dtype=np.float64)}


def dequantize_f64(codes: np.ndarray, scales: np.ndarray, offsets, fmt: str) -> np.ndarray:
    """``W[n, k] = v(n, k) * scale[n, k // G] + offset[n, k // G]`` in float64, written from the layout alone."""
    if fmt in LUTS:
        five = fmt.startswith("q5")
        k = codes.shape[1] * 8 // 5 if five else codes.shape[1] * 2  # 5-bit rows: K / 2 + K / 8 bytes
        nibbles = codes[:, :k // 2]
        idx = np.empty((codes.shape[0], k), np.int64)
        idx[:, 0::2] = nibbles & 0xF
        idx[:, 1::2] = nibbles >> 4
        if five:  # the 5th bit of k: bit k % 8 of byte K / 2 + k // 8
            fifth = codes[:, k // 2:].astype(np.int64)
            idx += 16 * ((np.repeat(fifth, 8, axis=1) >> np.tile(np.arange(8), k // 8)) & 1)
        v = LUTS[fmt][idx]
    else:
        v = codes.astype(np.float64)
    k = v.shape[1]
    group = k // scales.shape[1]
    w = v * np.repeat(scales.astype(np.float64), group, axis=1)
    if offsets is not None:
        w = w + np.repeat(offsets.astype(np.float64), group, axis=1)
    return w


def layer_dequantized(layer) -> np.ndarray:
    """The float64 weight a QuantizedDense or a LoRADense on a quantised base stands for."""
    offsets = layer.weight_offsets.asnumpy() if getattr(layer, "weight_offsets", None) is not None else None
    return dequantize_f64(layer.weight_codes.asnumpy(), layer.weight_scales.asnumpy(), offsets,
                          layer.quantized_weight.format)


class ToyModel(nn.Cell):
    """in 64 -> 64 -> 4 with a LayerNorm: two Dense layers a pattern can select, and a non-Dense cell."""

    def __init__(self, d_in: int = 64, hidden: int = 64, d_out: int = 4):
        super().__init__()
        self.encoder = nn.Dense(d_in, hidden, activation="relu")
        self.norm = nn.LayerNorm((hidden,))
        self.head = nn.Dense(hidden, d_out)

    def construct(self, x):
        return self.head(self.norm(self.encoder(x)))


class Weighted(nn.Cell):
    """``sum(layer(x) * cot)``: its gradient is the layer's vector-Jacobian product with ``cot``."""

    def __init__(self, layer, cot):
        super().__init__()
        self.layer = layer
        self.cot = Tensor(cot)

    def construct(self, x):
        return (self.layer(x) * self.cot).sum()


class MSELossOf(nn.Cell):
    """``MSE(net(x), y)``, for a TrainOneStepCell."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.loss = nn.MSELoss()

    def construct(self, x, y):
        return self.loss(self.net(x), y)
