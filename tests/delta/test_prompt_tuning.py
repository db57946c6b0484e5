"""Prompt-Tuning (spec section 7): PromptTuning, prepend_prompt, and a tiny model where only the prompt trains."""
import math

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.ops import operations as P

from mindpet.delta import PromptTuning, prepend_prompt
from mindpet.graph import TrainableParamsCheckPoint, freeze_delta, load_pretrained_and_delta
from range_errors import raises_compiled_range_error, raises_range_error

VOCAB, HIDDEN, CLASSES, N_VIRTUAL, BATCH, SEQ = 13, 8, 3, 3, 4, 5
TABLE = "mindpet_delta_prompttuning_embedding"


def _np(t):
    return ops.cast(t, ms.float32).asnumpy().astype(np.float64)


# ----------------------------------------------------------------------------- the layer
def test_table_shape_name_init_and_default_ids():
    cell = PromptTuning(num_virtual_tokens=4, token_dim=6, num_transformer_submodules=2)
    table = getattr(cell, TABLE)
    assert [n for n, _ in cell.parameters_and_names()] == [TABLE]
    assert table.shape == (8, 6) and table.dtype == ms.float32 and table.requires_grad
    assert (cell.num_virtual_tokens, cell.token_dim, cell.num_transformer_submodules,
            cell.total_virtual_tokens) == (4, 6, 2, 8)
    assert 0.005 < _np(table).std() < 0.02                     # N(0, 0.01^2), as nn.Embedding
    ids = cell.default_ids(3)
    assert ids.dtype == ms.int32
    np.testing.assert_array_equal(ids.asnumpy(), np.tile(np.arange(8), (3, 1)))
    assert PromptTuning(2, 3).num_transformer_submodules == 1


def test_embedding_init_tensor_and_dtype():
    init = np.arange(12, dtype=np.float32).reshape(4, 3)
    cell = PromptTuning(2, 3, 2, embedding_init=Tensor(init), param_dtype=ms.float16)
    assert getattr(cell, TABLE).dtype == ms.float16
    np.testing.assert_array_equal(getattr(cell, TABLE).asnumpy(), init.astype(np.float16))
    assert np.all(getattr(PromptTuning(2, 3, embedding_init="zeros"), TABLE).asnumpy() == 0)


@pytest.mark.parametrize("dtype", [ms.float32, ms.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("id_dtype", [np.int32, np.int64])
def test_forward_gathers_rows(mode, dtype, id_dtype):
    cell = PromptTuning(3, 4, 2, param_dtype=dtype)
    ids = np.array([[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0]], id_dtype)
    out = cell(Tensor(ids))
    assert out.shape == (2, 6, 4) and out.dtype == dtype
    np.testing.assert_array_equal(_np(out), _np(getattr(cell, TABLE))[ids])


def test_forward_gradient_counts_each_use(mode):
    cell = PromptTuning(3, 2)
    ids = Tensor(np.array([[0, 1, 2], [0, 0, 2]], np.int32))
    weights = Tensor(np.random.default_rng(0).standard_normal((2, 3, 2)).astype(np.float32))
    grad = ms.grad(_WeightedSum(cell, weights), grad_position=None, weights=cell.trainable_params())(ids)[0]
    expected = np.zeros((3, 2))
    for b in range(2):
        for j, row in enumerate(ids.asnumpy()[b]):
            expected[row] += _np(weights)[b, j]
    np.testing.assert_allclose(_np(grad), expected, rtol=1e-6)


class _WeightedSum(nn.Cell):
    def __init__(self, cell, weights):
        super().__init__()
        self.cell, self.weights = cell, weights

    def construct(self, ids):
        return (self.cell(ids) * self.weights).sum()


GOOD = dict(num_virtual_tokens=2, token_dim=4, num_transformer_submodules=1)


@pytest.mark.parametrize("arg", list(GOOD))
@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True, None], ids=["zero", "neg", "float", "str", "bool", "none"])
def test_non_positive_int_is_type_error(arg, value):
    with pytest.raises(TypeError, match=f"'{arg}'"):
        PromptTuning(**dict(GOOD, **{arg: value}))


@pytest.mark.parametrize("kwargs, exc, arg", [
    (dict(embedding_init="no_such_init"), ValueError, "embedding_init"),
    (dict(embedding_init=Tensor(np.zeros((3, 4), np.float32))), ValueError, "embedding_init"),
    (dict(embedding_init=[0.0]), TypeError, "embedding_init"),
    (dict(param_dtype=ms.int32), TypeError, "param_dtype"),
])
def test_bad_keyword_arguments(kwargs, exc, arg):
    with pytest.raises(exc, match=f"'{arg}'"):
        PromptTuning(**GOOD, **kwargs)


