"""P-Tuning v2 ``mindpet.delta.ptuning2.PrefixEncoder`` (the mindpet 1.0.4 API mindformers' ChatGLM2 uses)
and ``mindpet.utils.version_control.get_dropout``: values against a float64 numpy reference, shapes,
dtypes, argument errors, gradients, a training loop, freezing and checkpoint names."""
import enum

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops

from mindpet.delta import PrefixEncoder as PrefixTuningEncoder
from mindpet.delta.ptuning2 import PrefixEncoder
from mindpet.graph import freeze_delta
from mindpet.utils import version_control
from mindpet.utils.version_control import get_dropout

# pre_seq_len, num_layers, num_heads, kv_channels, projection_dim
SIZES = (3, 2, 2, 4, 5)
BATCH = 2


def _np(t):
    return ops.cast(t, ms.float32).asnumpy().astype(np.float64)


def _encoder(prefix_projection, dropout_prob=0.0, sizes=SIZES, **kwargs):
    pre_seq_len, layers, heads, kv, proj = sizes
    return PrefixEncoder(pre_seq_len, layers, heads, kv, prefix_projection, proj, dropout_prob, **kwargs)


def _flat_reference(enc):
    """P (pre_seq_len, D) in float64: the embedding, or tanh(E W1^T + b1) W2^T + b2."""
    table = _np(enc.mindpet_delta_ptuning2_embedding.embedding_table)
    if not enc.prefix_projection:
        return table
    d_in, d_out = enc.mindpet_delta_ptuning2_dense_in, enc.mindpet_delta_ptuning2_dense_out
    hidden = np.tanh(table @ _np(d_in.weight).T + _np(d_in.bias))
    return hidden @ _np(d_out.weight).T + _np(d_out.bias)


def _split_reference(flat, batch, layers, heads, kv):
    """Layer i -> (2, batch, heads, pre_seq_len, kv), by the documented column rule (index arithmetic)."""
    out = []
    for layer in range(layers):
        block = np.empty((2, batch, heads, flat.shape[0], kv))
        for which in range(2):
            for head in range(heads):
                start = ((layer * 2 + which) * heads + head) * kv
                block[which, :, head] = flat[:, start:start + kv]  # broadcast over the batch
        out.append(block)
    return out


# ----------------------------------------------------------------------------- forward values, shapes, dtypes
@pytest.mark.parametrize("prefix_projection", [False, True], ids=["embedding", "mlp"])
@pytest.mark.parametrize("dtype", [ms.float32, ms.float16])
def test_values_against_numpy(mode, prefix_projection, dtype):
    enc = _encoder(prefix_projection)
    if not prefix_projection:  # N(0, 0.01^2) init: scale up so the float16 check is not trivially small
        table = enc.mindpet_delta_ptuning2_embedding.embedding_table
        table.set_data(Tensor(np.random.randn(*table.shape).astype(np.float32)))
    out = enc(BATCH, dtype)
    pre_seq_len, layers, heads, kv, _ = SIZES
    want = _split_reference(_flat_reference(enc), BATCH, layers, heads, kv)
    assert isinstance(out, tuple) and len(out) == layers
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == ms.float32 else dict(rtol=2e-3, atol=2e-3)
    for got, ref in zip(out, want):
        assert got.shape == (2, BATCH, heads, pre_seq_len, kv)
        assert got.dtype == dtype
        np.testing.assert_allclose(_np(got), ref, **tol)


def test_default_dtype_is_float16_and_shapes_follow_arguments(mode):
    enc = PrefixEncoder(4, 3, 1, 2, False, 8, 0.0)
    out = enc(5)
    assert len(out) == 3
    assert all(o.shape == (2, 5, 1, 4, 2) and o.dtype == ms.float16 for o in out)


def test_param_dtype_float16(mode):
    enc = _encoder(True, param_dtype=ms.float16)
    assert all(p.dtype == ms.float16 for p in enc.get_parameters())
    out = enc(BATCH, ms.float32)
    want = _split_reference(_flat_reference(enc), BATCH, *SIZES[1:4])
    np.testing.assert_allclose(_np(out[1]), want[1], rtol=2e-2, atol=2e-3)


