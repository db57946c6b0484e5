"""R-Drop (spec section 6): rdrop_repeat and RDropLoss against float64 numpy, gradients, training, errors."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops

from mindpet.delta import LoRADense, RDropLoss, rdrop_repeat
from eager_recovery import assert_an_unrelated_pynative_step_trains
from range_errors import raises_compiled_range_error, raises_range_error


def _np(t):
    return ops.cast(t, ms.float32).asnumpy().astype(np.float64)


def _reference(logits, labels, alpha):
    """CE over the 2N rows + alpha/(4N) * sum_i [KL(p_2i||p_2i+1) + KL(p_2i+1||p_2i)], float64."""
    z = np.asarray(logits, np.float64)
    log_p = z - z.max(-1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
    labels = np.asarray(labels)
    target = np.eye(z.shape[1])[labels.reshape(-1)] if labels.dtype.kind == "i" else labels.astype(np.float64)
    ce = -(target * log_p).sum(-1).mean()
    p, q = np.exp(log_p[0::2]), np.exp(log_p[1::2])
    kl_pq = (p * (np.log(p) - np.log(q))).sum(-1)
    kl_qp = (q * (np.log(q) - np.log(p))).sum(-1)
    return ce + alpha * ((kl_pq + kl_qp) / 2).mean() / 2


@pytest.fixture
def pynative():
    """Run in PYNATIVE mode only (value checks whose GRAPH counterpart is covered elsewhere: saves compiles)."""
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


def _data(rows=6, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((rows, classes)).astype(np.float32) * 2
    labels = np.repeat(rng.integers(0, classes, rows // 2), 2).astype(np.int32)
    probs = rng.random((rows, classes)).astype(np.float32)
    return logits, labels, probs / probs.sum(-1, keepdims=True)


# ----------------------------------------------------------------------------- rdrop_repeat
class SpecBertCls(nn.Cell):
    """The spec's example (6.3): repeat the inputs, run the model, RDropLoss with alpha=4."""

    def __init__(self, vocab=11, hidden=8, classes=3, dropout=0.3):
        super().__init__()
        table = np.random.default_rng(4).standard_normal((vocab, hidden)).astype(np.float32)
        self.embed = nn.Embedding(vocab, hidden, embedding_table=Tensor(table))
        self.drop = nn.Dropout(p=dropout)
        self.head = nn.Dense(hidden, classes)
        self.loss = RDropLoss()
        self.is_training = True

    def bert(self, input_ids, input_mask, token_type_id):
        h = self.embed(input_ids + token_type_id) * input_mask.astype(ms.float32).expand_dims(-1)
        return self.head(self.drop(h.sum(1) / input_mask.astype(ms.float32).sum(1, keepdims=True)))

    def construct(self, input_ids, input_mask, token_type_id, label_ids):
        input_ids, input_mask, token_type_id, label_ids = rdrop_repeat(input_ids, input_mask, token_type_id,
                                                                       label_ids)
        logits = self.bert(input_ids, input_mask, token_type_id)
        if self.is_training:
            return self.loss(logits, label_ids, alpha=4)
        return logits


def _cls_data(batch=8, seq=5, vocab=11, classes=3, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab - 1, (batch, seq)).astype(np.int32)
    mask = np.ones((batch, seq), np.int32)
    mask[::2, 3:] = 0
    types = np.zeros((batch, seq), np.int32)
    labels = (ids[:, 0] % classes).astype(np.int32)
    return ids, mask, types, labels


def test_rdrop_repeat_duplicates_rows_of_every_input(mode):
    arrays = [np.arange(3, dtype=np.int32), np.arange(12, dtype=np.float32).reshape(3, 4),
              np.random.default_rng(0).random((3, 2, 2)).astype(np.float16), np.array([[True], [False], [True]])]
    out = rdrop_repeat(*(Tensor(a) for a in arrays))
    assert isinstance(out, tuple) and len(out) == 4
    for a, t in zip(arrays, out):
        assert t.dtype == Tensor(a).dtype and t.shape == (6,) + a.shape[1:]
        np.testing.assert_array_equal(t.asnumpy()[0::2], a)
        np.testing.assert_array_equal(t.asnumpy()[1::2], a)
    single = rdrop_repeat(Tensor(arrays[1]))
    assert isinstance(single, tuple) and len(single) == 1