@pytest.mark.parametrize("ids, exc", [(np.zeros((2, 2), np.float32), TypeError), (np.zeros(2, np.int32), ValueError)])
def test_bad_prompt_ids(mode, ids, exc):
    with pytest.raises(exc, match="'prompt_ids'"):
        PromptTuning(**GOOD)(Tensor(ids))


@pytest.mark.parametrize("bad_id", [-1, 2, 9])
def test_out_of_range_ids_raise_inside_a_network(mode, bad_id):
    """Checked on the values in both modes, also when the layer runs inside a compiled model
    (PYNATIVE: ValueError naming the argument; compiled: MindSpore's Assert kernel)."""
    net = SpecPromptModel(2, 5, 4)
    net.prompt_ids = Tensor([[0, bad_id]], ms.int32)
    emb = Tensor(np.zeros((2, 5, 4)), ms.float16)
    with raises_range_error(mode, r"'prompt_ids' must be in \[0, 2\), but got values from"):
        net(emb).asnumpy()
    good = SpecPromptModel(2, 5, 4)                      # a new network runs (GRAPH: a new graph)
    assert good(emb).shape == (2, 5, 4)


def test_out_of_range_ids_raise_in_a_jit_function_and_check_ids_false_skips_the_check():
    """PYNATIVE with an ``ms.jit`` function compiles the check (Assert kernel); ``check_ids=False``
    removes it."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        bad = Tensor([[0, -1]], ms.int32)
        cell = PromptTuning(2, 3)

        @ms.jit
        def compiled(ids):
            return cell(ids) * 1

        with raises_compiled_range_error():
            compiled(bad).asnumpy()
        unchecked = PromptTuning(2, 3, check_ids=False)
        table = getattr(unchecked, TABLE).asnumpy()
        np.testing.assert_array_equal(unchecked(bad).asnumpy()[0, 1], table[-1])  # what the check prevents
        assert PromptTuning(2, 3).check_ids and not unchecked.check_ids
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    with pytest.raises(TypeError, match="'check_ids'"):
        PromptTuning(2, 3, check_ids=1)


def test_documented_import_paths():
    from tk.delta import PromptTuning as a
    from tk.delta.prompt_tuning import PromptTuning as b
    assert a is PromptTuning and b is PromptTuning


# ----------------------------------------------------------------------------- prepend_prompt
def test_prepend_prompt_concatenates_and_extends_mask(mode):
    rng = np.random.default_rng(0)
    emb, prompt = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 2, 3))
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.int32)
    out, m = prepend_prompt(Tensor(emb, ms.float16), Tensor(prompt, ms.float32), Tensor(mask))
    assert out.dtype == ms.float16 and m.dtype == ms.int32
    np.testing.assert_allclose(_np(out), np.concatenate([prompt, emb], 1), rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(m.asnumpy(), [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])
    out, m = prepend_prompt(Tensor(emb, ms.float32), Tensor(prompt, ms.float32), Tensor(mask.astype(np.bool_)),
                            keep_length=True)
    np.testing.assert_allclose(_np(out), np.concatenate([prompt, emb], 1)[:, :4], rtol=1e-6)
    np.testing.assert_array_equal(m.asnumpy(), [[True] * 4, [True] * 4])
    out, m = prepend_prompt(Tensor(emb, ms.float32), Tensor(prompt, ms.float32))
    assert m is None and out.shape == (2, 6, 3)


@pytest.mark.parametrize("args, kwargs, exc, match", [
    ((np.ones((2, 4, 3)), Tensor(np.ones((2, 2, 3)))), {}, TypeError, "'embeddings'"),
    ((Tensor(np.ones((2, 4, 3))), Tensor(np.ones((1, 2, 3)))), {}, ValueError, "'prompt'"),
    ((Tensor(np.ones((2, 4, 3))), Tensor(np.ones((2, 2, 5)))), {}, ValueError, "'prompt'"),
    ((Tensor(np.ones((2, 4, 3))), Tensor(np.ones((2, 2, 3))), Tensor(np.ones((2, 5)))), {}, ValueError,
     "'attention_mask'"),
    ((Tensor(np.ones((2, 4, 3))), Tensor(np.ones((2, 2, 3)))), dict(keep_length=1), TypeError, "'keep_length'"),
])
def test_prepend_prompt_bad_inputs(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        prepend_prompt(*args, **kwargs)


class SpecPromptModel(nn.Cell):
    """The spec's example (7.3): tile the ids, concat in front, cut back to the original length."""

    def __init__(self, batch_size, seq_length, hidden_size, num_virtual_tokens=2, num_transformer_submodules=1):
        super().__init__()
        self.batch_size, self.seq_length, self.hidden_size = batch_size, seq_length, hidden_size
        self.prompt_cell = PromptTuning(num_virtual_tokens=num_virtual_tokens, token_dim=hidden_size,
                                        num_transformer_submodules=num_transformer_submodules)
        self.prompt_ids = Tensor(list(range(0, num_virtual_tokens * num_transformer_submodules)), dtype=ms.int32)
        self.prompt_ids = ops.expand_dims(self.prompt_ids, 0)
        self.tile = P.Tile().shard(((1, 1),))
        self.concat = P.Concat(axis=1).shard(((1, 1, 1), (1, 1, 1)))
        self.slice = P.StridedSlice().shard(((1, 1, 1),))
        self.cast = P.Cast()

    def construct(self, embedding_output):
        prompt_ids = self.tile(self.prompt_ids, (self.batch_size, 1))
        prompt_output = self.cast(self.prompt_cell(prompt_ids), ms.float16)
        embedding_output = self.concat((prompt_output, embedding_output))
        return self.slice(embedding_output, (0, 0, 0), (self.batch_size, self.seq_length, self.hidden_size),
                          (1, 1, 1))


