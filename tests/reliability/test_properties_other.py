"""Property tests of PrefixLayer, PromptTuning and RDropLoss over arguments and input shapes.

Valid arguments give outputs of the documented shapes with finite values; invalid ones raise
TypeError or ValueError naming the argument; out-of-range prompt ids and R-Drop class indices raise
ValueError in both modes.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from mindspore import Tensor

from mindpet.delta import PrefixLayer, PromptTuning, RDropLoss
from range_errors import raises_range_error

PROPERTY = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SMALL = st.integers(1, 4)
NOT_POSITIVE_INT = st.one_of(st.integers(-(2 ** 40), 0), st.floats(), st.text(max_size=2), st.none(),
                             st.booleans(), st.just([1]))


# -------------------------------------------------------------------------------------- PrefixLayer
@st.composite
def prefix_kwargs(draw):
    batch, length, heads, head_dim = draw(SMALL), draw(SMALL), draw(SMALL), draw(SMALL)
    return dict(prefix_token_num=batch * length, batch_size=batch, num_heads=heads, hidden_dim=heads * head_dim,
                embed_dim=draw(SMALL), mid_dim=draw(st.integers(1, 6)),
                dropout_rate=draw(st.one_of(st.floats(0.0, 0.9), st.just(0))))


@PROPERTY
@given(kw=prefix_kwargs())
def test_prefix_layer_valid_shapes(pynative, kw):
    layer = PrefixLayer(**kw)
    shape = (kw["prefix_token_num"] // kw["batch_size"], kw["batch_size"], kw["hidden_dim"])
    key, value = layer.past_key_reparam, layer.past_value_reparam
    assert tuple(key.shape) == shape and tuple(value.shape) == shape
    assert np.isfinite(key.asnumpy()).all() and np.isfinite(value.asnumpy()).all()
    layer.set_train(True)
    for out in layer():
        assert tuple(out.shape) == shape and np.isfinite(out.asnumpy()).all()
    layer.set_train(False)
    out_key, out_value = layer()
    np.testing.assert_array_equal(out_key.asnumpy(), key.asnumpy())  # no dropout in evaluation
    np.testing.assert_array_equal(out_value.asnumpy(), value.asnumpy())


PREFIX_INT_ARGS = ("prefix_token_num", "batch_size", "num_heads", "hidden_dim", "embed_dim", "mid_dim")


@pytest.mark.parametrize("arg", PREFIX_INT_ARGS + ("dropout_rate", "multiple"))
@settings(PROPERTY, max_examples=10)
@given(data=st.data())
def test_prefix_layer_invalid_argument(pynative, arg, data):
    kw = data.draw(prefix_kwargs(), label="valid kwargs")
    if arg in PREFIX_INT_ARGS:  # the spec: TypeError for anything but a positive int
        kw[arg] = data.draw(NOT_POSITIVE_INT, label=arg)
        expected, names = TypeError, (arg,)
    elif arg == "dropout_rate":
        kw[arg] = data.draw(st.one_of(st.floats().filter(lambda p: not 0.0 <= p < 1.0), st.integers(1, 9)))
        expected, names = ValueError, (arg,)
    else:
        batch = data.draw(st.integers(2, 4), label="batch_size")
        kw.update(batch_size=batch, prefix_token_num=data.draw(st.integers(1, 20).filter(lambda n: n % batch)))
        expected, names = ValueError, ("prefix_token_num", "batch_size")
    with pytest.raises(expected) as info:
        PrefixLayer(**kw)
    assert all(name in str(info.value) for name in names)


# ------------------------------------------------------------------------------------- PromptTuning
PROMPT_KWARGS = st.fixed_dictionaries(dict(num_virtual_tokens=SMALL, token_dim=st.integers(1, 6),
                                           num_transformer_submodules=st.integers(1, 3)))


@PROPERTY
@given(kw=PROMPT_KWARGS, batch=st.integers(1, 3), seed=st.integers(0, 2 ** 31 - 1),
       id_dtype=st.sampled_from([np.int32, np.int64]))
def test_prompt_tuning_valid_shapes(pynative, kw, batch, seed, id_dtype):
    layer = PromptTuning(**kw)
    rows = kw["num_virtual_tokens"] * kw["num_transformer_submodules"]
    ids = np.random.default_rng(seed).integers(0, rows, (batch, rows)).astype(id_dtype)
    out = layer(Tensor(ids)).asnumpy()
    assert out.shape == (batch, rows, kw["token_dim"]) and np.isfinite(out).all()
    np.testing.assert_array_equal(out, layer.mindpet_delta_prompttuning_embedding.asnumpy()[ids])
    default = layer(layer.default_ids(batch)).asnumpy()
    assert default.shape == (batch, rows, kw["token_dim"])


@pytest.mark.parametrize("arg", ["num_virtual_tokens", "token_dim", "num_transformer_submodules"])
@settings(PROPERTY, max_examples=10)
@given(data=st.data())
def test_prompt_tuning_invalid_argument_is_type_error(pynative, arg, data):
    kw = data.draw(PROMPT_KWARGS, label="valid kwargs")
    kw[arg] = data.draw(NOT_POSITIVE_INT, label=arg)
    with pytest.raises(TypeError, match=arg):
        PromptTuning(**kw)


@PROPERTY
@given(kw=PROMPT_KWARGS, shape=st.lists(st.integers(1, 3), min_size=0, max_size=4).filter(lambda s: len(s) != 2),
       as_float=st.booleans())
def test_prompt_tuning_bad_ids_raise(pynative, kw, shape, as_float):
    layer = PromptTuning(**kw)
    ids = np.zeros(shape, np.float32 if as_float else np.int32)
    with pytest.raises(TypeError if as_float else ValueError, match="prompt_ids"):
        layer(Tensor(ids)).asnumpy()


@pytest.mark.parametrize("bad_id", [-1, 3, 7])
def test_prompt_tuning_out_of_range_id_is_value_error(mode, bad_id):
    layer = PromptTuning(num_virtual_tokens=3, token_dim=4)
    with raises_range_error(mode, "'prompt_ids' must be in \\[0, 3\\)"):
        layer(Tensor(np.array([[0, 1, bad_id]], np.int32))).asnumpy()


@PROPERTY
@given(kw=PROMPT_KWARGS, batch=st.integers(1, 3), seed=st.integers(0, 2 ** 31 - 1))
def test_prompt_tuning_raises_exactly_for_ids_outside_the_table(pynative, kw, batch, seed):
    layer = PromptTuning(**kw)
    rows = kw["num_virtual_tokens"] * kw["num_transformer_submodules"]
    ids = np.random.default_rng(seed).integers(-2, rows + 2, (batch, rows)).astype(np.int32)
    if ((ids < 0) | (ids >= rows)).any():
        with pytest.raises(ValueError, match="prompt_ids"):
            layer(Tensor(ids)).asnumpy()
    else:
        np.testing.assert_array_equal(layer(Tensor(ids)).asnumpy(),
                                      layer.mindpet_delta_prompttuning_embedding.asnumpy()[ids])


# ---------------------------------------------------------------------------------------- RDropLoss
@st.composite
def rdrop_inputs(draw):
    pairs, classes = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 31 - 1)))
    dtype = draw(st.sampled_from([np.float32, np.float16]))
    logits = (rng.standard_normal((2 * pairs, classes)) * draw(st.sampled_from([0.1, 1.0, 8.0]))).astype(dtype)
    kind = draw(st.sampled_from(["index", "index_column", "probabilities"]))
    if kind == "probabilities":
        p = rng.random((2 * pairs, classes)) + 1e-3
        labels = (p / p.sum(-1, keepdims=True)).astype(dtype)
    else:
        labels = np.repeat(rng.integers(0, classes, pairs), 2).astype(np.int32)
        labels = labels.reshape(-1, 1) if kind == "index_column" else labels
    return logits, labels


@PROPERTY
@given(inputs=rdrop_inputs(), alpha=st.one_of(st.integers(0, 10), st.floats(0.0, 10.0)),
       extra=st.floats(0.5, 5.0))
def test_rdrop_loss_is_a_finite_non_negative_scalar_growing_with_alpha(pynative, inputs, alpha, extra):
    logits, labels = inputs
    loss_fn = RDropLoss()
    loss = loss_fn(Tensor(logits), Tensor(labels), alpha).asnumpy()
    more = loss_fn(Tensor(logits), Tensor(labels), alpha + extra).asnumpy()
    assert loss.shape == () and loss.dtype == logits.dtype and np.isfinite(loss)
    tol = 2e-2 if logits.dtype == np.float16 else 1e-5
    assert float(loss) >= -tol  # cross-entropy and KL are both >= 0
    assert float(more) >= float(loss) - tol  # the KL term is >= 0


@PROPERTY
@given(inputs=rdrop_inputs(), case=st.sampled_from(["odd rows", "rank", "label shape", "negative alpha",
                                                    "alpha type", "logits dtype", "label dtype"]))
def test_rdrop_loss_invalid_input_raises(pynative, inputs, case):
    logits, labels = inputs
    alpha = 4
    expected, name = ValueError, "logits"
    if case == "odd rows":
        logits = logits[:-1]
    elif case == "rank":
        logits = logits.reshape((1,) + logits.shape)
    elif case == "label shape":
        labels, name = np.concatenate([labels, labels]), "label_ids"
    elif case == "negative alpha":
        alpha, name = -0.5, "alpha"
    elif case == "alpha type":
        alpha, expected, name = "4", TypeError, "alpha"
    elif case == "logits dtype":
        logits, expected = logits.astype(np.int32), TypeError
    else:
        labels, expected, name = labels.astype(np.bool_), TypeError, "label_ids"
    with pytest.raises(expected, match=name):
        RDropLoss()(Tensor(logits), Tensor(labels), alpha).asnumpy()


@pytest.mark.parametrize("bad_label", [-1, 3])
def test_rdrop_loss_out_of_range_label_is_value_error(mode, bad_label):
    logits = Tensor(np.zeros((2, 3), np.float32))
    with raises_range_error(mode, "'label_ids' must be in \\[0, 3\\)"):
        RDropLoss()(logits, Tensor(np.array([bad_label, bad_label], np.int32)), 4).asnumpy()



@PROPERTY
@given(inputs=rdrop_inputs(), seed=st.integers(0, 2 ** 31 - 1))
def test_rdrop_loss_raises_exactly_for_labels_outside_the_classes(pynative, inputs, seed):
    logits, _ = inputs
    rows, classes = logits.shape
    labels = np.random.default_rng(seed).integers(-1, classes + 1, rows).astype(np.int32)
    if ((labels < 0) | (labels >= classes)).any():
        with pytest.raises(ValueError, match="label_ids"):
            RDropLoss()(Tensor(logits), Tensor(labels), 4).asnumpy()
    else:
        assert np.isfinite(RDropLoss()(Tensor(logits), Tensor(labels), 4).asnumpy())