def test_same_layout_as_prefix_tuning_encoder(mode):
    """Layer i of P-Tuning v2 = the (key, value) pair i of mindpet.delta.PrefixEncoder for the same flat P."""
    pre_seq_len, layers, heads, kv, _ = SIZES
    ours = _encoder(False)
    theirs = PrefixTuningEncoder(layers, heads, kv, pre_seq_len, reparameterize=False)
    theirs.mindpet_delta_prefixtuning_past_key_values.set_data(
        ours.mindpet_delta_ptuning2_embedding.embedding_table.value())
    out, pairs = ours(BATCH, ms.float32), theirs(BATCH)
    for layer in range(layers):
        np.testing.assert_array_equal(out[layer][0].asnumpy(), pairs[layer][0].asnumpy())
        np.testing.assert_array_equal(out[layer][1].asnumpy(), pairs[layer][1].asnumpy())


# ----------------------------------------------------------------------------- dropout
def test_dropout_in_training_only_and_per_batch_element(mode):
    enc = PrefixEncoder(8, 1, 2, 16, False, None, 0.5)
    table = enc.mindpet_delta_ptuning2_embedding.embedding_table
    table.set_data(ops.ones(table.shape, ms.float32))
    enc.set_train(False)
    np.testing.assert_array_equal(enc(2, ms.float32)[0].asnumpy(), np.ones((2, 2, 2, 8, 16)))
    enc.set_train(True)
    got = enc(2, ms.float32)[0].asnumpy()
    assert set(np.unique(got)) <= {0.0, 2.0}                # kept values scaled by 1 / (1 - p)
    assert 0.3 < (got == 0).mean() < 0.7                   # 512 elements at p = 0.5
    assert (got[:, 0] != got[:, 1]).any()                   # each example draws its own mask (as 1.0.4)


# ----------------------------------------------------------------------------- errors
GOOD = dict(pre_seq_len=3, num_layers=2, num_heads=2, kv_channels=4, prefix_projection=True,
            projection_dim=5, dropout_prob=0.1)


@pytest.mark.parametrize("name, value, error", [
    ("pre_seq_len", 0, ValueError), ("pre_seq_len", 2.0, TypeError), ("pre_seq_len", True, TypeError),
    ("num_layers", -1, ValueError), ("num_layers", "2", TypeError),
    ("num_heads", 0, ValueError), ("num_heads", None, TypeError),
    ("kv_channels", 0, ValueError), ("kv_channels", 4.0, TypeError),
    ("prefix_projection", 1, TypeError), ("prefix_projection", None, TypeError),
    ("projection_dim", 0, ValueError), ("projection_dim", None, TypeError), ("projection_dim", 5.0, TypeError),
    ("dropout_prob", 1.0, ValueError), ("dropout_prob", -0.1, ValueError), ("dropout_prob", "0.1", TypeError),
    ("dropout_prob", True, TypeError),
])
def test_argument_errors_name_the_argument(name, value, error):
    with pytest.raises(error, match=f"'{name}'"):
        PrefixEncoder(**dict(GOOD, **{name: value}))


def test_projection_dim_ignored_without_projection():
    enc = PrefixEncoder(**dict(GOOD, prefix_projection=False, projection_dim=None))
    assert [n for n, _ in enc.parameters_and_names()] == ["mindpet_delta_ptuning2_embedding.embedding_table"]


def test_param_dtype_error():
    with pytest.raises(TypeError, match="'param_dtype'"):
        PrefixEncoder(**GOOD, param_dtype=ms.int32)


@pytest.mark.parametrize("batch_size, dtype, error, name", [
    (0, ms.float16, ValueError, "batch_size"), (-2, ms.float16, ValueError, "batch_size"),
    (2.0, ms.float16, TypeError, "batch_size"), (True, ms.float16, TypeError, "batch_size"),
    (2, ms.int32, TypeError, "dtype"),
])
def test_input_errors_name_the_input(mode, batch_size, dtype, error, name):
    enc = PrefixEncoder(**GOOD)
    with pytest.raises(error, match=f"'{name}'"):
        enc(batch_size, dtype)


# ----------------------------------------------------------------------------- gradients, training, freezing
class _Weighted(nn.Cell):
    """loss = sum_i sum(out_i * R_i): dloss/dout_i = R_i."""

    def __init__(self, enc, weights):
        super().__init__()
        self.enc, self.weights = enc, weights

    def construct(self):
        out = self.enc(BATCH, ms.float32)
        loss = 0.0
        for i in range(len(out)):
            loss = loss + (out[i] * self.weights[i]).sum()
        return loss


