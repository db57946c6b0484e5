"""The split lora_linear backward: the weight-gradient op (dA, dB, g) and the input-gradient op (dx)
each against float64 numpy through the aot ABI, the one-pass backward equal to the pair, and GRAPH
mode running the input op only when the input gradient is asked for."""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor, nn

from mindpet.kernels import LoraLinear
from kernel_testing import assert_close, call_aot, kernel_calls, min_parallel_macs, requires_fused

pytestmark = requires_fused

TOL = {np.float32: 2e-5, np.float16: 2e-3}


def _problem(m, k, n, r, dtype, with_mask, seed=0):
    rng = np.random.default_rng(seed)
    dy = rng.standard_normal((m, n))
    x = rng.standard_normal((m, k))
    w = rng.standard_normal((n, k)) / np.sqrt(k)
    a = rng.standard_normal((r, k)) / np.sqrt(k)
    b = rng.standard_normal((n, r))
    mask = (rng.random((m, k)) >= 0.3) / 0.7 if with_mask else np.zeros(1)
    dy, x, w, a, b, mask = (v.astype(dtype) for v in (dy, x, w, a, b, mask))
    xd = x.astype(np.float64) * (mask.astype(np.float64) if with_mask else 1.0)
    u = (xd @ a.astype(np.float64).T).astype(dtype)  # the forward's saved u, in T
    return dy, x, w, a, b, u, mask, xd


def _reference(dy, w, a, b, u, mask, xd, s, with_mask):
    """Float64 contract formulas: g = dy B, dA = s g^T x_d, dB = s dy^T u, dx = dy W + s (g A) * mask."""
    dy, w, a, b, u = (v.astype(np.float64) for v in (dy, w, a, b, u))
    g = dy @ b
    dx = dy @ w + s * (g @ a) * (mask.astype(np.float64) if with_mask else 1.0)
    return s * g.T @ xd, s * dy.T @ u, g, dx


def _weights_call(dy, x, b, u, mask, s, with_mask):
    m, k, n, r = x.shape[0], x.shape[1], b.shape[0], b.shape[1]
    dt = x.dtype
    ins = [dy, x, b, u, mask, np.array(s, np.float32), np.array(int(with_mask), np.int64)]
    outs = [np.full((r, k), 7, dt), np.full((n, r), 7, dt), np.full((m, r), 7, np.float32)]
    code, arrays = call_aot("LoraLinearBackwardWeights", ins + outs)
    assert code == 0
    return arrays[-3:]


def _input_call(dy, w, a, g, mask, s, with_mask):
    ins = [dy, w, a, g.astype(np.float32), mask, np.array(s, np.float32), np.array(int(with_mask), np.int64)]
    code, arrays = call_aot("LoraLinearBackwardInput", ins + [np.full((dy.shape[0], w.shape[1]), 7, dy.dtype)])
    assert code == 0
    return arrays[-1]


