"""Prefix-Tuning (spec section 2): PrefixLayer used as in the spec's example, and PrefixEncoder with
extend_attention_mask on a standard multi-head self-attention."""
import math

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops

from mindpet.delta import PrefixEncoder, PrefixLayer, extend_attention_mask
from mindpet.graph import (TrainableParamsCheckPoint, freeze_delta,
                           load_pretrained_and_delta)

HIDDEN, HEADS, SEQ, BATCH, PREFIX_TOKENS = 8, 2, 3, 2, 4      # spec-example sizes: L = 4 // 2 = 2
HEAD_DIM = HIDDEN // HEADS
TOL = {ms.float32: dict(rtol=1e-4, atol=1e-5), ms.float16: dict(rtol=2e-2, atol=2e-2)}


# ----------------------------------------------------------------------------- numpy references
def _np(t):
    return ops.cast(t, ms.float32).asnumpy().astype(np.float64)


def _dense_np(x, cell):
    return x @ _np(cell.weight).T + _np(cell.bias)


def _softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _attention_np(q, k, v, keep):
    """softmax(q k^T / sqrt(d) + (1 - keep) * -1e4) v; q (B,H,S,D), k/v (B,H,T,D), keep broadcast to (B,H,S,T)."""
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1]) + (1.0 - keep) * -1e4
    return _softmax(scores) @ v


class _LossRecorder(ms.train.Callback):
    def __init__(self):
        super().__init__()
        self.values = []

    def on_train_step_end(self, run_context):
        self.values.append(float(run_context.original_args().net_outputs.asnumpy()))


def _dataset(tensors, repeat):
    """``repeat`` identical batches (each sample is one whole batch)."""
    arrays = tuple(np.repeat(t.asnumpy()[None], repeat, 0) for t in tensors)
    return ms.dataset.NumpySlicesDataset(arrays, column_names=[f"c{i}" for i in range(len(arrays))],
                                         shuffle=False)


def _train(loss_net, optimizer, inputs, steps, ckpt_dir=None):
    """Train ``steps`` steps on ``inputs``; losses before each step, and the last delta checkpoint.

    With ``ckpt_dir``: through ``Model.train`` with ``TrainableParamsCheckPoint`` (the documented flow);
    else with a ``TrainOneStepCell`` (cheaper to compile).
    """
    if ckpt_dir is None:
        step = nn.TrainOneStepCell(loss_net, optimizer)
        step.set_train()
        return [float(step(*inputs).asnumpy()) for _ in range(steps)], None
    losses, ckpt = _LossRecorder(), TrainableParamsCheckPoint(ckpt_dir, prefix="delta")
    ms.train.Model(loss_net, optimizer=optimizer).train(1, _dataset(inputs, steps), callbacks=[losses, ckpt],
                                                        dataset_sink_mode=False)
    return losses.values, ckpt.latest_ckpt_file_name


TRAIN_CASES = [pytest.param(ms.GRAPH_MODE, ms.float32, True, id="graph-fp32-checkpoint"),
               pytest.param(ms.GRAPH_MODE, ms.float16, False, id="graph-fp16"),
               pytest.param(ms.PYNATIVE_MODE, ms.float32, False, id="pynative-fp32")]


@pytest.fixture
def run_mode():
    """Set the execution mode inside the test (for cases that pick mode and dtype together)."""
    yield lambda m: ms.set_context(mode=m, device_target="CPU")
    ms.set_context(mode=ms.GRAPH_MODE)


def _snapshot(net):
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def _assert_fd(grad, loss_of, value, rtol):
    """``grad`` (MindSpore) against central finite differences of the float64 ``loss_of`` at ``value``."""
    fd = np.zeros_like(value)
    eps = 1e-6
    for idx in np.ndindex(value.shape):
        plus, minus = value.copy(), value.copy()
        plus[idx] += eps
        minus[idx] -= eps
        fd[idx] = (loss_of(plus) - loss_of(minus)) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=rtol, atol=rtol * np.abs(fd).max())


