"""The LLaMA benchmark model keeps no second copy of its token table (issue 15): MindSpore 2.10's
``nn.Embedding`` holds its initial table as ``init_tensor`` beside the Parameter, which stayed alive after the
pre-trained table was loaded (108 MiB for SmolLM2)."""
from __future__ import annotations

import gc

import numpy as np
import mindspore as ms
from mindspore import Tensor

from benchmarks.lib.lm_model import synthetic_model
from benchmarks.lib.procfs import status_mib
from benchmarks.models.llama import LlamaConfig, LlamaLM, load_gguf_weights, token_embedding


def test_loaded_model_holds_only_its_loaded_token_table():
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    pre = synthetic_model()
    net = LlamaLM(pre.config)
    load_gguf_weights(net, pre.tensors, hf_layout=False)
    assert getattr(net.embed_tokens, "init_tensor", None) is None
    np.testing.assert_array_equal(net.embed_tokens.embedding_table.asnumpy(), pre.tensors["token_embd.weight"])
    ids = Tensor(np.arange(8, dtype=np.int32)[None])
    table = pre.tensors["token_embd.weight"].astype(np.float64)
    np.testing.assert_allclose(net.embed_tokens(ids).asnumpy(), table[np.arange(8)][None], rtol=0, atol=0)


def test_replacing_a_large_token_table_frees_the_initial_one():
    """RSS after ``set_data`` of a 64 MiB table: one table's worth (the initial one freed), not two."""
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    config = LlamaConfig(vocab_size=32768, hidden_size=512, intermediate_size=64, num_layers=1, num_heads=8,
                         num_kv_heads=8)
    mib = config.vocab_size * config.hidden_size * 4 / 2 ** 20
    gc.collect()
    base = status_mib("VmRSS")
    embedding = token_embedding(config)
    embedding.embedding_table.set_data(Tensor(np.ones((config.vocab_size, config.hidden_size), np.float32)))
    gc.collect()
    added = status_mib("VmRSS") - base
    assert added < 1.5 * mib, f"{added:.0f} MiB held for one {mib:.0f} MiB table"
    np.testing.assert_array_equal(embedding.embedding_table.asnumpy()[:2, :3], np.ones((2, 3), np.float32))


def test_loading_weights_does_not_copy_them():
    """``load_gguf_weights`` hands the arrays to the Parameters (``Tensor.from_numpy``): the load's peak RSS
    does not grow by a copy of the 64 MiB table (it did with ``Tensor(value)``), and the values are the arrays'."""
    from benchmarks.lib.procfs import reset_peak
    from benchmarks.models.llama import gguf_name_map

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    config = LlamaConfig(vocab_size=32768, hidden_size=512, intermediate_size=64, num_layers=1, num_heads=8,
                         num_kv_heads=8)
    net = LlamaLM(config)
    params = {p.name: p for p in net.get_parameters()}
    rng = np.random.default_rng(0)
    tensors = {src: rng.standard_normal(params[dst].shape).astype(np.float32)
               for src, dst in gguf_name_map(1).items()}
    mib = config.vocab_size * config.hidden_size * 4 / 2 ** 20
    gc.collect()
    base = status_mib("VmRSS")
    reset_peak()
    load_gguf_weights(net, tensors, hf_layout=True)
    added = status_mib("VmHWM") - base
    assert added < 0.5 * mib, f"loading added {added:.0f} MiB of peak for a {mib:.0f} MiB table"
    np.testing.assert_array_equal(net.embed_tokens.embedding_table.asnumpy(), tensors["token_embd.weight"])
    np.testing.assert_array_equal(net.layers[0].mlp.down_proj.weight.asnumpy(), tensors["blk.0.ffn_down.weight"])
