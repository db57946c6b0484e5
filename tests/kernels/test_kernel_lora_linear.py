"""lora_linear: composed against float64 numpy, fused CPU kernels against composed (values and the
gradient of every input), GRAPH and PYNATIVE, float32 and float16, dropout on and off, odd shapes."""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor, nn

from mindpet.kernels import LoraLinear, lora_linear
from kernel_testing import assert_close, fused_available, min_parallel_macs, requires_fused, value_and_grads

TOL = {np.float32: 2e-5, np.float16: 1.5e-2}


class _Op(nn.Cell):
    """LoraLinear with every tensor as an input (so each gets a gradient); mask optional."""

    def __init__(self, scale, has_bias, with_mask, backend):
        super().__init__()
        self.has_bias = has_bias
        self.with_mask = with_mask
        self.op = LoraLinear(scale, has_bias=has_bias, backend=backend)

    def construct(self, x, w, b, a, bb, mask):
        bias = b if self.has_bias else None
        m = mask if self.with_mask else None
        return self.op(x, w, bias, a, bb, m)


def _inputs(batch, k, n, r, dtype, p=0.3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(batch + (k,))
    w = rng.standard_normal((n, k)) / np.sqrt(k)
    b = rng.standard_normal(n)
    a = rng.standard_normal((r, k)) / np.sqrt(k)
    bb = rng.standard_normal((n, r))
    mask = (rng.random(batch + (k,)) >= p) / (1.0 - p)
    cot = rng.standard_normal(batch + (n,))
    return [v.astype(dtype) for v in (x, w, b, a, bb, mask)], cot.astype(dtype)


def _numpy_reference(x, w, b, a, bb, mask, s, cot, has_bias, with_mask):
    """Float64 forward and vector-Jacobian products of the contract formulas."""
    x, w, b, a, bb, mask, cot = (v.astype(np.float64) for v in (x, w, b, a, bb, mask, cot))
    k, n = w.shape[1], w.shape[0]
    x2, dy = x.reshape(-1, k), cot.reshape(-1, n)
    m2 = mask.reshape(-1, k) if with_mask else np.ones_like(x2)
    xd = x2 * m2
    u = xd @ a.T
    y = x2 @ w.T + s * u @ bb.T + (b if has_bias else 0.0)
    g = dy @ bb
    dx = dy @ w + s * (g @ a) * m2
    grads = [dx.reshape(x.shape), dy.T @ x2, dy.sum(0) if has_bias else np.zeros_like(b), s * g.T @ xd,
             s * dy.T @ u, np.zeros_like(mask)]
    return y.reshape(cot.shape), grads


@pytest.mark.parametrize("with_mask", [False, True], ids=["nodrop", "dropout"])
def test_composed_matches_float64(mode, with_mask):
    inputs, cot = _inputs((3, 5), 24, 16, 4, np.float32)
    value, grads = value_and_grads(_Op(1.5, True, with_mask, "composed"), inputs, cot)
    ref_value, ref_grads = _numpy_reference(*inputs, 1.5, cot, True, with_mask)
    assert_close(value, ref_value, 1e-5, "y")
    for name, g, rg in zip(("x", "weight", "bias", "lora_a", "lora_b"), grads, ref_grads):
        assert_close(g, rg, 1e-5, f"d{name}")


def _compare_fused(batch, k, n, r, dtype, has_bias, with_mask, scale=2.0):
    inputs, cot = _inputs(batch, k, n, r, dtype)
    fused = value_and_grads(_Op(scale, has_bias, with_mask, "fused"), inputs, cot)
    composed = value_and_grads(_Op(scale, has_bias, with_mask, "composed"), inputs, cot)
    tol = TOL[dtype]
    assert fused[0].dtype == np.dtype(dtype)
    assert_close(fused[0], composed[0], tol, "y")
    names = ("x", "weight", "bias", "lora_a", "lora_b")
    for name, gf, gc in zip(names, fused[1], composed[1]):
        if name == "bias" and not has_bias:
            continue
        assert gf.dtype == np.dtype(dtype), name
        assert_close(gf, gc, tol, f"d{name}")
    # the composed side itself is right (float64), so fused == composed means fused is right
    ref_value, ref_grads = _numpy_reference(*inputs, scale, cot, has_bias, with_mask)
    assert_close(composed[0], ref_value, 10 * tol, "composed y")
    assert_close(composed[1][3], ref_grads[3], 10 * tol, "composed dlora_a")


@requires_fused
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("with_mask", [False, True], ids=["nodrop", "dropout"])
def test_fused_matches_composed(mode, dtype, with_mask):
    _compare_fused((2, 3), 40, 24, 4, dtype, True, with_mask)


@requires_fused
@pytest.mark.parametrize("batch,k,n,r,has_bias", [
    ((1,), 96, 64, 8, True),          # M = 1 (small: one thread)
    ((4,), 2048, 4096, 8, True),      # few rows, threads own output columns
    ((9,), 769, 4867, 3, False),      # odd sizes, in = 769, r = 3, column split
    ((300,), 769, 160, 3, True),      # threads own rows, two row tiles per thread
    ((5,), 20, 12, 1, True),          # rank 1 (small: one thread)
    ((2, 100), 256, 640, 64, False),  # rank 64, batch dims, row split
], ids=["M1", "columns", "odd", "rows-tiles", "rank1", "rank64"])
def test_fused_shapes(mode, batch, k, n, r, has_bias):
    if int(np.prod(batch)) > 1 and r != 1:  # these run on several threads
        assert int(np.prod(batch)) * n * (k + r) >= min_parallel_macs()
    _compare_fused(batch, k, n, r, np.float32, has_bias, True)


@requires_fused
def test_fused_float16_odd_shapes(mode):
    assert 200 * 240 * 772 >= min_parallel_macs()
    _compare_fused((200,), 769, 240, 3, np.float16, True, True, scale=0.5)


@requires_fused
def test_functional_matches_cell_and_frozen_base_pynative():
    """PYNATIVE, base_frozen=True: the zero-base-grad bprop still gives right dx, dA, dB and zeros for
    the base (the caller said it needs none); base_frozen=False computes the base gradients."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        inputs, cot = _inputs((6,), 16, 8, 2, np.float32)
        x, w, b, a, bb, mask = (Tensor(v) for v in inputs)
        op = LoraLinear(0.5, backend="fused")
        ref_value, ref_grads = _numpy_reference(*inputs, 0.5, cot, True, True)
        names = ("x", "weight", "bias", "lora_a", "lora_b")
        for frozen in (True, False):
            grads = ms.grad(lambda x_, w_, b_, a_, bb_: (op(x_, w_, b_, a_, bb_, mask, frozen) * Tensor(cot)).sum(),
                            grad_position=(0, 1, 2, 3, 4))(x, w, b, a, bb)
            for i, name in enumerate(names):
                want = np.zeros_like(ref_grads[i]) if frozen and name in ("weight", "bias") else ref_grads[i]
                assert_close(grads[i].asnumpy(), want, 2e-5, f"d{name} (base_frozen={frozen})")
        weight = Parameter(w, name="w", requires_grad=False)
        b = Parameter(b, name="b", requires_grad=False)
        y = lora_linear(x, weight, b, a, bb, 0.5, dropout_mask=mask, backend="fused")
        assert_close(y.asnumpy(), ref_value, 2e-5, "functional y")
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


@pytest.mark.parametrize("backend", ["fused", "composed"])
def test_the_callers_mask_is_applied_to_the_lora_input(mode, backend):
    """With W = 0, b = 0, A = B = I, s = 1 the op returns x * mask (the caller owns the dropout mask);
    without a mask it returns x, in training mode too (the op draws nothing itself)."""
    if backend == "fused" and not fused_available():
        pytest.skip("mindpet CPU kernel library not built")
    k = 32
    rng = np.random.default_rng(0)
    x = (rng.random((256, k)) + 0.5).astype(np.float32)
    mask = ((rng.random((256, k)) >= 0.25) / 0.75).astype(np.float32)
    eye = Tensor(np.eye(k, dtype=np.float32))
    zeros = Tensor(np.zeros((k, k), np.float32))
    op = LoraLinear(1.0, has_bias=False, backend=backend)
    op.set_train(True)
    np.testing.assert_allclose(op(Tensor(x), zeros, None, eye, eye, Tensor(mask)).asnumpy(), x * mask, rtol=1e-6)
    np.testing.assert_allclose(op(Tensor(x), zeros, None, eye, eye).asnumpy(), x, rtol=1e-6)


@requires_fused
def test_lora_dense_unfrozen_after_a_frozen_graph_step_gets_base_gradients():
    """GRAPH: a LoRADense compiled while its base was frozen must not bake in zero base gradients."""
    from mindpet.delta import LoRADense  # pylint: disable=import-outside-toplevel
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    net = LoRADense(8, 6, lora_rank=2, lora_alpha=2, lora_dropout=0.0, compute_dtype=ms.float32,
                    lora_b_init="normal", backend="fused")
    x = Tensor(np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32))
    net.weight.requires_grad = False
    net.bias.requires_grad = False
    ms.grad(net, grad_position=None, weights=[net.mindpet_delta_lora_a])(x)
    net.weight.requires_grad = True
    d_weight = ms.grad(net, grad_position=None, weights=[net.weight])(x)[0].asnumpy()
    np.testing.assert_allclose(d_weight, np.ones((6, 1)) * x.asnumpy().sum(0), rtol=1e-5, atol=1e-5)


@requires_fused
def test_mixed_dtypes_raise_type_error(mode):
    inputs, _ = _inputs((3,), 8, 4, 2, np.float32)
    x, w, b, a, bb, _ = (Tensor(v) for v in inputs)
    with pytest.raises(TypeError, match="one dtype"):
        LoraLinear(1.0, backend="fused")(x.astype(ms.float16), w, b, a, bb)
    with pytest.raises(TypeError, match="one dtype"):  # built for float32: the compile-time plan checks it
        LoraLinear(1.0, backend="fused", dtype=ms.float32)(x, w.astype(ms.float16), b, a, bb)


@requires_fused
def test_built_for_a_dtype_the_fused_op_rejects_another_and_without_one_falls_back(mode):
    """Built for float32 on the fused backend, the graph holds the kernel call alone, so a float64 call is a
    TypeError naming the dtype; built without a dtype, 'auto' runs float64 composed (values vs float64)."""
    inputs, _ = _inputs((3,), 8, 4, 2, np.float64)
    x, w, b, a, bb, _ = (Tensor(v) for v in inputs)
    with pytest.raises(TypeError, match="built with a float32/float16 'dtype'.*Float64"):
        LoraLinear(1.0, dtype=ms.float32)(x, w, b, a, bb)
    y = LoraLinear(1.0)(x, w, b, a, bb).asnumpy()
    xn, wn, bn, an, bbn = (v.astype(np.float64) for v in inputs[:5])
    np.testing.assert_allclose(y, xn @ wn.T + bn + (xn @ an.T) @ bbn.T, rtol=1e-10, atol=1e-10)
