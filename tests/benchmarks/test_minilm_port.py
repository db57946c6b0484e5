"""The MindSpore BERT port against an independent numpy float64 forward, on a tiny random model (always)
and on all-MiniLM-L6-v2 with real BBC headlines (skipped when the offline packages are absent)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import mindspore as ms
from safetensors.numpy import load_file, save_file

from benchmarks.lib import assets
from benchmarks.models.bert import BertConfig, ExactGELU, SentenceEmbedder, exact_gelu
from benchmarks.models.hf_weights import hf_to_mindspore_name, load_hf_weights
from bert_reference import gelu, random_hf_state, sentence_embeddings

TINY = {"vocab_size": 40, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 24, "max_position_embeddings": 12, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}


def _embed(net: SentenceEmbedder, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
    net.set_train(False)
    out = net(ms.Tensor(ids, ms.int32), ms.Tensor(mask, ms.int32), ms.Tensor(types, ms.int32))
    return out.asnumpy().astype(np.float64)


def test_exact_gelu_matches_erf_not_tanh():
    ms.set_context(mode=ms.GRAPH_MODE)
    x = np.linspace(-6.0, 6.0, 241)
    got = ExactGELU()(ms.Tensor(x, ms.float32)).asnumpy()
    exact = gelu(x)
    tanh_approx = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    assert np.abs(exact - tanh_approx).max() > 1e-4  # the two differ visibly on this grid ...
    np.testing.assert_allclose(got, exact, atol=2e-6)  # ... and the port follows erf
    fused = exact_gelu()(ms.Tensor(x, ms.float32)).asnumpy()  # what the model runs (fused on CPU)
    np.testing.assert_allclose(fused, exact, atol=2e-6)


def test_hf_name_mapping():
    assert hf_to_mindspore_name("encoder.layer.3.attention.self.value.bias") == "bert.layers.3.attention.value.bias"
    assert hf_to_mindspore_name("encoder.layer.0.output.LayerNorm.weight") == "bert.layers.0.ffn.layer_norm.gamma"
    assert hf_to_mindspore_name("embeddings.LayerNorm.bias", prefix="") == "embeddings.layer_norm.beta"
    assert hf_to_mindspore_name("pooler.dense.weight") is None
    with pytest.raises(KeyError, match="no mapping"):
        hf_to_mindspore_name("encoder.layer.0.attention.self.rotary.weight")


def test_tiny_random_port_matches_numpy_float64(tmp_path):
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(1)
    state = random_hf_state(TINY, rng)
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    net = SentenceEmbedder(BertConfig.from_dict(TINY))
    report = load_hf_weights(net, path)
    assert report.missing == ()
    ids = rng.integers(1, TINY["vocab_size"], size=(3, 10)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    types = (rng.random(ids.shape) < 0.3).astype(np.int32)
    ids[mask == 0] = 0
    got = _embed(net, ids, mask, types)
    want = sentence_embeddings(state, TINY, ids, mask, types)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    # padding really is masked: changing padded tokens leaves the embedding unchanged
    ids2 = ids.copy()
    ids2[mask == 0] = 7
    np.testing.assert_allclose(_embed(net, ids2, mask, types), got, atol=1e-5)


def test_loader_rejects_incomplete_or_foreign_files(tmp_path):
    ms.set_context(mode=ms.GRAPH_MODE)
    state = random_hf_state(TINY, np.random.default_rng(2))
    net = SentenceEmbedder(BertConfig.from_dict(TINY))
    incomplete = dict(state)
    del incomplete["encoder.layer.1.intermediate.dense.bias"]
    save_file(incomplete, str(tmp_path / "a.safetensors"))
    with pytest.raises(ValueError, match="bert.layers.1.ffn.intermediate.bias"):
        load_hf_weights(net, tmp_path / "a.safetensors")
    larger = dict(TINY, num_hidden_layers=3)
    save_file(random_hf_state(larger, np.random.default_rng(3)), str(tmp_path / "b.safetensors"))
    with pytest.raises(ValueError, match="unexpected"):
        load_hf_weights(net, tmp_path / "b.safetensors")


@pytest.fixture(scope="module")
def minilm():
    reason = assets.missing_reason()
    if reason:
        pytest.skip(f"real-model port check needs the offline packages: {reason}")
    from benchmarks.data.tokenize import load_tokenizer

    root = assets.minilm_dir()
    config = json.loads((root / "config.json").read_text())
    ms.set_context(mode=ms.GRAPH_MODE)
    net = SentenceEmbedder(BertConfig.from_dict(config))
    report = load_hf_weights(net, root / "model.safetensors")
    return net, report, config, load_file(str(root / "model.safetensors")), load_tokenizer(root / "tokenizer.json", 32)


def test_minilm_loads_every_weight(minilm):
    net, report, *_ = minilm
    assert report.missing == ()
    assert len(report.loaded) == len(list(net.get_parameters())) == 101


def test_minilm_matches_numpy_on_bbc_headlines(minilm):
    from benchmarks.data.bbc import load_headlines
    from benchmarks.data.tokenize import encode

    net, _, config, state, tokenizer = minilm
    texts = list(load_headlines().test.texts[:6])
    batch = encode(tokenizer, texts)
    got = _embed(net, batch.input_ids, batch.attention_mask, batch.token_type_ids)
    want = sentence_embeddings(state, config, batch.input_ids, batch.attention_mask, batch.token_type_ids)
    assert np.abs(want).max() > 0.1  # non-trivial embeddings
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_minilm_related_sentences_are_closer(minilm):
    from benchmarks.data.tokenize import encode

    net, *_, tokenizer = minilm
    texts = ["Shares fall sharply as the stock market slumps",
             "Stock prices drop on Wall Street",
             "The striker scored twice in the cup final",
             "Arsenal win the football match with a late goal"]
    batch = encode(tokenizer, texts)
    e = _embed(net, batch.input_ids, batch.attention_mask, batch.token_type_ids)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    cos = e @ e.T
    assert cos[0, 1] > max(cos[0, 2], cos[0, 3], cos[1, 2], cos[1, 3]) + 0.2
    assert cos[2, 3] > max(cos[0, 2], cos[0, 3], cos[1, 2], cos[1, 3]) + 0.2


def _weighted_grads(net, cot, inputs):
    """The gradients of ``sum(net(*inputs) * cot)`` with respect to the trainable parameters."""
    def weighted(*args):
        return (net(*args) * cot).sum()
    return ms.value_and_grad(weighted, None, net.trainable_params())(*inputs)[1]


def _classifier(config: dict, backend: str, state: dict):
    from benchmarks.models import bert as bert_model
    bert_model.KERNEL_BACKEND = backend
    try:
        net = bert_model.BertClassifier(BertConfig.from_dict(config), num_classes=3)
    finally:
        bert_model.KERNEL_BACKEND = None
    ms.load_param_into_net(net, {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in state.items()}, strict_load=True)
    return net


@pytest.mark.parametrize("dropout", [0.1, 0.0])
def test_fused_attention_port_matches_the_composed_port(dropout):
    """Same weights, attention (and LayerNorm, GELU) fused or composed: logits in eval mode; and with dropout
    off, the training-mode gradients of every parameter. A batch row of padding only is included."""
    ms.set_context(mode=ms.GRAPH_MODE)
    config = dict(TINY, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    rng = np.random.default_rng(4)
    ids = rng.integers(1, TINY["vocab_size"], size=(4, 11)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, [0, 3, 4]] = 0  # not a prefix
    mask[3] = 0
    types = np.zeros_like(ids)
    inputs = [ms.Tensor(a) for a in (ids, mask, types)]
    fused = _classifier(config, "fused", {})
    state = {p.name: p.asnumpy() for p in fused.get_parameters()}
    composed = _classifier(config, "composed", state)
    assert "impl=cpu" in repr(fused.bert.layers[0].attention.core)
    for net in (fused, composed):
        net.set_train(False)
    logits = [net(*inputs).asnumpy() for net in (fused, composed)]
    assert np.abs(logits[1]).max() > 1e-3
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5, rtol=0)
    if dropout:
        return
    cot = ms.Tensor(rng.standard_normal(logits[0].shape).astype(np.float32))
    grads = []
    for net in (fused, composed):
        net.set_train(True)
        grads.append([x.asnumpy() for x in _weighted_grads(net, cot, inputs)])
    for name, a, b in zip([p.name for p in fused.trainable_params()], *grads):
        assert np.abs(a - b).max() <= 1e-5 * max(np.abs(b).max(), 1.0), name
    assert any(np.abs(b).max() > 1e-3 for b in grads[1])