class _MaskedMSE(nn.Cell):
    """mean((net(x, mask) - target)^2) in float32; keeps the network's parameter names (no prefix).

    With ``with_output`` it returns (loss, output), for ``value_and_grad(..., has_aux=True)``.
    """

    def __init__(self, net, with_output=False):
        super().__init__(auto_prefix=False)
        self.net = net
        self.with_output = with_output

    def construct(self, x, mask, target):
        out = self.net(x, mask)
        loss = ops.mean((out.astype(ms.float32) - target.astype(ms.float32)) ** 2)
        if self.with_output:
            return loss, out
        return loss


def _forward_and_grads(net, params, inputs):
    """(output, loss, grads of ``params``) from one compiled forward-and-backward."""
    fn = ms.value_and_grad(_MaskedMSE(net, with_output=True), grad_position=None, weights=params, has_aux=True)
    (loss, out), grads = fn(*inputs)
    return _np(out), float(loss.asnumpy()), [_np(g) for g in grads]


# ----------------------------------------------------------------------------- the spec's example (2.3)
class MaskSelfAttention(nn.Cell):
    """The spec's example made runnable, line for line where the spec gives the line.

    Layout: sequence-first, ``x`` (seq, batch, hidden); q, k, v, o projections are the frozen model.
    The spec appends the ``help`` columns at the end of the mask while the prefix sits in front of the
    keys: that is only consistent for an all-ones mask, which is what the test passes.
    """

    def __init__(self, seq_length=SEQ, dtype=ms.float32):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Dense(HIDDEN, HIDDEN, dtype=dtype) for _ in range(4))
        self.prefix = PrefixLayer(prefix_token_num=PREFIX_TOKENS, batch_size=BATCH, num_heads=HEADS,
                                  hidden_dim=HIDDEN, embed_dim=6, mid_dim=5, dropout_rate=0.1,
                                  param_dtype=dtype)
        self.past_key = self.prefix.past_key_reparam
        self.past_value = self.prefix.past_value_reparam
        self.help_matrix = Tensor(np.ones([self.prefix.batch_size, self.prefix.num_heads - 1,
                                           seq_length, seq_length]), dtype)
        self.help = Tensor(np.ones([self.prefix.batch_size, self.prefix.num_heads, seq_length,
                                    self.prefix.prefix_token_num // self.prefix.batch_size]), dtype)
        self.scale = 1.0 / math.sqrt(HEAD_DIM)

    def _heads(self, t):  # (T, B, hidden) -> (B, H, T, D)
        return t.reshape(t.shape[0], t.shape[1], HEADS, HEAD_DIM).transpose(1, 2, 0, 3)

    def construct(self, input_tensor, attention_mask):
        query = self.q(input_tensor)
        key = self.k(input_tensor)
        value = self.v(input_tensor)
        key = ops.concat((self.past_key, key), 0)
        value = ops.concat((self.past_value, value), 0)
        attention_mask = ops.concat((attention_mask, self.help_matrix), 1)
        attention_mask = ops.concat((attention_mask, self.help), -1)
        scores = ops.matmul(self._heads(query), self._heads(key).swapaxes(-1, -2)) * self.scale
        scores = scores + (1.0 - attention_mask) * -10000.0
        ctx = ops.matmul(ops.softmax(scores, -1), self._heads(value))          # (B, H, S, D)
        return self.o(ctx.transpose(2, 0, 1, 3).reshape(input_tensor.shape))


class SpecModel(nn.Cell):
    def __init__(self, dtype=ms.float32):
        super().__init__()
        self.attn = MaskSelfAttention(dtype=dtype)

    def construct(self, x, mask):
        return self.attn(x, mask)


def _spec_np(net, x, pk=None, pv=None):
    """Float64 forward of SpecModel (all-ones mask): attention over [prefix ; tokens] per batch slot."""
    a = net.attn
    pk = _np(a.past_key) if pk is None else pk
    pv = _np(a.past_value) if pv is None else pv
    heads = lambda t: t.reshape(t.shape[0], t.shape[1], HEADS, HEAD_DIM).transpose(1, 2, 0, 3)
    q = heads(_dense_np(x, a.q))
    k = heads(np.concatenate([pk, _dense_np(x, a.k)], 0))
    v = heads(np.concatenate([pv, _dense_np(x, a.v)], 0))
    ctx = _attention_np(q, k, v, 1.0)
    return _dense_np(ctx.transpose(2, 0, 1, 3).reshape(x.shape), a.o)


def _spec_data(dtype, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((SEQ, BATCH, HIDDEN))
    target = rng.standard_normal((SEQ, BATCH, HIDDEN))
    mask = np.ones((BATCH, 1, SEQ, SEQ))
    return x, target, (Tensor(x, dtype), Tensor(mask, dtype), Tensor(target, dtype))


SPEC_PREFIX = ("attn.past_key", "attn.past_value")


@pytest.mark.parametrize("dtype", [ms.float32, ms.float16], ids=["fp32", "fp16"])
def test_spec_example_forward_and_gradients(mode, dtype):
    net = SpecModel(dtype)
    x, target, inputs = _spec_data(dtype)
    assert net.attn.past_key is net.attn.prefix.past_key_reparam          # one Parameter, two attributes
    names = [n for n, _ in net.parameters_and_names()]
    assert names.count("attn.past_key") == 1 and not any("prefix.mindpet" in n for n in names)

    out, _, (gk, gv) = _forward_and_grads(net, [net.attn.past_key, net.attn.past_value], inputs)
    np.testing.assert_allclose(out, _spec_np(net, x), **TOL[dtype])
    assert np.all(np.abs(gk).sum(-1) > 0) and np.all(np.abs(gv).sum(-1) > 0)   # every prefix row learns
    if dtype == ms.float32:
        pk0, pv0 = _np(net.attn.past_key), _np(net.attn.past_value)
        _assert_fd(gk, lambda pk: np.mean((_spec_np(net, x, pk=pk) - target) ** 2), pk0, 1e-3)
        _assert_fd(gv, lambda pv: np.mean((_spec_np(net, x, pv=pv) - target) ** 2), pv0, 1e-3)


@pytest.mark.parametrize("exec_mode, dtype, with_ckpt", TRAIN_CASES)
def test_spec_example_trains_only_the_prefix(run_mode, tmp_path, exec_mode, dtype, with_ckpt):
    run_mode(exec_mode)
    net = SpecModel(dtype)
    _, _, inputs = _spec_data(dtype)
    pretrained = str(tmp_path / "pretrained.ckpt")
    ms.save_checkpoint(net, pretrained)
    # exactly the spec's step 3: the prefix stays trainable although its first path is 'attn.past_key'
    freeze_delta(net, "prefix")
    assert [p.name for p in net.trainable_params()] == list(SPEC_PREFIX)
    before = _snapshot(net)
    optimizer = nn.SGD(net.trainable_params(), learning_rate=5.0, momentum=0.9)
    losses, ckpt = _train(_MaskedMSE(net), optimizer, inputs, steps=8,
                          ckpt_dir=str(tmp_path / "delta") if with_ckpt else None)
    assert losses[-1] < 0.9 * losses[0], losses
    after = _snapshot(net)
    for name, value in before.items():
        assert (not np.array_equal(value, after[name])) == (name in SPEC_PREFIX), name
    if with_ckpt:
        _assert_round_trip(net, lambda: SpecModel(dtype), pretrained, ckpt, SPEC_PREFIX, inputs[:2])


def _assert_round_trip(net, make, pretrained, delta_ckpt, delta_names, inputs):
    """The delta checkpoint holds exactly ``delta_names``; pretrained + delta rebuild the trained net."""
    assert sorted(ms.load_checkpoint(delta_ckpt)) == sorted(delta_names)
    trained = _np(net(*inputs))
    ms.set_seed(123)
    fresh = make()
    assert not np.allclose(_np(fresh(*inputs)), trained, atol=1e-3)
    report = load_pretrained_and_delta(fresh, pretrained, delta_ckpt)
    assert report.ok and sorted(report.overridden_keys) == sorted(delta_names)
    np.testing.assert_array_equal(_np(fresh(*inputs)), trained)


def test_spec_example_freeze_delta_prefix_keeps_prefix_trainable():
    net = SpecModel()
    freeze_delta(net, "prefix")
    assert {p.name for p in net.trainable_params()} == {"attn.past_key", "attn.past_value"}


def test_spec_example_with_delta_attribute_names_freezes_by_mode():
    class Attn(MaskSelfAttention):
        def __init__(self):
            super().__init__()
            self.mindpet_delta_prefixtuning_past_key = self.prefix.past_key_reparam
            self.mindpet_delta_prefixtuning_past_value = self.prefix.past_value_reparam
            del self.past_key, self.past_value

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.attn = Attn()

    net = Net()
    freeze_delta(net, "prefix")
    assert sorted(p.name for p in net.trainable_params()) == [
        "attn.mindpet_delta_prefixtuning_past_key", "attn.mindpet_delta_prefixtuning_past_value"]


def test_prefix_read_in_construct_carries_the_delta_name_and_freezes_by_mode():
    class Attn(nn.Cell):
        def __init__(self):
            super().__init__()
            self.prefix = PrefixLayer(4, 2, 2, 8, 6)
            self.dense = nn.Dense(8, 8)

        def construct(self, x):
            return self.dense(ops.concat((self.prefix.past_key_reparam, x), 0))

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.attn = Attn()

        def construct(self, x):
            return self.attn(x)

    net = Net()
    freeze_delta(net, "prefixtuning")
    assert [p.name for p in net.trainable_params()] == [
        "attn.prefix.mindpet_delta_prefixtuning_past_key", "attn.prefix.mindpet_delta_prefixtuning_past_value"]


# ----------------------------------------------------------------------------- PrefixLayer on its own
def test_prefix_layer_layout_attributes_and_names():
    layer = PrefixLayer(prefix_token_num=10, batch_size=2, num_heads=4, hidden_dim=16, embed_dim=8,
                        mid_dim=12, dropout_rate=0.1)
    assert (layer.prefix_token_num, layer.batch_size, layer.num_heads, layer.hidden_dim, layer.embed_dim,
            layer.mid_dim, layer.dropout_rate, layer.prefix_len, layer.head_dim) == (10, 2, 4, 16, 8, 12, 0.1, 5, 4)
    key, value = layer.past_key_reparam, layer.past_value_reparam
    assert isinstance(key, ms.Parameter) and key.requires_grad and value.requires_grad
    assert key.shape == value.shape == (5, 2, 16) and key.dtype == ms.float32
    assert [n for n, _ in layer.parameters_and_names()] == [
        "mindpet_delta_prefixtuning_past_key", "mindpet_delta_prefixtuning_past_value"]
    k, v = _np(key), _np(value)
    assert np.all(np.isfinite(k)) and k.std() > 1e-3 and v.std() > 1e-3 and not np.allclose(k, v)
    assert PrefixLayer(4, 2, 2, 8, 6, param_dtype=ms.float16).past_value_reparam.dtype == ms.float16


def test_prefix_layer_init_follows_mindspore_seed():
    ms.set_seed(7)
    a = PrefixLayer(4, 2, 2, 8, 6, mid_dim=5)
    ms.set_seed(7)
    b = PrefixLayer(4, 2, 2, 8, 6, mid_dim=5)
    np.testing.assert_array_equal(a.past_key_reparam.asnumpy(), b.past_key_reparam.asnumpy())


def test_prefix_layer_call_applies_dropout_only_in_training(mode):
    layer = PrefixLayer(8, 2, 2, 64, 6, mid_dim=5, dropout_rate=0.5)
    key = _np(layer.past_key_reparam)
    layer.set_train(False)
    k_eval, v_eval = layer()
    np.testing.assert_array_equal(_np(k_eval), key)
    layer.set_train(True)
    k_train, _ = layer()
    k_train = _np(k_train)
    dropped = k_train == 0
    assert 0.3 < dropped.mean() < 0.7
    np.testing.assert_allclose(k_train[~dropped], 2.0 * key[~dropped], rtol=1e-6)


GOOD = dict(prefix_token_num=4, batch_size=2, num_heads=2, hidden_dim=8, embed_dim=6, mid_dim=5, dropout_rate=0.1)
INT_ARGS = ["prefix_token_num", "batch_size", "num_heads", "hidden_dim", "embed_dim", "mid_dim"]


@pytest.mark.parametrize("arg", INT_ARGS)
@pytest.mark.parametrize("value", [0, -2, 2.0, "4", True, None], ids=["zero", "neg", "float", "str", "bool", "none"])
def test_prefix_layer_non_positive_int_is_type_error(arg, value):
    with pytest.raises(TypeError, match=f"'{arg}'"):
        PrefixLayer(**dict(GOOD, **{arg: value}))


@pytest.mark.parametrize("kwargs, exc, arg", [
    (dict(prefix_token_num=5), ValueError, "prefix_token_num"),
    (dict(prefix_token_num=2, batch_size=4), ValueError, "prefix_token_num"),
    (dict(hidden_dim=9), ValueError, "hidden_dim"),
    (dict(dropout_rate=1.0), ValueError, "dropout_rate"),
    (dict(dropout_rate=-0.1), ValueError, "dropout_rate"),
    (dict(dropout_rate="0.1"), TypeError, "dropout_rate"),
    (dict(dropout_rate=False), TypeError, "dropout_rate"),
    (dict(param_dtype=ms.int32), TypeError, "param_dtype"),
])
def test_prefix_layer_bad_arguments(kwargs, exc, arg):
    with pytest.raises(exc, match=f"'{arg}'"):
        PrefixLayer(**dict(GOOD, **kwargs))


def test_prefix_layer_documented_import_path_and_edge_values():
    from tk.delta.prefix_layer import PrefixLayer as Alias
    assert Alias is PrefixLayer
    assert PrefixLayer(1, 1, 1, 1, 1, mid_dim=1, dropout_rate=0).past_key_reparam.shape == (1, 1, 1)


# ----------------------------------------------------------------------------- PrefixEncoder + attention
class PrefixSelfAttention(nn.Cell):
    """Standard batch-first multi-head self-attention with a residual, taking one layer's prefix."""

    def __init__(self, dtype):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Dense(HIDDEN, HIDDEN, dtype=dtype) for _ in range(4))
        self.scale = 1.0 / math.sqrt(HEAD_DIM)

    def _heads(self, t):  # (B, T, hidden) -> (B, H, T, D)
        return t.reshape(t.shape[0], t.shape[1], HEADS, HEAD_DIM).transpose(0, 2, 1, 3)

    def construct(self, x, keep, prefix_key, prefix_value):
        k = ops.concat((prefix_key, self._heads(self.k(x))), 2)
        v = ops.concat((prefix_value, self._heads(self.v(x))), 2)
        scores = ops.matmul(self._heads(self.q(x)), k.swapaxes(-1, -2)) * self.scale
        scores = scores + (1.0 - keep) * -10000.0
        ctx = ops.matmul(ops.softmax(scores, -1), v).transpose(0, 2, 1, 3).reshape(x.shape)
        return x + self.o(ctx)


class TinyPrefixModel(nn.Cell):
    """Two frozen attention layers; one PrefixEncoder feeds both; padding mask (batch, seq)."""

    def __init__(self, dtype=ms.float32, layers=2, prefix_len=2, reparameterize=True):
        super().__init__()
        self.layers = nn.CellList([PrefixSelfAttention(dtype) for _ in range(layers)])
        self.prefix_encoder = PrefixEncoder(layers, HEADS, HEAD_DIM, prefix_len, mid_dim=5, embed_dim=6,
                                            reparameterize=reparameterize, param_dtype=dtype)
        self.num_layers, self.prefix_len = layers, prefix_len

    def construct(self, x, mask):
        prefixes = self.prefix_encoder(x.shape[0])
        keep = extend_attention_mask(mask, self.prefix_len).astype(x.dtype)
        keep = keep.reshape(keep.shape[0], 1, 1, keep.shape[1])
        for i in range(self.num_layers):
            x = self.layers[i](x, keep, prefixes[i][0], prefixes[i][1])
        return x


def _encoder_np(enc, over=None):
    """(layers, 2, H, L, D) from the encoder's parameters (``over`` replaces some, by short name)."""
    p = {n.split("prefixtuning_")[-1]: _np(v) for n, v in enc.parameters_and_names()}
    p.update(over or {})
    if enc.reparameterize:
        flat = np.tanh(p["embedding"] @ p["mlp.0.weight"].T + p["mlp.0.bias"]) @ p["mlp.2.weight"].T + p["mlp.2.bias"]
    else:
        flat = p["past_key_values"]
    return flat.reshape(enc.prefix_len, enc.num_layers, 2, enc.num_heads, enc.head_dim).transpose(1, 2, 3, 0, 4)


def _model_np(net, x, mask, over=None):
    kv = _encoder_np(net.prefix_encoder, over)
    batch = x.shape[0]
    keep = np.concatenate([np.ones((batch, net.prefix_len)), mask], 1)[:, None, None, :]
    heads = lambda t: t.reshape(t.shape[0], t.shape[1], HEADS, HEAD_DIM).transpose(0, 2, 1, 3)
    for i, layer in enumerate(net.layers):
        pk = np.broadcast_to(kv[i, 0], (batch,) + kv.shape[2:])
        pv = np.broadcast_to(kv[i, 1], (batch,) + kv.shape[2:])
        k = np.concatenate([pk, heads(_dense_np(x, layer.k))], 2)
        v = np.concatenate([pv, heads(_dense_np(x, layer.v))], 2)
        ctx = _attention_np(heads(_dense_np(x, layer.q)), k, v, keep)
        x = x + _dense_np(ctx.transpose(0, 2, 1, 3).reshape(x.shape), layer.o)
    return x


def _block_data(dtype, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, SEQ + 1, HIDDEN))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.float64)           # second example padded
    target = rng.standard_normal(x.shape)
    return x, mask, target, (Tensor(x, dtype), Tensor(mask, ms.int32), Tensor(target, dtype))


@pytest.mark.parametrize("dtype", [ms.float32, ms.float16], ids=["fp32", "fp16"])
def test_prefix_encoder_attention_forward_and_gradients(mode, dtype):
    net = TinyPrefixModel(dtype, layers=2 if dtype == ms.float32 else 1)
    x, mask, target, inputs = _block_data(dtype)
    result = freeze_delta(net, "prefixtuning")
    enc_names = [n for n, _ in net.prefix_encoder.parameters_and_names()]
    trainable = net.trainable_params()
    assert [p.name for p in trainable] == ["prefix_encoder." + n for n in enc_names]
    assert all("mindpet_delta_prefixtuning" in p.name for p in trainable)
    assert len(result.frozen) == 8 * net.num_layers                 # q, k, v, o weights and biases

    out, _, grads = _forward_and_grads(net, trainable, inputs)
    np.testing.assert_allclose(out, _model_np(net, x, mask), **TOL[dtype])
    for p, g in zip(trainable, grads):
        assert np.abs(g).max() > 0, p.name
    if dtype == ms.float32:
        for p, g in zip(trainable, grads):
            short = p.name.split("prefixtuning_")[-1]
            loss_of = lambda v, s=short: np.mean((_model_np(net, x, mask, {s: v}) - target) ** 2)
            _assert_fd(g, loss_of, _np(p), 2e-3)


@pytest.mark.parametrize("exec_mode, dtype, with_ckpt", TRAIN_CASES[:2])
def test_prefix_encoder_trains_only_the_prefix(run_mode, tmp_path, exec_mode, dtype, with_ckpt):
    run_mode(exec_mode)
    net = TinyPrefixModel(dtype, layers=1)
    _, _, _, inputs = _block_data(dtype)
    pretrained = str(tmp_path / "pretrained.ckpt")
    ms.save_checkpoint(net, pretrained)
    freeze_delta(net, "prefix")
    delta = [p.name for p in net.trainable_params()]
    before = _snapshot(net)
    optimizer = nn.SGD(net.trainable_params(), learning_rate=0.5, momentum=0.9)
    losses, ckpt = _train(_MaskedMSE(net), optimizer, inputs, steps=8,
                          ckpt_dir=str(tmp_path / "delta") if with_ckpt else None)
    assert losses[-1] < 0.9 * losses[0], losses
    after = _snapshot(net)
    for name, value in before.items():
        assert (not np.array_equal(value, after[name])) == (name in delta), name
    if with_ckpt:
        _assert_round_trip(net, lambda: TinyPrefixModel(dtype, layers=1), pretrained, ckpt, delta, inputs[:2])


def test_prefix_encoder_shapes_and_direct_parameters(mode):
    enc = PrefixEncoder(num_layers=3, num_heads=2, head_dim=4, prefix_len=5, mid_dim=7, reparameterize=False)
    assert [n for n, _ in enc.parameters_and_names()] == ["mindpet_delta_prefixtuning_past_key_values"]
    out = enc(3)
    assert len(out) == 3 and all(len(pair) == 2 for pair in out)
    kv = _encoder_np(enc)
    for i, (k, v) in enumerate(out):
        assert k.shape == v.shape == (3, 2, 5, 4)
        for b in range(3):
            np.testing.assert_allclose(_np(k)[b], kv[i, 0], rtol=1e-6)
            np.testing.assert_allclose(_np(v)[b], kv[i, 1], rtol=1e-6)
    enc = PrefixEncoder(2, 2, 4, 3)
    assert enc.embed_dim == 8 and enc.mid_dim == 512
    assert enc.mindpet_delta_prefixtuning_mlp[2].weight.shape == (2 * 2 * 2 * 4, 512)


@pytest.mark.parametrize("kwargs, exc, arg", [
    (dict(num_layers=0), TypeError, "num_layers"),
    (dict(num_heads=1.0), TypeError, "num_heads"),
    (dict(head_dim=True), TypeError, "head_dim"),
    (dict(prefix_len=-1), TypeError, "prefix_len"),
    (dict(mid_dim="8"), TypeError, "mid_dim"),
    (dict(embed_dim=0), TypeError, "embed_dim"),
    (dict(dropout_rate=1.5), ValueError, "dropout_rate"),
    (dict(reparameterize=1), TypeError, "reparameterize"),
    (dict(param_dtype="float32"), TypeError, "param_dtype"),
])
def test_prefix_encoder_bad_arguments(kwargs, exc, arg):
    good = dict(num_layers=1, num_heads=2, head_dim=4, prefix_len=3)
    with pytest.raises(exc, match=f"'{arg}'"):
        PrefixEncoder(**dict(good, **kwargs))


def test_extend_attention_mask(mode):
    keep = Tensor(np.array([[1, 0, 0]], np.bool_))
    out = extend_attention_mask(keep, 2)
    assert out.dtype == ms.bool_
    np.testing.assert_array_equal(out.asnumpy(), [[True, True, True, False, False]])
    m4 = np.random.default_rng(0).random((2, 1, 3, 3)).astype(np.float32)
    out = extend_attention_mask(Tensor(m4), 2).asnumpy()
    assert out.shape == (2, 1, 3, 5)
    np.testing.assert_array_equal(out[..., :2], 1.0)
    np.testing.assert_array_equal(out[..., 2:], m4)
    additive = extend_attention_mask(Tensor(np.full((1, 2), -1e4, np.float32)), 1, keep_value=0).asnumpy()
    np.testing.assert_array_equal(additive, [[0.0, -1e4, -1e4]])
    assert extend_attention_mask(keep, 0) is keep


@pytest.mark.parametrize("args, exc, arg", [
    ((np.ones((2, 3)), 1), TypeError, "mask"),
    ((Tensor(np.ones((2, 3), np.float32)), -1), ValueError, "prefix_len"),
    ((Tensor(np.ones((2, 3), np.float32)), 1.0), TypeError, "prefix_len"),
    ((Tensor(np.ones((2, 3), np.float32)), True), TypeError, "prefix_len"),
    ((Tensor(1.0), 1), ValueError, "mask"),
])
def test_extend_attention_mask_bad_arguments(args, exc, arg):
    with pytest.raises(exc, match=f"'{arg}'"):
        extend_attention_mask(*args)
