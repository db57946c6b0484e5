"""BitFit (spec section 5): freeze_delta(mode='bitfit') leaves biases, LayerNorm betas (and the head) trainable."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops

from mindpet.graph import TrainableParamsCheckPoint, freeze_delta, load_pretrained_and_delta

IN, HIDDEN, CLASSES, BATCH = 6, 8, 3, 5
EPS = 1e-5
BITFIT = ["proj.bias", "norm.beta", "ffn.bias", "out.bias"]
HEAD = ["classifier_head.weight", "classifier_head.bias"]


def _np(t):
    return ops.cast(t, ms.float32).asnumpy().astype(np.float64)


class TinyEncoder(nn.Cell):
    """proj -> tanh -> LayerNorm -> residual ReLU FFN -> classifier_head."""

    def __init__(self, dtype=ms.float32, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        dense = lambda n_in, n_out: nn.Dense(
            n_in, n_out, weight_init=Tensor(rng.standard_normal((n_out, n_in)) / np.sqrt(n_in), dtype),
            bias_init=Tensor(rng.standard_normal(n_out) * 0.1, dtype), dtype=dtype)
        self.proj, self.ffn, self.out = dense(IN, HIDDEN), dense(HIDDEN, HIDDEN), dense(HIDDEN, HIDDEN)
        self.norm = nn.LayerNorm((HIDDEN,), epsilon=EPS, dtype=dtype)
        self.classifier_head = dense(HIDDEN, CLASSES)

    def construct(self, x):
        h = self.norm(ops.tanh(self.proj(x)))
        h = h + self.out(ops.relu(self.ffn(h)))
        return self.classifier_head(h)


def _forward_np(net, x, over=None):
    p = {n: _np(v) for n, v in net.parameters_and_names()}
    p.update(over or {})
    d = lambda h, name: h @ p[name + ".weight"].T + p[name + ".bias"]
    h = np.tanh(d(x, "proj"))
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + EPS) * p["norm.gamma"] + p["norm.beta"]
    h = h + d(np.maximum(d(h, "ffn"), 0), "out")
    return d(h, "classifier_head")


def _ce_np(logits, labels):
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels].mean()


class _CE(nn.Cell):
    def __init__(self, net, with_output=False):
        super().__init__(auto_prefix=False)
        self.net, self.with_output = net, with_output

    def construct(self, x, labels):
        logits = self.net(x)
        loss = -ops.gather_elements(ops.log_softmax(logits.astype(ms.float32), -1), 1, labels.expand_dims(1)).mean()
        if self.with_output:
            return loss, logits
        return loss


def _data(dtype, seed=4):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, IN))
    labels = np.array([0, 1, 2, 1, 0], np.int32)
    return x, labels, (Tensor(x, dtype), Tensor(labels))


def test_bitfit_with_head_excluded_leaves_exactly_biases_betas_and_head():
    net = TinyEncoder()
    result = freeze_delta(net, "bitfit", exclude=["*head*"])
    assert sorted(p.name for p in net.trainable_params()) == sorted(BITFIT + HEAD)
    assert sorted(result.frozen) == sorted(["proj.weight", "norm.gamma", "ffn.weight", "out.weight"])


def test_bitfit_without_exclude_freezes_the_head_weight_only():
    net = TinyEncoder()
    freeze_delta(net, "BitFit")
    assert sorted(p.name for p in net.trainable_params()) == sorted(BITFIT + ["classifier_head.bias"])


@pytest.mark.parametrize("dtype", [ms.float32, ms.float16], ids=["fp32", "fp16"])
def test_forward_and_gradients_of_the_trainable_parameters(mode, dtype):
    net = TinyEncoder(dtype)
    x, labels, inputs = _data(dtype)
    freeze_delta(net, "bitfit", exclude=["*head*"])
    params = net.trainable_params()
    fn = ms.value_and_grad(_CE(net, with_output=True), grad_position=None, weights=params, has_aux=True)
    (_, logits), grads = fn(*inputs)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == ms.float32 else dict(rtol=3e-2, atol=3e-2)
    np.testing.assert_allclose(_np(logits), _forward_np(net, x), **tol)
    for p, g in zip(params, grads):
        g = _np(g)
        assert np.abs(g).max() > 0, p.name
        if dtype == ms.float32:
            value = _np(p)
            fd = np.zeros_like(value)
            for idx in np.ndindex(value.shape):
                hi, lo = value.copy(), value.copy()
                hi[idx] += 1e-6
                lo[idx] -= 1e-6
                fd[idx] = (_ce_np(_forward_np(net, x, {p.name: hi}), labels)
                           - _ce_np(_forward_np(net, x, {p.name: lo}), labels)) / 2e-6
            np.testing.assert_allclose(g, fd, rtol=1e-3, atol=1e-3 * np.abs(fd).max(), err_msg=p.name)


def _dataset(tensors, repeat):
    arrays = tuple(np.repeat(t.asnumpy()[None], repeat, 0) for t in tensors)
    return ms.dataset.NumpySlicesDataset(arrays, column_names=[f"c{i}" for i in range(len(arrays))], shuffle=False)


class _LossRecorder(ms.train.Callback):
    def __init__(self):
        super().__init__()
        self.values = []

    def on_train_step_end(self, run_context):
        self.values.append(float(run_context.original_args().net_outputs.asnumpy()))


@pytest.mark.parametrize("exec_mode, dtype, with_ckpt", [
    pytest.param(ms.GRAPH_MODE, ms.float32, True, id="graph-fp32-checkpoint"),
    pytest.param(ms.GRAPH_MODE, ms.float16, False, id="graph-fp16"),
    pytest.param(ms.PYNATIVE_MODE, ms.float32, False, id="pynative-fp32")])
def test_training_lowers_the_loss_and_keeps_weights_bit_identical(tmp_path, exec_mode, dtype, with_ckpt):
    ms.set_context(mode=exec_mode, device_target="CPU")
    try:
        net = TinyEncoder(dtype)
        _, _, inputs = _data(dtype)
        pretrained = str(tmp_path / "pretrained.ckpt")
        ms.save_checkpoint(net, pretrained)
        freeze_delta(net, "bitfit", exclude=["*head*"])
        before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
        optimizer = nn.Adam(net.trainable_params(), learning_rate=0.05, eps=1e-4)
        if with_ckpt:
            losses, cb = _LossRecorder(), TrainableParamsCheckPoint(str(tmp_path / "delta"), prefix="bitfit")
            ms.train.Model(_CE(net), optimizer=optimizer).train(1, _dataset(inputs, 10), callbacks=[losses, cb],
                                                               dataset_sink_mode=False)
            losses = losses.values
        else:
            step = nn.TrainOneStepCell(_CE(net), optimizer)
            step.set_train()
            losses = [float(step(*inputs).asnumpy()) for _ in range(10)]
        assert losses[-1] < 0.7 * losses[0], losses
        for p in net.get_parameters():
            moved = not np.array_equal(before[p.name], p.asnumpy())
            assert moved == (p.name in BITFIT + HEAD), p.name
        if with_ckpt:
            assert sorted(ms.load_checkpoint(cb.latest_ckpt_file_name)) == sorted(BITFIT + HEAD)
            trained = net(inputs[0]).asnumpy()
            fresh = TinyEncoder(dtype, seed=9)
            assert not np.allclose(fresh(inputs[0]).asnumpy(), trained, atol=1e-3)
            report = load_pretrained_and_delta(fresh, pretrained, cb.latest_ckpt_file_name)
            assert report.ok and sorted(report.overridden_keys) == sorted(BITFIT + HEAD)
            np.testing.assert_array_equal(fresh(inputs[0]).asnumpy(), trained)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