def _shapes():
    """Odd small shapes (one thread / column split) and a row-split shape above the team threshold."""
    big_m = max(64, min_parallel_macs() // (96 * 80) + 64)
    return [(1, 5, 3, 1), (7, 33, 17, 3), (37, 96, 80, 4), (big_m, 96, 80, 4), (0, 8, 6, 2)]


@pytest.mark.parametrize("with_mask", [False, True], ids=["nodrop", "dropout"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_weights_op_computes_da_db_and_g_only(dtype, with_mask):
    for m, k, n, r in _shapes():
        dy, x, w, a, b, u, mask, xd = _problem(m, k, n, r, dtype, with_mask)
        da, db, g = _weights_call(dy, x, b, u, mask, 0.75, with_mask)
        ref_da, ref_db, ref_g, _ = _reference(dy, w, a, b, u, mask, xd, 0.75, with_mask)
        assert g.dtype == np.float32
        tol = TOL[dtype]
        assert_close(da, ref_da, tol, f"dA {m}x{k}x{n}x{r}")
        assert_close(db, ref_db, tol, f"dB {m}x{k}x{n}x{r}")
        if m:
            assert_close(g, ref_g, 2e-5, f"g {m}x{k}x{n}x{r}")


@pytest.mark.parametrize("with_mask", [False, True], ids=["nodrop", "dropout"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_input_op_computes_dx_from_g(dtype, with_mask):
    for m, k, n, r in _shapes():
        if m == 0:
            continue
        dy, x, w, a, b, u, mask, xd = _problem(m, k, n, r, dtype, with_mask)
        _, _, g, ref_dx = _reference(dy, w, a, b, u, mask, xd, 0.75, with_mask)
        dx = _input_call(dy, w, a, g, mask, 0.75, with_mask)
        assert_close(dx, ref_dx, TOL[dtype], f"dx {m}x{k}x{n}x{r}")


def test_one_pass_backward_equals_the_pair():
    m, k, n, r = 53, 40, 24, 3
    dy, x, w, a, b, u, mask, _ = _problem(m, k, n, r, np.float32, True)
    ins = [dy, x, w, a, b, u, mask, np.array(0.5, np.float32), np.array(1, np.int64)]
    outs = [np.zeros((m, k), np.float32), np.zeros((r, k), np.float32), np.zeros((n, r), np.float32)]
    code, arrays = call_aot("LoraLinearBackward", ins + outs)
    assert code == 0
    da, db, g = _weights_call(dy, x, b, u, mask, 0.5, True)
    dx = _input_call(dy, w, a, g, mask, 0.5, True)
    np.testing.assert_array_equal(arrays[-3], dx)
    np.testing.assert_array_equal(arrays[-2], da)
    np.testing.assert_array_equal(arrays[-1], db)


def test_split_ops_reject_a_float16_g(capfd):
    dy, x, w, a, b, u, mask, _ = _problem(4, 8, 6, 2, np.float32, False)
    ins = [dy, w, a, np.zeros((4, 2), np.float16), mask, np.array(1.0, np.float32), np.array(0, np.int64)]
    code, _ = call_aot("LoraLinearBackwardInput", ins + [np.zeros((4, 8), np.float32)])
    assert code != 0
    assert "g must be float32" in capfd.readouterr().err


class _Net(nn.Cell):
    """A fused LoraLinear with a frozen base and trainable A, B."""

    def __init__(self, backend):
        super().__init__()
        rng = np.random.default_rng(0)
        self.w = Parameter(Tensor(rng.standard_normal((24, 40)).astype(np.float32)), requires_grad=False)
        self.b = Parameter(Tensor(rng.standard_normal(24).astype(np.float32)), requires_grad=False)
        self.a = Parameter(Tensor(rng.standard_normal((3, 40)).astype(np.float32)))
        self.bb = Parameter(Tensor(rng.standard_normal((24, 3)).astype(np.float32)))
        self.op = LoraLinear(1.5, backend=backend)

    def construct(self, x, cot):
        return (self.op(x, self.w, self.b, self.a, self.bb) * cot).sum()


def _graph_step(backend, grad_position):
    net = _Net(backend)
    grad_fn = ms.value_and_grad(net, grad_position, net.trainable_params())

    @ms.jit
    def step(x, cot):
        return grad_fn(x, cot)
    return step


def test_graph_drops_the_input_op_when_no_input_gradient_is_asked():
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((37, 40)).astype(np.float32))
    cot = Tensor(rng.standard_normal((37, 24)).astype(np.float32))
    _, (ref_da, ref_db) = _graph_step("composed", None)(x, cot)

    weights0, input0 = kernel_calls("LoraLinearBackwardWeights"), kernel_calls("LoraLinearBackwardInput")
    _, (da, db) = _graph_step("fused", None)(x, cot)
    assert_close(da.asnumpy(), ref_da.asnumpy(), 2e-5, "dA")
    assert_close(db.asnumpy(), ref_db.asnumpy(), 2e-5, "dB")
    assert kernel_calls("LoraLinearBackwardWeights") == weights0 + 1
    assert kernel_calls("LoraLinearBackwardInput") == input0  # dead code: never run

    _, (ref_dx, _) = _graph_step("composed", 0)(x, cot)
    _, (dx, (da, _)) = _graph_step("fused", 0)(x, cot)
    assert_close(dx.asnumpy(), ref_dx.asnumpy(), 2e-5, "dx")
    assert kernel_calls("LoraLinearBackwardInput") == input0 + 1


def test_standalone_lora_dense_step_runs_no_input_gradient_op():
    """The issue's standalone form (#19): LoRADense after freeze_delta, a constant input, value_and_grad over the
    optimizer's parameters inside ms.jit, SGD. Each step runs the weight op once and never the input op, and its
    gradients match float64 numpy (loss = sum(y), so dy = 1)."""
    from mindpet.delta import LoRADense  # pylint: disable=import-outside-toplevel
    from mindpet.graph import freeze_delta  # pylint: disable=import-outside-toplevel
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    ms.set_seed(0)
    net = LoRADense(40, 24, lora_rank=3, lora_alpha=6, lora_dropout=0.0, lora_b_init="normal",
                    compute_dtype=ms.float32, backend="fused")
    freeze_delta(net, "lora")
    optimizer = nn.SGD(net.trainable_params(), learning_rate=1e-3)
    x = Tensor(np.random.default_rng(2).standard_normal((37, 40)).astype(np.float32))
    a0 = net.mindpet_delta_lora_a.asnumpy().astype(np.float64)
    b0 = net.mindpet_delta_lora_b.asnumpy().astype(np.float64)

    def loss_fn(inp):
        return net(inp).sum()

    grad_fn = ms.value_and_grad(loss_fn, None, optimizer.parameters)

    @ms.jit
    def step(inp):
        loss, grads = grad_fn(inp)
        optimizer(grads)
        return loss, grads

    weights0, input0 = kernel_calls("LoraLinearBackwardWeights"), kernel_calls("LoraLinearBackwardInput")
    _, grads = step(x)
    grads = {p.name: g.asnumpy() for p, g in zip(optimizer.parameters, grads)}
    xs, dy = x.asnumpy().astype(np.float64), np.ones((37, 24))
    assert_close(grads["mindpet_delta_lora_a"], 2.0 * (dy @ b0).T @ xs, 2e-5, "dA")
    assert_close(grads["mindpet_delta_lora_b"], 2.0 * dy.T @ (xs @ a0.T), 2e-5, "dB")
    step(x)[0].asnumpy()
    assert kernel_calls("LoraLinearBackwardWeights") == weights0 + 2
    assert kernel_calls("LoraLinearBackwardInput") == input0