def test_spec_example_equals_prepend_prompt(mode):
    net = SpecPromptModel(2, 5, 4)
    emb = Tensor(np.random.default_rng(1).standard_normal((2, 5, 4)), ms.float16)
    prompt = net.prompt_cell(net.prompt_cell.default_ids(2))
    expected, _ = prepend_prompt(emb, prompt, keep_length=True)
    np.testing.assert_array_equal(net(emb).asnumpy(), expected.asnumpy())


# ----------------------------------------------------------------------------- a tiny model
class TinyPromptModel(nn.Cell):
    """Frozen embedding + single-head self-attention + masked mean pooling + head; a trainable prompt."""

    def __init__(self, dtype=ms.float32, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.embedding = nn.Embedding(VOCAB, HIDDEN, embedding_table=Tensor(rng.standard_normal((VOCAB, HIDDEN)),
                                                                            ms.float32))
        dense = lambda n_out: nn.Dense(HIDDEN, n_out, weight_init=Tensor(rng.standard_normal((n_out, HIDDEN)) * 0.6,
                                                                         dtype), dtype=dtype)
        self.q, self.k, self.v, self.head = dense(HIDDEN), dense(HIDDEN), dense(HIDDEN), dense(CLASSES)
        self.prompt_cell = PromptTuning(N_VIRTUAL, HIDDEN, embedding_init=Tensor(
            rng.standard_normal((N_VIRTUAL, HIDDEN)) * 0.5, ms.float32), param_dtype=dtype)
        self.prompt_ids = self.prompt_cell.default_ids(BATCH)
        self.dtype, self.scale = dtype, 1.0 / math.sqrt(HIDDEN)

    def construct(self, input_ids, mask):
        emb = self.embedding(input_ids).astype(self.dtype)
        x, keep = prepend_prompt(emb, self.prompt_cell(self.prompt_ids), mask)
        keep = keep.astype(self.dtype)
        scores = ops.matmul(self.q(x), self.k(x).swapaxes(-1, -2)) * self.scale
        scores = scores + (1.0 - keep.expand_dims(1)) * -10000.0
        ctx = ops.matmul(ops.softmax(scores, -1), self.v(x))
        pooled = (ctx * keep.expand_dims(-1)).sum(1) / keep.sum(1, keepdims=True)
        return self.head(pooled)


def _model_np(net, ids, mask, table=None):
    d = lambda x, cell: x @ _np(cell.weight).T + _np(cell.bias)
    table = _np(getattr(net.prompt_cell, TABLE)) if table is None else table
    prompt = np.broadcast_to(table, (ids.shape[0],) + table.shape)
    x = np.concatenate([prompt, _np(net.embedding.embedding_table)[ids]], 1)
    keep = np.concatenate([np.ones((ids.shape[0], N_VIRTUAL)), mask], 1)
    scores = d(x, net.q) @ np.swapaxes(d(x, net.k), -1, -2) / math.sqrt(HIDDEN) + (1 - keep[:, None, :]) * -1e4
    e = np.exp(scores - scores.max(-1, keepdims=True))
    ctx = (e / e.sum(-1, keepdims=True)) @ d(x, net.v)
    return d((ctx * keep[..., None]).sum(1) / keep.sum(1, keepdims=True), net.head)


def _ce_np(logits, labels):
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels].mean()