def _grad_reference(enc, weights):
    """Float64 gradients of sum_i sum(out_i * R_i) for the embedding and the MLP parameters."""
    pre_seq_len, layers, heads, kv, _ = SIZES
    g_flat = np.zeros((pre_seq_len, layers * 2 * heads * kv))  # dloss/dP: summed over the batch
    for layer in range(layers):
        r = weights[layer].sum(axis=1)  # (2, heads, pre_seq_len, kv)
        for which in range(2):
            for head in range(heads):
                start = ((layer * 2 + which) * heads + head) * kv
                g_flat[:, start:start + kv] += r[which, head]
    table = _np(enc.mindpet_delta_ptuning2_embedding.embedding_table)
    if not enc.prefix_projection:
        return {"mindpet_delta_ptuning2_embedding.embedding_table": g_flat}
    d_in, d_out = enc.mindpet_delta_ptuning2_dense_in, enc.mindpet_delta_ptuning2_dense_out
    hidden = np.tanh(table @ _np(d_in.weight).T + _np(d_in.bias))
    g_hidden = g_flat @ _np(d_out.weight) * (1.0 - hidden ** 2)
    return {"mindpet_delta_ptuning2_embedding.embedding_table": g_hidden @ _np(d_in.weight),
            "mindpet_delta_ptuning2_dense_in.weight": g_hidden.T @ table,
            "mindpet_delta_ptuning2_dense_in.bias": g_hidden.sum(0),
            "mindpet_delta_ptuning2_dense_out.weight": g_flat.T @ hidden,
            "mindpet_delta_ptuning2_dense_out.bias": g_flat.sum(0)}


@pytest.mark.parametrize("prefix_projection", [False, True], ids=["embedding", "mlp"])
def test_gradients_against_numpy(mode, prefix_projection):
    enc = _encoder(prefix_projection)
    pre_seq_len, layers, heads, kv, _ = SIZES
    weights = [np.random.randn(2, BATCH, heads, pre_seq_len, kv) for _ in range(layers)]
    net = _Weighted(enc, tuple(Tensor(w, ms.float32) for w in weights))
    names = [n for n, _ in enc.parameters_and_names()]
    params = [p for _, p in enc.parameters_and_names()]
    grads = ms.grad(net, grad_position=None, weights=params)()
    want = _grad_reference(enc, weights)
    assert sorted(want) == sorted(names)
    for name, grad in zip(names, grads):
        np.testing.assert_allclose(_np(grad), want[name], rtol=1e-4, atol=1e-5, err_msg=name)


class _PrefixModel(nn.Cell):
    """A frozen 'backbone' Dense beside a P-Tuning v2 encoder, as ChatGLM2WithPtuning2 holds it."""

    def __init__(self, prefix_projection):
        super().__init__()
        self.backbone = nn.Dense(4, 4)
        self.prefix_encoder = _encoder(prefix_projection)

    def construct(self, target):
        kv = self.prefix_encoder(BATCH, ms.float32)
        loss = 1e-3 * self.backbone(target[0, 0, 0]).sum()  # the frozen part takes part in the step
        for i in range(len(kv)):
            loss = loss + ((kv[i] - target[i]) ** 2).mean()
        return loss


class PetTypeStandIn(str, enum.Enum):
    """mindformers passes ``pet_type`` to freeze_delta as a ``(str, Enum)`` member."""
    P_TUNING_V2 = "ptuning2"


@pytest.mark.parametrize("prefix_projection", [False, True], ids=["embedding", "mlp"])
def test_training_loop_lowers_loss_and_trains_only_the_prefix(mode, prefix_projection):
    net = _PrefixModel(prefix_projection)
    result = freeze_delta(net, PetTypeStandIn.P_TUNING_V2)
    assert result.frozen == ["backbone.weight", "backbone.bias"]
    trainable = [p.name for p in net.trainable_params()]
    assert trainable and all("prefix_encoder.mindpet_delta_ptuning2_" in n for n in trainable)
    backbone_before = net.backbone.weight.asnumpy().copy()
    pre_seq_len, layers, heads, kv, _ = SIZES
    # one target for every example: the prefix is shared by the batch
    target = Tensor(np.random.randn(layers, 2, 1, heads, pre_seq_len, kv).astype(np.float32) * 0.5)
    step = nn.TrainOneStepCell(net, nn.Adam(net.trainable_params(), learning_rate=0.05))
    step.set_train()
    losses = [float(step(target).asnumpy()) for _ in range(40)]
    assert losses[-1] < 0.1 * losses[0], losses
    np.testing.assert_array_equal(net.backbone.weight.asnumpy(), backbone_before)