def test_rdrop_repeat_inside_construct_gives_pairs(mode):
    class Net(nn.Cell):
        def construct(self, a, b):
            a, b = rdrop_repeat(a, b)
            return a * 10 + b

    a, b = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), np.array([[5.0], [6.0]], np.float32)
    np.testing.assert_array_equal(Net()(Tensor(a), Tensor(b)).asnumpy(), np.repeat(a * 10 + b, 2, 0))


@pytest.mark.parametrize("args, exc, match", [
    ((), ValueError, "at least one"),
    ((np.ones(3),), TypeError, "Tensor"),
    ((Tensor(np.ones(3)), [1, 2]), TypeError, "Tensor"),
    ((Tensor(1.0),), ValueError, "rank"),
])
def test_rdrop_repeat_bad_inputs(args, exc, match):
    with pytest.raises(exc, match=match):
        rdrop_repeat(*args)


# ----------------------------------------------------------------------------- RDropLoss values
@pytest.mark.parametrize("label_kind, alpha, dtype", [
    ("int32", None, ms.float32), ("int32_col", 0.5, ms.float32), ("int64", 0, ms.float32),
    ("probs", 2.5, ms.float32), ("int32", 3, ms.float16), ("probs", None, ms.float16)],
    ids=["int32-default-fp32", "int32col-0.5-fp32", "int64-0-fp32", "probs-2.5-fp32", "int32-3-fp16",
         "probs-default-fp16"])
def test_loss_matches_float64_reference(mode, label_kind, alpha, dtype):
    logits, labels, probs = _data()
    if label_kind == "probs":
        labels = probs
    label_t = {"int32": Tensor(labels), "int32_col": Tensor(labels.reshape(-1, 1)),
               "int64": Tensor(labels.astype(np.int64)), "probs": Tensor(probs, dtype)}[label_kind]
    loss_fn = RDropLoss()
    out = loss_fn(Tensor(logits, dtype), label_t) if alpha is None else loss_fn(Tensor(logits, dtype), label_t, alpha)
    assert out.shape == () and out.dtype == dtype
    z, tol = logits, dict(rtol=1e-5, atol=1e-6)
    if dtype == ms.float16:
        z, tol = logits.astype(np.float16), dict(rtol=3e-3, atol=3e-3)
    np.testing.assert_allclose(_np(out), _reference(z, labels, 4 if alpha is None else alpha), **tol)


def test_loss_parts_ce_log_probability_inputs_and_identical_pairs(pynative):
    logits, labels, _ = _data()
    loss_fn = RDropLoss()
    ce = float(nn.CrossEntropyLoss()(Tensor(logits), Tensor(labels)).asnumpy())
    assert float(loss_fn(Tensor(logits), Tensor(labels), 0).asnumpy()) == pytest.approx(ce, rel=1e-6)
    # log-probabilities (what the spec asks for) give the same loss as the raw scores
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(_np(loss_fn(Tensor(log_p), Tensor(labels), 3.0)),
                               _np(loss_fn(Tensor(logits), Tensor(labels), 3.0)), rtol=1e-5)
    # identical passes: no KL, whatever alpha
    same = np.repeat(logits[0::2], 2, 0)
    np.testing.assert_allclose(_np(loss_fn(Tensor(same), Tensor(labels), 100)),
                               _reference(same, labels, 0), rtol=1e-5)
    # the KL term grows with alpha and is batch-size independent: duplicating the batch changes nothing
    twice, labels2 = np.concatenate([logits, logits]), np.concatenate([labels, labels])
    np.testing.assert_allclose(_np(loss_fn(Tensor(twice), Tensor(labels2), 4)),
                               _np(loss_fn(Tensor(logits), Tensor(labels), 4)), rtol=1e-5)


