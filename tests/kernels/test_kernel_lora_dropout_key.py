"""lora_linear with a dropout key (``has_mask = 2``, ``ops/CONTRACTS.md`` 1): the kernel generates
``dropout_mask``'s mask of ``(seed, offset, p)`` in the forward and again in the backward. Its forward, dx, dA
and dB equal the explicit-mask call with the mask ``dropout_mask`` draws (bitwise: the same products), through
the aot ABI (every entry point; row- and column-split shapes, M*K not a multiple of the hash's 4096-counter
block, offsets crossing a block) and through ``LoraLinear`` (GRAPH and PYNATIVE, float32 and float16), and
match float64 numpy with the numpy reference mask."""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

from mindpet.kernels import LoraLinear, dropout_key, dropout_mask, lora_linear
from dropout_reference import mask_reference
from kernel_testing import call_aot, min_parallel_macs, requires_fused, value_and_grads

pytestmark = requires_fused

P, SEED, S = 0.3, 987654321, 0.75


def _key(offset, p=P, seed=SEED):
    """The dropout key as the kernels read it: int64 [seed, offset, bits of float32 p]."""
    return np.array([seed, offset, int(np.array([p], np.float32).view(np.uint32)[0])], np.int64)


def _mask(shape, dtype, offset, p=P, seed=SEED):
    """The mask the dropout_mask kernel draws (the explicit mode's input), in PYNATIVE (the mode is restored)."""
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        return dropout_mask(Tensor(np.zeros(shape, dtype)), p, seed, offset).asnumpy()
    finally:
        ms.set_context(mode=mode)


def _problem(m, k, n, r, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k))
    w = rng.standard_normal((n, k)) / np.sqrt(k)
    bias = rng.standard_normal(n)
    a = rng.standard_normal((r, k)) / np.sqrt(k)
    b = rng.standard_normal((n, r))
    dy = rng.standard_normal((m, n))
    return [v.astype(dtype) for v in (x, w, bias, a, b, dy)]


def _shapes():
    """Column-split (few rows) and row-split (above the team threshold) shapes; M*K never a multiple of 4096."""
    big_m = max(64, min_parallel_macs() // (96 * 80) + 64)
    return [(1, 5, 3, 1), (7, 33, 17, 3), (37, 96, 80, 4), (big_m | 1, 97, 80, 4)]


def _all_entry_points(x, w, bias, a, b, dy, mask, mode):
    """Forward (y, u), one-pass backward (dx, dA, dB) and the split pair (dA, dB, g; dx) through the aot ABI."""
    m, k, n, r = x.shape[0], x.shape[1], w.shape[0], a.shape[0]
    dt = x.dtype
    s, has_mask = np.array(S, np.float32), np.array(mode, np.int64)
    code, fwd = call_aot("LoraLinearForward", [x, w, bias, a, b, mask, s, np.array(1, np.int64), has_mask,
                                               np.zeros((m, n), dt), np.zeros((m, r), dt)])
    assert code == 0
    y, u = fwd[-2], fwd[-1]
    code, bwd = call_aot("LoraLinearBackward", [dy, x, w, a, b, u, mask, s, has_mask, np.zeros((m, k), dt),
                                                np.zeros((r, k), dt), np.zeros((n, r), dt)])
    assert code == 0
    code, bw = call_aot("LoraLinearBackwardWeights", [dy, x, b, u, mask, s, has_mask, np.zeros((r, k), dt),
                                                      np.zeros((n, r), dt), np.zeros((m, r), np.float32)])
    assert code == 0
    code, bx = call_aot("LoraLinearBackwardInput", [dy, w, a, bw[-1], mask, s, has_mask, np.zeros((m, k), dt)])
    assert code == 0
    return {"y": y, "u": u, "dx": bwd[-3], "dA": bwd[-2], "dB": bwd[-1], "split dA": bw[-3], "split dB": bw[-2],
            "split dx": bx[-1]}


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("offset", [0, 4090, 2 ** 40 - 5], ids=["offset0", "crossing", "large"])
def test_every_entry_point_with_the_key_equals_the_explicit_mask_bitwise(dtype, offset):
    for m, k, n, r in _shapes():
        x, w, bias, a, b, dy = _problem(m, k, n, r, dtype)
        explicit = _all_entry_points(x, w, bias, a, b, dy, _mask((m, k), dtype, offset), 1)
        hashed = _all_entry_points(x, w, bias, a, b, dy, _key(offset), 2)
        for name, value in explicit.items():
            np.testing.assert_array_equal(hashed[name], value, err_msg=f"{name} {m}x{k}x{n}x{r} offset {offset}")


def test_the_key_matches_float64_numpy_with_the_reference_mask():
    m, k, n, r, offset = 45, 91, 30, 5, 4096 * 3 - 100  # counters cross two blocks
    x, w, bias, a, b, dy = _problem(m, k, n, r, np.float32, seed=3)
    got = _all_entry_points(x, w, bias, a, b, dy, _key(offset), 2)
    x, w, bias, a, b, dy = (v.astype(np.float64) for v in (x, w, bias, a, b, dy))
    mask = mask_reference((m, k), P, SEED, offset)
    xd = x * mask
    u = xd @ a.T
    g = dy @ b
    ref = {"y": x @ w.T + bias + S * u @ b.T, "dx": dy @ w + S * (g @ a) * mask, "dA": S * g.T @ xd,
           "dB": S * dy.T @ got["u"].astype(np.float64)}
    for name, value in ref.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-4 * np.abs(value).max(), err_msg=name)
    np.testing.assert_allclose(got["u"], u, rtol=1e-4, atol=1e-4 * np.abs(u).max())