# ----------------------------------------------------------------------------- names and checkpoints
NAMES_1_0_4 = [  # the trainable parameter names of mindpet 1.0.4's PrefixEncoder inside a model
    "prefix_encoder.mindpet_delta_ptuning2_embedding.embedding_table",
    "prefix_encoder.mindpet_delta_ptuning2_dense_in.weight",
    "prefix_encoder.mindpet_delta_ptuning2_dense_in.bias",
    "prefix_encoder.mindpet_delta_ptuning2_dense_out.weight",
    "prefix_encoder.mindpet_delta_ptuning2_dense_out.bias",
]


def test_checkpoint_names_and_round_trip(tmp_path):
    net = _PrefixModel(True)
    assert [p.name for p in net.prefix_encoder.get_parameters()] == NAMES_1_0_4
    path = str(tmp_path / "ptuning2.ckpt")
    ms.save_checkpoint(net, path)
    fresh = _PrefixModel(True)
    not_loaded, _ = ms.load_param_into_net(fresh, ms.load_checkpoint(path))
    assert not not_loaded
    for a, b in zip(net.prefix_encoder(BATCH, ms.float32), fresh.prefix_encoder(BATCH, ms.float32)):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())


# ----------------------------------------------------------------------------- get_dropout
def test_get_dropout_builds_the_installed_argument():
    layer = get_dropout(0.25)
    assert isinstance(layer, nn.Dropout)
    assert "p=0.25" in repr(layer)  # MindSpore >= 1.11 (2.10 here) takes p, the drop probability


def test_get_dropout_keep_prob_path(monkeypatch):
    """Where nn.Dropout has no ``p`` (MindSpore < 1.11), ``keep_prob = 1 - dropout_prob``."""
    monkeypatch.setattr(version_control, "_DROPOUT_TAKES_P", False)
    layer = get_dropout(0.25)
    assert "keep_prob=0.75" in repr(layer)


def test_get_dropout_behaviour(mode):
    x = Tensor(np.ones((64, 64), np.float32))
    layer = get_dropout(0.2)
    layer.set_train(False)
    np.testing.assert_array_equal(layer(x).asnumpy(), x.asnumpy())
    layer.set_train(True)
    got = layer(x).asnumpy()
    assert set(np.unique(got)) <= {0.0, np.float32(1.0 / 0.8)}
    assert 0.15 < (got == 0).mean() < 0.25  # 4096 elements at p = 0.2
    keep_all = get_dropout(0)
    keep_all.set_train(True)
    np.testing.assert_array_equal(keep_all(x).asnumpy(), x.asnumpy())


@pytest.mark.parametrize("value, error", [(1.0, ValueError), (-0.01, ValueError), (None, TypeError),
                                          ("0.1", TypeError), (True, TypeError)])
def test_get_dropout_errors(value, error):
    with pytest.raises(error, match="'dropout_prob'"):
        get_dropout(value)


def test_loads_a_checkpoint_with_the_1_0_4_position_parameter():
    """A 1.0.4 checkpoint also holds the int64 positions ``mindpet_delta_ptuning2_prefix``: not loaded, harmless."""
    source = _PrefixModel(True)
    ckpt = {p.name: ms.Parameter(p.value().copy(), name=p.name) for p in source.get_parameters()}
    ckpt["prefix_encoder.mindpet_delta_ptuning2_prefix"] = ms.Parameter(
        Tensor(np.arange(SIZES[0], dtype=np.int64)), name="prefix_encoder.mindpet_delta_ptuning2_prefix",
        requires_grad=False)
    target = _PrefixModel(True)
    not_loaded, unused = ms.load_param_into_net(target, ckpt)
    assert not not_loaded and unused == ["prefix_encoder.mindpet_delta_ptuning2_prefix"]
    np.testing.assert_array_equal(target.prefix_encoder(BATCH, ms.float32)[0].asnumpy(),
                                  source.prefix_encoder(BATCH, ms.float32)[0].asnumpy())


def test_dynamic_batch_size_in_graph_mode():
    """batch_size taken from a dynamic-shape input (mindformers' is_dynamic): one graph, any batch."""
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.enc = _encoder(True)

        def construct(self, x):
            return self.enc(x.shape[0], ms.float32)

    net = Net()
    net.set_inputs(Tensor(shape=[None, 4], dtype=ms.float32))
    want = _split_reference(_flat_reference(net.enc), 3, *SIZES[1:4])
    for batch in (1, 3):
        out = net(Tensor(np.zeros((batch, 4), np.float32)))
        assert out[1].shape == (2, batch) + want[1].shape[2:]
        np.testing.assert_allclose(_np(out[1]), want[1][:, :1].repeat(batch, 1), rtol=1e-5, atol=1e-6)