class _AlphaLoss(nn.Cell):
    def __init__(self, alpha):
        super().__init__()
        self.loss, self.alpha = RDropLoss(), alpha

    def construct(self, z, y):
        return self.loss(z, y, alpha=self.alpha)


@pytest.mark.parametrize("probs", [False, True], ids=["indices", "probabilities"])
def test_gradient_matches_finite_differences(mode, probs):
    logits, labels, p = _data(rows=4, classes=3, seed=2)
    target = p if probs else labels
    alpha = 2.5
    grad = ms.grad(_AlphaLoss(alpha), grad_position=0)(Tensor(logits), Tensor(target))
    grad = _np(grad)
    assert np.all(np.abs(grad).sum(-1) > 0)
    fd = np.zeros(logits.shape)
    z = logits.astype(np.float64)
    for idx in np.ndindex(z.shape):
        hi, lo = z.copy(), z.copy()
        hi[idx] += 1e-6
        lo[idx] -= 1e-6
        fd[idx] = (_reference(hi, target, alpha) - _reference(lo, target, alpha)) / 2e-6
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("alpha", [True, "4", None, [4], Tensor(4.0)], ids=["bool", "str", "none", "list", "tensor"])
def test_alpha_not_int_or_float_is_type_error(pynative, alpha):
    logits, labels, _ = _data()
    with pytest.raises(TypeError, match="'alpha'"):
        RDropLoss()(Tensor(logits), Tensor(labels), alpha)


def test_bad_alpha_inside_a_network(mode):
    logits, labels, _ = _data()
    with pytest.raises(TypeError, match="'alpha'"):
        _AlphaLoss(False)(Tensor(logits), Tensor(labels))
    with pytest.raises(ValueError, match="'alpha'"):
        _AlphaLoss(-1.0)(Tensor(logits), Tensor(labels))


@pytest.mark.parametrize("logits, labels, exc, match", [
    (np.ones((4, 3), np.int32), np.zeros(4, np.int32), TypeError, "'logits'"),
    (np.ones((3, 3), np.float32), np.zeros(3, np.int32), ValueError, "'logits'"),
    (np.ones((4,), np.float32), np.zeros(4, np.int32), ValueError, "'logits'"),
    (np.ones((4, 3), np.float32), np.zeros(4, np.bool_), TypeError, "'label_ids'"),
    (np.ones((4, 3), np.float32), np.zeros(2, np.int32), ValueError, "'label_ids'"),
    (np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32), ValueError, "'label_ids'"),
])
def test_bad_logits_or_labels(mode, logits, labels, exc, match):
    with pytest.raises(exc, match=match):
        RDropLoss()(Tensor(logits), Tensor(labels))


@pytest.mark.parametrize("bad_label", [-1, 3])
def test_out_of_range_label_raises_in_a_training_step(mode, bad_label):
    """Checked on the values in both modes, also inside a compiled training step (forward and backward)."""
    ids, mask, types, labels = _cls_data()
    labels[5] = bad_label
    net = SpecBertCls()
    step = nn.TrainOneStepCell(net, nn.SGD(net.trainable_params(), learning_rate=0.1))
    step.set_train()
    before = [p.asnumpy().copy() for p in net.trainable_params()]
    with raises_range_error(mode, r"'label_ids' must be in \[0, 3\)"):
        step(Tensor(ids), Tensor(mask), Tensor(types), Tensor(labels)).asnumpy()
    for old, p in zip(before, net.trainable_params()):
        np.testing.assert_array_equal(old, p.asnumpy())    # the step stopped before the update


def test_check_labels_false_skips_the_range_check(mode):
    logits = Tensor(np.zeros((2, 3), np.float32))
    loss = RDropLoss(check_labels=False)(logits, Tensor(np.array([3, 3], np.int32)), 4)
    assert float(loss.asnumpy()) == 0.0  # the out-of-range rows drop out of the cross-entropy: what the check prevents
    with pytest.raises(TypeError, match="'check_labels'"):
        RDropLoss(check_labels="yes")