class _CE(nn.Cell):
    """Mean cross-entropy of ``net(ids, mask)`` (float32); keeps parameter names; optional output."""

    def __init__(self, net, with_output=False):
        super().__init__(auto_prefix=False)
        self.net, self.with_output = net, with_output

    def construct(self, ids, mask, labels):
        logits = self.net(ids, mask)
        log_p = ops.log_softmax(logits.astype(ms.float32), -1)
        loss = -ops.gather_elements(log_p, 1, labels.expand_dims(1)).mean()
        if self.with_output:
            return loss, logits
        return loss


def _data(seed=3):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (BATCH, SEQ)).astype(np.int32)
    mask = np.ones((BATCH, SEQ), np.int32)
    mask[1, 3:] = 0
    mask[3, 2:] = 0
    labels = np.array([0, 2, 1, 2], np.int32)
    return ids, mask, labels, (Tensor(ids), Tensor(mask), Tensor(labels))


@pytest.mark.parametrize("dtype", [ms.float32, ms.float16], ids=["fp32", "fp16"])
def test_tiny_model_forward_and_prompt_gradient(mode, dtype):
    net = TinyPromptModel(dtype)
    ids, mask, labels, inputs = _data()
    freeze_delta(net, "prompttuning")
    assert [p.name for p in net.trainable_params()] == ["prompt_cell." + TABLE]
    table = net.trainable_params()[0]
    fn = ms.value_and_grad(_CE(net, with_output=True), grad_position=None, weights=[table], has_aux=True)
    (loss, logits), (grad,) = fn(*inputs)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == ms.float32 else dict(rtol=3e-2, atol=3e-2)
    np.testing.assert_allclose(_np(logits), _model_np(net, ids, mask), **tol)
    grad = _np(grad)
    assert np.all(np.abs(grad).sum(-1) > 0)                            # every virtual token learns
    if dtype == ms.float32:
        t0 = _np(table)
        fd = np.zeros_like(t0)
        for idx in np.ndindex(t0.shape):
            hi, lo = t0.copy(), t0.copy()
            hi[idx] += 1e-6
            lo[idx] -= 1e-6
            fd[idx] = (_ce_np(_model_np(net, ids, mask, hi), labels)
                       - _ce_np(_model_np(net, ids, mask, lo), labels)) / 2e-6
        np.testing.assert_allclose(grad, fd, rtol=1e-3, atol=1e-3 * np.abs(fd).max())


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
def test_tiny_model_trains_only_the_prompt(tmp_path, exec_mode, dtype, with_ckpt):
    ms.set_context(mode=exec_mode, device_target="CPU")
    try:
        net = TinyPromptModel(dtype)
        _, _, _, inputs = _data()
        pretrained = str(tmp_path / "pretrained.ckpt")
        ms.save_checkpoint(net, pretrained)
        freeze_delta(net, "prompttuning")
        before = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
        optimizer = nn.Adam(net.trainable_params(), learning_rate=0.1, eps=1e-4)  # eps: float16 moments
        if with_ckpt:
            losses, cb = _LossRecorder(), TrainableParamsCheckPoint(str(tmp_path / "delta"), prefix="prompt")
            ms.train.Model(_CE(net), optimizer=optimizer).train(1, _dataset(inputs, 10), callbacks=[losses, cb],
                                                               dataset_sink_mode=False)
            losses = losses.values
        else:
            step = nn.TrainOneStepCell(_CE(net), optimizer)
            step.set_train()
            losses = [float(step(*inputs).asnumpy()) for _ in range(10)]
        assert losses[-1] < 0.6 * losses[0], losses
        for p in net.get_parameters():
            assert (not np.array_equal(before[p.name], p.asnumpy())) == (TABLE in p.name), p.name
        if with_ckpt:
            name = "prompt_cell." + TABLE
            assert list(ms.load_checkpoint(cb.latest_ckpt_file_name)) == [name]
            trained = net(*inputs[:2]).asnumpy()
            fresh = TinyPromptModel(dtype, seed=9)
            assert not np.allclose(fresh(*inputs[:2]).asnumpy(), trained, atol=1e-3)
            report = load_pretrained_and_delta(fresh, pretrained, cb.latest_ckpt_file_name)
            assert report.ok and report.overridden_keys == [name]
            np.testing.assert_array_equal(fresh(*inputs[:2]).asnumpy(), trained)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