def test_a_bad_key_is_rejected():
    x, w, bias, a, b, dy = _problem(4, 8, 6, 2, np.float32)
    for bad, message in ((_key(0)[:2], b"dropout key [3]"), (_key(0).astype(np.int32), b"dropout key [3]"),
                         (_key(0, p=0.0) + np.array([0, 0, 0x3F800000], np.int64), b"p must be in [0, 1)")):
        code, _ = call_aot("LoraLinearBackwardInput", [dy, w, a, np.zeros((4, 2), np.float32), bad,
                                                       np.array(S, np.float32), np.array(2, np.int64),
                                                       np.zeros((4, 8), np.float32)])
        assert code != 0, message


class _Op(nn.Cell):
    """LoraLinear with every tensor an input; the dropout as a mask (explicit) or as its key."""

    def __init__(self, hashed, dtype):
        super().__init__()
        self.hashed = hashed
        self.op = LoraLinear(S, has_bias=True, dtype=ms.float16 if dtype == np.float16 else ms.float32)

    def construct(self, x, w, bias, a, b, dropout):
        if self.hashed:
            return self.op(x, w, bias, a, b, None, False, dropout)
        return self.op(x, w, bias, a, b, dropout)


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_lora_linear_cell_with_the_key_equals_the_explicit_mask(mode, dtype):
    batch, k, n, r, offset = (3, 11), 50, 20, 4, 4000  # 33 x 50 counters from 4000: crosses a block
    x, w, bias, a, b, _ = _problem(33, k, n, r, dtype, seed=5)
    x = x.reshape(batch + (k,))
    cot = np.random.default_rng(6).standard_normal(batch + (n,)).astype(dtype)
    mask = _mask(batch + (k,), dtype, offset)
    y_e, g_e = value_and_grads(_Op(False, dtype), [x, w, bias, a, b, mask], cot)
    y_h, g_h = value_and_grads(_Op(True, dtype), [x, w, bias, a, b, _key(offset)], cot)
    np.testing.assert_array_equal(y_h, y_e)
    for name, ge, gh in zip(("dx", "dW", "dbias", "dA", "dB"), g_e, g_h):
        np.testing.assert_array_equal(gh, ge, err_msg=name)


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


def test_functional_form_and_argument_errors(pynative):  # pylint: disable=unused-argument,redefined-outer-name
    x, w, bias, a, b, _ = _problem(6, 10, 4, 2, np.float32)
    t = [Tensor(v) for v in (x, w, bias, a, b)]
    key = dropout_key(SEED, 77, P)
    np.testing.assert_array_equal(key.asnumpy(), _key(77))
    y_key = lora_linear(*t, S, dropout_key=key).asnumpy()
    y_mask = lora_linear(*t, S, Tensor(_mask((6, 10), np.float32, 77))).asnumpy()
    np.testing.assert_array_equal(y_key, y_mask)
    with pytest.raises(ValueError, match="either 'mask' or 'dropout_key'"):
        lora_linear(*t, S, Tensor(_mask((6, 10), np.float32, 77)), dropout_key=key)
    with pytest.raises(ValueError, match="'dropout_key' needs the fused CPU kernel"):
        lora_linear(*t, S, backend="composed", dropout_key=key)


def _quant_entry_points(x, quant, bias, a, b, dy, g, mask, mode):
    """quant_lora_linear's forward (y, u) and input gradient (dx from g) through the aot ABI."""
    codes, scales, offsets, lut, group, bits = quant
    m, k, n, r = x.shape[0], x.shape[1], b.shape[0], a.shape[0]
    attrs = [np.array(S, np.float32)] + [np.array(v, np.int64) for v in (group, bits, 1)]
    code, fwd = call_aot("QuantLoraLinearForward", [x, codes, scales, offsets, lut, bias, a, b, mask] + attrs +
                         [np.array(v, np.int64) for v in (1, 1, mode)] + [np.zeros((m, n), x.dtype),
                                                                          np.zeros((m, r), x.dtype)])
    assert code == 0
    code, bwd = call_aot("QuantLoraLinearBackwardInput", [dy, x, codes, scales, offsets, lut, a, g, mask] + attrs +
                         [np.array(v, np.int64) for v in (1, mode)] + [np.zeros((m, k), x.dtype)])
    assert code == 0
    return {"y": fwd[-2], "u": fwd[-1], "dx": bwd[-1]}


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_quant_lora_linear_with_the_key_equals_the_explicit_mask_bitwise(dtype):
    import test_kernel_quant_lora_linear as quant_tests  # pylint: disable=import-outside-toplevel
    rng = np.random.default_rng(11)
    n, k, r, bits, group, offset = 90, 120, 4, 4, 40, 4096 - 1000
    codes, scales, offsets, lut = quant_tests.quantized_weight(n, k, bits, group, quant_tests.Q4_0, True, rng)
    for m in (3, 601):  # column blocks; row chunks
        x, _, bias, a, b, dy = _problem(m, k, n, r, dtype, seed=m)
        g = rng.standard_normal((m, r)).astype(np.float32)
        quant = (codes, scales, offsets, lut, group, bits)
        explicit = _quant_entry_points(x, quant, bias, a, b, dy, g, _mask((m, k), dtype, offset), 1)
        hashed = _quant_entry_points(x, quant, bias, a, b, dy, g, _key(offset), 2)
        for name, value in explicit.items():
            np.testing.assert_array_equal(hashed[name], value, err_msg=f"{name} m={m}")