def test_documented_import_paths():
    from tk.delta import RDropLoss as a, rdrop_repeat as b
    from tk.delta.r_drop import RDropLoss as c
    assert a is RDropLoss and c is RDropLoss and b is rdrop_repeat


# ----------------------------------------------------------------------------- training
def _pair_kl(net, inputs):
    """Mean symmetric KL between the two dropout passes of each example (training mode)."""
    net.is_training = False
    logits = _np(net(*inputs))
    net.is_training = True
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    p, q = np.exp(log_p[0::2]), np.exp(log_p[1::2])
    return float(((p - q) * (log_p[0::2] - log_p[1::2])).sum(-1).mean() / 2)


def _eval_loss(net, inputs):
    """The R-Drop loss without dropout: both passes agree, so this is the cross-entropy."""
    net.set_train(False)
    loss = float(net(*inputs).asnumpy())
    net.set_train(True)
    return loss


@pytest.mark.parametrize("dtype", [ms.float32, ms.float16], ids=["fp32", "fp16"])
def test_spec_example_trains(mode, dtype):
    data = [Tensor(a) for a in _cls_data()]
    net = SpecBertCls()
    net.to_float(dtype)
    step = nn.TrainOneStepCell(net, nn.Adam(net.trainable_params(), learning_rate=0.05, eps=1e-4))
    step.set_train()
    assert _pair_kl(net, data) > 1e-3                       # dropout makes the two passes differ
    before = _eval_loss(net, data)
    losses = [float(step(*data).asnumpy()) for _ in range(12)]
    assert np.all(np.isfinite(losses))
    assert _eval_loss(net, data) < 0.7 * before, (before, losses)


class _FusedLoraCls(nn.Cell):
    """A LoRADense on the fused CPU kernels (ops.Custom) under RDropLoss, in one compiled step."""

    def __init__(self):
        super().__init__()
        self.dense = LoRADense(8, 3, lora_rank=2, lora_alpha=4, lora_dropout=0.0, backend="fused")
        self.loss = RDropLoss()

    def construct(self, x, labels):
        return self.loss(self.dense(x), labels, 4)


def test_range_check_compiles_beside_fused_custom_ops():
    """Regression: the compiled range check once made GRAPH mode fail to compile ops.Custom kernels
    ("The prim is not a PrimitivePy") in the same training step."""
    ms.set_context(mode=ms.GRAPH_MODE)
    net = _FusedLoraCls()
    step = nn.TrainOneStepCell(net, nn.SGD(net.trainable_params(), learning_rate=0.1))
    step.set_train()
    x = Tensor(np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32))
    labels = Tensor(np.array([0, 1, 2, 0], np.int32))
    losses = [float(step(x, labels).asnumpy()) for _ in range(3)]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    bad = _FusedLoraCls()
    bad_step = nn.TrainOneStepCell(bad, nn.SGD(bad.trainable_params(), learning_rate=0.1))
    bad_step.set_train()
    with raises_compiled_range_error():
        bad_step(x, Tensor(np.array([0, 1, 5, 0], np.int32))).asnumpy()


def test_pynative_training_works_after_the_range_error(pynative):
    """Regression: the eager ValueError escaping a PYNATIVE training step once left MindSpore's grad
    executor half-recorded, and a later, unrelated training step failed ("For LayerNormGrad, the index 7
    is out of range of input num 7")."""
    ids, mask, types, labels = _cls_data()
    labels[0] = 7
    net = SpecBertCls()
    step = nn.TrainOneStepCell(net, nn.SGD(net.trainable_params(), learning_rate=0.1))
    step.set_train()
    with pytest.raises(ValueError, match="'label_ids'"):
        step(Tensor(ids), Tensor(mask), Tensor(types), Tensor(labels))
    assert_an_unrelated_pynative_step_trains()
