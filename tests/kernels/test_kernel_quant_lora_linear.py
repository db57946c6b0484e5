"""quant_lora_linear: the fused CPU kernels and the composed path against an independent float64 numpy
dequantiser and reference (forward, dx, dA, dB), GRAPH and PYNATIVE, float32 and float16, 4-bit and 5-bit
(lut, with and without offsets) and 8-bit codes, group sizes 32/64/K, odd shapes; frozen inputs get zero gradients; the
input-gradient op is dropped when no dx is needed; errors name the argument; the workspace is bounded."""
from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor, nn

from mindpet.kernels import QuantLoraLinear, _library
from kernel_testing import assert_close, call_aot, kernel_calls, requires_fused, value_and_grads

TOL = {np.float32: 2e-5, np.float16: 1.5e-2}
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], np.float32)
Q4_0 = np.arange(16, dtype=np.float32) - 8.0
Q5_0 = np.arange(32, dtype=np.float32) - 16.0
Q5_1 = np.arange(32, dtype=np.float32)
ABSENT16 = np.zeros(1, np.float16)


def numpy_dequantize(codes, scales, offsets, lut, bits, group):
    """Float64 ``W [N, K]`` of the unified layout, written independently of the kernels."""
    n = codes.shape[0]
    k = {4: codes.shape[1] * 2, 5: codes.shape[1] * 8 // 5, 8: codes.shape[1]}[bits]
    cols = np.arange(k)
    if bits in (4, 5):
        nibble = (codes[:, cols // 2].astype(np.int64) >> (4 * (cols % 2))[None, :]) & 0xF
        if bits == 5:  # 5th bit of k: bit k % 8 of byte K / 2 + k // 8
            nibble += 16 * ((codes[:, k // 2 + cols // 8].astype(np.int64) >> (cols % 8)[None, :]) & 1)
        v = lut.astype(np.float64)[nibble]
    else:
        v = codes.astype(np.float64)
    w = v * scales.astype(np.float64)[:, cols // group]
    if offsets is not None:
        w = w + offsets.astype(np.float64)[:, cols // group]
    assert w.shape == (n, k)
    return w


def quantized_weight(n, k, bits, group, lut, with_offsets, rng):
    """Random codes, float16 scales/offsets and the lut stand-in of the unified layout."""
    if bits in (4, 5):
        codes = rng.integers(0, 256, (n, k // 2 + (k // 8 if bits == 5 else 0)), dtype=np.uint8)
    else:
        codes = rng.integers(-127, 128, (n, k), dtype=np.int8)
    spread = 0.5 / np.sqrt(k) / (8.0 if lut is Q4_0 else 16.0 if bits == 5 else 1.0 if bits == 4 else 64.0)
    scales = (rng.uniform(0.5, 1.5, (n, k // group)) * spread).astype(np.float16)
    offsets = (rng.standard_normal((n, k // group)) * spread).astype(np.float16) if with_offsets else None
    lut_in = lut if bits in (4, 5) else np.zeros(1, np.float32)
    return codes, scales, offsets, lut_in


class _Op(nn.Cell):
    """QuantLoraLinear with every tensor as an input; absent ones replaced by None where the Cell wants it."""

    def __init__(self, bits, group, has_offsets, has_bias, has_lora, with_mask, scale, backend):
        super().__init__()
        self.has_bias, self.has_lora, self.with_mask = has_bias, has_lora, with_mask
        self.op = QuantLoraLinear(bits, group, has_offsets, has_bias, has_lora, scale, backend=backend)

    def construct(self, x, codes, scales, offsets, lut, bias, a, b, mask):
        return self.op(x, codes, scales, offsets, lut, bias if self.has_bias else None, a if self.has_lora else None,
                       b if self.has_lora else None, mask if self.with_mask else None)


# (bits, G, K, N, R, M, lut, offsets, bias, lora, mask)
CASES = {
    "q4_0_g32": (4, 32, 96, 37, 8, 7, Q4_0, False, True, True, True),
    "nf4_g64_offsets_r1": (4, 64, 128, 19, 1, 5, NF4, True, False, True, False),
    "q4_gK_nolora": (4, 40, 40, 13, 1, 3, Q4_0, True, True, False, False),
    "int8_gK": (8, 80, 80, 23, 8, 9, None, False, True, True, False),
    "q8_g32_offsets_mask": (8, 32, 64, 17, 1, 1, None, True, False, True, True),
    "q8_g64_nolora_nobias": (8, 64, 128, 11, 1, 4, None, False, False, False, False),
    "q5_0_g32_mask": (5, 32, 96, 29, 4, 6, Q5_0, False, True, True, True),
    "q5_1_g32_offsets_nolora": (5, 32, 64, 13, 1, 5, Q5_1, True, False, False, False),
    "q5_g40_offsets": (5, 40, 120, 11, 2, 3, Q5_1, True, True, True, False),  # groups not aligned to 32
}


def _problem(case, dtype, seed=0, m=None):
    bits, group, k, n, r, m_default, lut, with_off, _, _, _ = CASES[case]
    m = m_default if m is None else m
    rng = np.random.default_rng(seed)
    codes, scales, offsets, lut_in = quantized_weight(n, k, bits, group, lut, with_off, rng)
    x = rng.standard_normal((m, k))
    bias = rng.standard_normal(n)
    a = rng.standard_normal((r, k)) / np.sqrt(k)
    b = rng.standard_normal((n, r))
    mask = (rng.random((m, k)) >= 0.25) / 0.75
    cot = rng.standard_normal((m, n)).astype(dtype)
    floats = [v.astype(dtype) for v in (x, bias, a, b, mask)]
    inputs = [floats[0], codes, scales, offsets if with_off else ABSENT16, lut_in] + floats[1:]
    return inputs, cot, offsets


def _reference(case, inputs, offsets, cot, scale):
    """Float64 y and the vector-Jacobian products dx, dA, dB of the contract formulas."""
    bits, group, _, _, _, _, _, _, has_bias, has_lora, with_mask = CASES[case]
    x, codes, scales, _, lut, bias, a, b, mask = inputs
    w = numpy_dequantize(codes, scales, offsets, lut, bits, group)
    x, bias, a, b, mask, dy = (v.astype(np.float64) for v in (x, bias, a, b, mask, cot))
    m = mask if with_mask else np.ones_like(x)
    xd = x * m
    u = xd @ a.T
    y = x @ w.T + (bias if has_bias else 0.0) + (scale * u @ b.T if has_lora else 0.0)
    g = dy @ b
    dx = dy @ w + (scale * (g @ a) * m if has_lora else 0.0)
    return y, dx, scale * g.T @ xd, scale * dy.T @ u


def _run(case, backend, inputs, cot, scale):
    bits, group, _, _, _, _, _, with_off, has_bias, has_lora, with_mask = CASES[case]
    op = _Op(bits, group, with_off, has_bias, has_lora, with_mask, scale, backend)
    return value_and_grads(op, inputs, cot)


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", ["composed", pytest.param("fused", marks=requires_fused)])
def test_forward_and_gradients_match_float64(mode, backend, case, dtype):
    scale = 1.75
    inputs, cot, offsets = _problem(case, dtype)
    value, grads = _run(case, backend, inputs, cot, scale)
    y, dx, da, db = _reference(case, inputs, offsets, cot, scale)
    tol = TOL[dtype]
    assert value.dtype == np.dtype(dtype)
    assert_close(value, y, tol, "y")
    assert_close(grads[0], dx, tol, "dx")
    if CASES[case][9]:  # has_lora
        assert_close(grads[6], da, tol, "d_lora_a")
        assert_close(grads[7], db, tol, "d_lora_b")
    # the quantised tensors and the bias are frozen: zero gradients of their own shape and dtype
    for i, name in ((1, "codes"), (2, "scales"), (3, "offsets"), (4, "lut"), (5, "bias")):
        assert grads[i].shape == inputs[i].shape, name
        assert not np.any(grads[i]), name


@requires_fused
@pytest.mark.parametrize("m", [301, 2100])
@pytest.mark.parametrize("case", ["q4_0_g32", "int8_gK", "q8_g64_nolora_nobias"])
def test_fused_matches_float64_at_many_rows(case, m):
    """Row counts where the kernels run several threads (work above the one-thread threshold); from 1024 rows
    per thread the kernels take row chunks and walk slices of W instead of panels."""
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    bits, group, k, _, r, _, lut, with_off, has_bias, has_lora, with_mask = CASES[case]
    rng = np.random.default_rng(3)
    n, k = 300, 4 * k
    codes, scales, offsets, lut_in = quantized_weight(n, k, bits, group, lut, with_off, rng)
    x, cot = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((m, n)).astype(np.float32)
    floats = [rng.standard_normal(s).astype(np.float32) for s in ((n,), (r, k), (n, r))]
    mask = ((rng.random((m, k)) >= 0.25) / 0.75).astype(np.float32)
    inputs = [x, codes, scales, offsets if with_off else ABSENT16, lut_in] + floats + [mask]
    CASES["_big"] = (bits, group, k, n, r, m, lut, with_off, has_bias, has_lora, with_mask)
    try:
        value, grads = _run("_big", "fused", inputs, cot, 0.5)
        y, dx, da, db = _reference("_big", inputs, offsets, cot, 0.5)
    finally:
        del CASES["_big"]
    assert_close(value, y, 2e-5, "y")
    assert_close(grads[0], dx, 2e-5, "dx")
    if has_lora:
        assert_close(grads[6], da, 2e-5, "d_lora_a")
        assert_close(grads[7], db, 2e-5, "d_lora_b")


@requires_fused
@pytest.mark.parametrize("m", [0, 1])
def test_zero_and_one_row(m):
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    inputs, cot, offsets = _problem("nf4_g64_offsets_r1", np.float32, m=m)
    value, grads = _run("nf4_g64_offsets_r1", "fused", inputs, cot, 2.0)
    y, dx, da, db = _reference("nf4_g64_offsets_r1", inputs, offsets, cot, 2.0)
    assert value.shape == (m, 19) and grads[0].shape == (m, 128)
    if m == 0:
        assert not np.any(grads[6]) and not np.any(grads[7])
        return
    assert_close(value, y, 2e-5, "y")
    assert_close(grads[0], dx, 2e-5, "dx")
    assert_close(grads[6], da, 2e-5, "d_lora_a")
    assert_close(grads[7], db, 2e-5, "d_lora_b")


def test_leading_batch_dims_are_flattened(mode):
    inputs, cot, offsets = _problem("q4_0_g32", np.float32, m=6)
    bits, group, _, n, _, _, _, with_off, _, _, _ = CASES["q4_0_g32"]
    op = QuantLoraLinear(bits, group, with_off, True, True, 1.75, backend="composed")
    x, codes, scales, off, lut, bias, a, b, mask = [Tensor(v) for v in inputs]
    y = op(x.reshape((2, 3, -1)), codes, scales, off, lut, bias, a, b, mask.reshape((2, 3, -1)))
    assert y.shape == (2, 3, n)
    assert_close(y.asnumpy().reshape(6, n), _reference("q4_0_g32", inputs, offsets, cot, 1.75)[0], 2e-5, "y")


class _Net(nn.Cell):
    """A fused QuantLoraLinear on a frozen 4-bit base with trainable A, B."""

    def __init__(self, backend):
        super().__init__()
        inputs, _, _ = _problem("q4_0_g32", np.float32)
        _, codes, scales, offsets, lut, bias, a, b, _ = inputs
        self.codes = Parameter(Tensor(codes), requires_grad=False)
        self.scales = Parameter(Tensor(scales), requires_grad=False)
        self.offsets, self.lut = Tensor(offsets), Tensor(lut)
        self.bias = Parameter(Tensor(bias), requires_grad=False)
        self.a, self.b = Parameter(Tensor(a)), Parameter(Tensor(b))
        self.op = QuantLoraLinear(4, 32, False, True, True, 1.5, backend=backend)

    def construct(self, x, cot):
        return (self.op(x, self.codes, self.scales, self.offsets, self.lut, self.bias, self.a, self.b) * cot).sum()


def _graph_step(backend, grad_position):
    net = _Net(backend)
    grad_fn = ms.value_and_grad(net, grad_position, net.trainable_params())

    @ms.jit
    def step(x, cot):
        return grad_fn(x, cot)
    return step


@requires_fused
def test_graph_drops_the_input_op_when_no_input_gradient_is_asked():
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((37, 96)).astype(np.float32))
    cot = Tensor(rng.standard_normal((37, 37)).astype(np.float32))
    _, (ref_da, ref_db) = _graph_step("composed", None)(x, cot)
    weights0, input0 = kernel_calls("LoraLinearBackwardWeights"), kernel_calls("QuantLoraLinearBackwardInput")
    _, (da, db) = _graph_step("fused", None)(x, cot)
    assert_close(da.asnumpy(), ref_da.asnumpy(), 2e-5, "dA")
    assert_close(db.asnumpy(), ref_db.asnumpy(), 2e-5, "dB")
    assert kernel_calls("LoraLinearBackwardWeights") == weights0 + 1
    assert kernel_calls("QuantLoraLinearBackwardInput") == input0  # dead code: never run

    _, (ref_dx, _) = _graph_step("composed", 0)(x, cot)
    _, (dx, _) = _graph_step("fused", 0)(x, cot)
    assert_close(dx.asnumpy(), ref_dx.asnumpy(), 2e-5, "dx")
    assert kernel_calls("QuantLoraLinearBackwardInput") == input0 + 1


class _TwoVariants(nn.Cell):
    """``z = lora(plain(x))``: a QuantLoraLinear without LoRA feeding one with LoRA, in one graph."""

    def __init__(self, codes, scales, lut, a, b, backend):
        super().__init__()
        self.codes, self.scales, self.lut = Tensor(codes), Tensor(scales), Tensor(lut)
        self.no_offsets = Tensor(ABSENT16)
        self.a, self.b = Parameter(Tensor(a), name="a"), Parameter(Tensor(b), name="b")
        self.plain = QuantLoraLinear(4, 32, False, False, False, backend=backend)
        self.lora = QuantLoraLinear(4, 32, False, False, True, 1.5, backend=backend)

    def construct(self, x, cot):
        h = self.plain(x, self.codes, self.scales, self.no_offsets, self.lut, None, None, None)
        return (self.lora(h, self.codes, self.scales, self.no_offsets, self.lut, None, self.a, self.b) * cot).sum()


@requires_fused
def test_both_variants_in_one_graph_get_their_own_backward(mode):
    """With and without LoRA in one GRAPH graph: every gradient against float64, and lora_linear's weights op
    runs once per step (only for the LoRA op). (A regression: two Custom primitives on one kernel with two bprops
    shared one bprop in GRAPH mode.)"""
    rng = np.random.default_rng(3)
    codes, scales, _, lut = quantized_weight(64, 64, 4, 32, Q4_0, False, rng)
    a = (rng.standard_normal((4, 64)) / 8).astype(np.float32)
    b = rng.standard_normal((64, 4)).astype(np.float32)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    cot = rng.standard_normal((5, 64)).astype(np.float32)
    net = _TwoVariants(codes, scales, lut, a, b, "fused")
    calls = kernel_calls("LoraLinearBackwardWeights")
    _, (dx, (da, db)) = ms.value_and_grad(net, 0, [net.a, net.b])(Tensor(x), Tensor(cot))
    dx, da, db = dx.asnumpy(), da.asnumpy(), db.asnumpy()
    assert kernel_calls("LoraLinearBackwardWeights") == calls + 1
    w = numpy_dequantize(codes, scales, None, lut, 4, 32)
    a64, b64, dy = a.astype(np.float64), b.astype(np.float64), cot.astype(np.float64)
    h = x.astype(np.float64) @ w.T
    g = dy @ b64
    assert_close(db, 1.5 * dy.T @ (h @ a64.T), 2e-5, "dB")
    assert_close(da, 1.5 * g.T @ h, 2e-5, "dA")
    assert_close(dx, (dy @ w + 1.5 * g @ a64) @ w, 2e-5, "dx")


def _call(op, case="q4_0_g32", codes=None, k_cut=None):
    inputs, _, _ = _problem(case, np.float32)
    if codes is not None:
        inputs[1] = codes
    if k_cut is not None:
        inputs[0] = inputs[0][:, :k_cut]
    x, c, s, o, lut, bias, a, b, _ = [Tensor(v) for v in inputs]
    return op(x, c, s, o, lut, bias, a, b)


@pytest.mark.parametrize("bits", [3, 16, True, "4"])
def test_bits_other_than_4_5_or_8_is_a_value_error(bits):
    with pytest.raises(ValueError, match="'bits' must be 4, 5 or 8"):
        QuantLoraLinear(bits, 32, False, True, True)


@pytest.mark.parametrize("group", [0, -32, 1.5])
def test_bad_group_size_is_a_value_error(group):
    with pytest.raises(ValueError, match="'group_size' must be a positive int"):
        QuantLoraLinear(4, group, False, True, True)


@pytest.mark.parametrize("backend", ["composed", pytest.param("fused", marks=requires_fused)])
def test_in_channels_not_a_multiple_of_the_group_is_a_value_error(mode, backend):
    op = QuantLoraLinear(4, 64, False, True, True, backend=backend)  # K = 96
    with pytest.raises(ValueError, match=r"in_channels \(96\) must be a multiple of group_size \(64\)"):
        _call(op)


@pytest.mark.parametrize("backend", ["composed", pytest.param("fused", marks=requires_fused)])
def test_codes_of_the_wrong_dtype_is_a_type_error(mode, backend):
    op = QuantLoraLinear(4, 32, False, True, True, backend=backend)
    with pytest.raises(TypeError, match="'codes' must be uint8 for bits=4"):
        _call(op, codes=np.zeros((37, 48), np.int8))
    op8 = QuantLoraLinear(8, 32, False, True, True, backend=backend)
    with pytest.raises(TypeError, match="'codes' must be int8 for bits=8"):
        _call(op8, codes=np.zeros((37, 96), np.uint8))


@pytest.mark.parametrize("backend", ["composed", pytest.param("fused", marks=requires_fused)])
def test_scales_offsets_and_lut_are_checked(mode, backend):
    inputs, _, _ = _problem("nf4_g64_offsets_r1", np.float32)
    x, codes, scales, offsets, lut, bias, a, b, _ = inputs

    def call(**bad):
        args = dict(scales=scales, offsets=offsets, lut=lut)
        args.update(bad)
        op = QuantLoraLinear(4, 64, True, False, True, backend=backend)
        return op(Tensor(x), Tensor(codes), Tensor(args["scales"]), Tensor(args["offsets"]), Tensor(args["lut"]), None,
                  Tensor(a), Tensor(b))
    with pytest.raises(TypeError, match="'scales' must be float16"):
        call(scales=scales.astype(np.float32))
    with pytest.raises(ValueError, match="'scales' must be"):
        call(scales=scales[:, :1])
    with pytest.raises(ValueError, match="'offsets' must have the shape of 'scales'"):
        call(offsets=ABSENT16)
    with pytest.raises(ValueError, match=r"'lut' must be a float32 \[16\] tensor"):
        call(lut=np.zeros(1, np.float32))


def test_codes_of_the_wrong_width_is_a_value_error():
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    op = QuantLoraLinear(4, 32, False, True, True, backend="composed")
    with pytest.raises(ValueError, match=r"'codes' must be \[N, in_channels // 2\]"):
        _call(op, codes=np.zeros((37, 96), np.uint8))
    op5 = QuantLoraLinear(5, 32, False, True, True, backend="composed")
    with pytest.raises(ValueError, match=r"'codes' must be \[N, in_channels // 2 \+ in_channels // 8\] = \[N, 60\] "
                                         r"for bits=5"):
        _call(op5, codes=np.zeros((37, 48), np.uint8))  # 4-bit codes without the 5th bits


def _aot_forward(m, n, k, bits=4, group=32, codes=None):
    rng = np.random.default_rng(0)
    codes_, scales, _, lut = quantized_weight(n, k, bits, group, Q4_0, False, rng)
    codes = codes_ if codes is None else codes
    x = rng.standard_normal((m, k)).astype(np.float32)
    a = np.zeros((4, k), np.float32)
    b = np.zeros((n, 4), np.float32)
    attrs = [np.array(1.0, np.float32)] + [np.array(v, np.int64) for v in (group, bits, 0, 0, 1, 0)]
    ins = [x, codes, scales, ABSENT16, lut, np.zeros(1, np.float32), a, b, np.zeros(1, np.float32)] + attrs
    return call_aot("QuantLoraLinearForward", ins + [np.zeros((m, n), np.float32), np.zeros((m, 4), np.float32)])


@requires_fused
def test_kernel_rejects_codes_that_break_the_contract(capfd):
    code, _ = _aot_forward(2, 8, 64, codes=np.zeros((8, 32), np.int8))
    assert code != 0
    assert "codes must be int8 (bits 8) or uint8 (bits 4, 5)" in capfd.readouterr().err
    code, _ = _aot_forward(2, 8, 64, bits=5, codes=np.zeros((8, 32), np.uint8))  # 5-bit rows are 40 bytes
    assert code != 0
    assert "codes must be [N, K] (bits 8), [N, K/2] (bits 4) or [N, K/2 + K/8] (bits 5)" in capfd.readouterr().err


def _workspace_bytes() -> int:
    fn = ctypes.CDLL(_library.load()).MindpetQuantWorkspaceBytes
    fn.restype = ctypes.c_int64
    return int(fn())


@requires_fused
def test_forward_never_holds_a_float32_copy_of_the_weight():
    """The dequantisation workspace of a call stays a few panels, whatever N x K (here W would be 64 MiB)."""
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    sizes = {}
    for n in (256, 4096):
        code, arrays = _aot_forward(8, n, 4096)
        assert code == 0
        sizes[n] = _workspace_bytes()
        # the result is right (the LoRA term is zero): y = x W^T
        _, codes, scales, _, lut = arrays[:5]
        w = numpy_dequantize(codes, scales, None, lut, 4, 32)
        assert_close(arrays[-2], arrays[0].astype(np.float64) @ w.T, 2e-5, "y")
    weight_bytes = 4096 * 4096 * 4
    # one ~256 KiB panel per thread (1 MiB per thread at most, the many-rows panel)
    assert 0 < sizes[256] <= sizes[4096] <= (os.cpu_count() or 1) * 1024 * 1024
    assert sizes[4096] < weight_bytes // 16


@requires_fused
def test_input_gradient_never_holds_a_float32_copy_of_the_weight():
    n = k = 4096
    rng = np.random.default_rng(0)
    codes, scales, _, lut = quantized_weight(n, k, 8, k, None, False, rng)
    dy = rng.standard_normal((4, n)).astype(np.float32)
    attrs = [np.array(1.0, np.float32)] + [np.array(v, np.int64) for v in (k, 8, 0, 0, 0)]
    absent = np.zeros(1, np.float32)
    # x_cols: only its last dimension (K) is read, so a [1, K] stand-in gives dx [4, K]
    ins = [dy, np.zeros((1, k), np.float32), codes, scales, ABSENT16, absent, absent, absent, absent] + attrs
    code, arrays = call_aot("QuantLoraLinearBackwardInput", ins + [np.zeros((4, k), np.float32)])
    assert code == 0
    assert 0 < _workspace_bytes() <= (os.cpu_count() or 1) * 1024 * 1024 < n * k * 4 // 16
    w = numpy_dequantize(codes, scales, None, lut, 8, k)
    assert_close(arrays[-1], dy.astype(np.float64) @ w, 2e-5, "dx")


_PORTABLE_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np
import test_kernel_quant_lora_linear as t
t.check_aot_against_numpy()
print("ok")
"""


def check_aot_against_numpy():
    """Forward and input gradient through the aot entry points, every path of the dequantiser: 4-bit and
    5-bit and 8-bit, groups aligned to the vector runs (32) and not (40, 24 odd-aligned blocks), offsets on
    and off."""
    rng = np.random.default_rng(5)
    # N = 600: blocks of 96 columns in the input gradient (not aligned to every group); M = 600 runs the
    # panels on several threads, M = 2100 the row chunks walking slices of W
    for bits, group, k, lut, with_off, m in ((4, 32, 128, NF4, True, 3), (4, 32, 128, NF4, True, 600),
                                             (4, 32, 128, NF4, True, 2100), (4, 40, 120, Q4_0, False, 3),
                                             (8, 24, 72, None, True, 3), (8, 64, 128, None, False, 2100),
                                             (5, 32, 128, Q5_1, True, 3), (5, 32, 128, Q5_0, False, 600),
                                             (5, 32, 128, Q5_1, True, 2100), (5, 40, 120, Q5_0, False, 3)):
        n = 600
        codes, scales, offsets, lut_in = quantized_weight(n, k, bits, group, lut if lut is not None else Q4_0,
                                                          with_off, rng)
        w = numpy_dequantize(codes, scales, offsets, lut_in, bits, group)
        off_in = offsets if with_off else ABSENT16
        x = rng.standard_normal((m, k)).astype(np.float32)
        dy = rng.standard_normal((m, n)).astype(np.float32)
        absent = np.zeros(1, np.float32)
        attrs = [np.array(1.0, np.float32)] + [np.array(v, np.int64) for v in (group, bits, int(with_off))]
        fwd = [x, codes, scales, off_in, lut_in, absent, absent, absent, absent] + attrs + \
            [np.array(v, np.int64) for v in (0, 0, 0)] + [np.zeros((m, n), np.float32), np.zeros((m, 1), np.float32)]
        code, arrays = call_aot("QuantLoraLinearForward", fwd)
        assert code == 0
        assert_close(arrays[-2], x.astype(np.float64) @ w.T, 2e-5, f"y bits={bits} G={group}")
        bwd = [dy, x, codes, scales, off_in, lut_in, absent, absent, absent] + attrs + \
            [np.array(v, np.int64) for v in (0, 0)] + [np.zeros((m, k), np.float32)]
        code, arrays = call_aot("QuantLoraLinearBackwardInput", bwd)
        assert code == 0
        assert_close(arrays[-1], dy.astype(np.float64) @ w, 2e-5, f"dx bits={bits} G={group}")


@requires_fused
@pytest.mark.parametrize("env", [{}, {"MINDPET_DEQUANT_PORTABLE": "1"}, {"MINDPET_CPU_CHUNKS": "guided"},
                                 {"MINDPET_CPU_THREADS_BACKEND": "pool"}], ids=["simd", "portable", "guided", "pool"])
def test_every_dequantiser_path_matches_numpy(env):
    """Both dequantisers, and the kernels under each thread scheduling of parallel.h."""
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, **env)
    out = subprocess.run([sys.executable, "-c", _PORTABLE_SCRIPT.format(tests=tests)], env=env, capture_output=True,
                         text=True, timeout=600, check=False)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


@requires_fused
def test_op_built_for_a_dtype_rejects_another_and_without_dtype_runs_composed(mode):
    """Built with dtype=float32 on the fused backend the graph holds only the kernel call, so a float64 call is a
    TypeError naming the dtype; built without a dtype, 'auto' runs that call composed (float64 values)."""
    inputs, _, offsets = _problem("q8_g64_nolora_nobias", np.float32)
    x, codes, scales, off, lut = inputs[:5]
    x64 = Tensor(x.astype(np.float64))
    built = QuantLoraLinear(8, 64, False, False, False, dtype=ms.float32)
    assert built.dtype_fused
    with pytest.raises(TypeError, match="built with a float32/float16 'dtype'.*Float64"):
        built(x64, Tensor(codes), Tensor(scales), Tensor(off), Tensor(lut), None, None, None)
    free = QuantLoraLinear(8, 64, False, False, False)
    assert not free.dtype_fused
    y = free(x64, Tensor(codes), Tensor(scales), Tensor(off), Tensor(lut), None, None, None).asnumpy()
    assert y.dtype == np.float64
    assert_close(y, x.astype(np.float64) @ numpy_dequantize(codes, scales, None, lut, 8, 64).T, 1e-5, "y")
