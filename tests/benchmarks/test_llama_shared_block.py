"""SharedLlamaBlock (one compiled block graph via lazy_inline(policy="front")) trains exactly like the inlined
blocks. (The tied LM head against numpy: tests/benchmarks/test_smollm2_port.py.)"""
from __future__ import annotations

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

from benchmarks.lib.lm_model import synthetic_model
from benchmarks.lib.lm_training import _cells
from benchmarks.models.llama import LlamaLM, SharedLlamaBlock, default_dense, load_gguf_weights
from mindpet.delta import LoRADense
from mindpet.graph import freeze_delta
from mindpet.kernels import backend as kbackend, generator_state

FUSED = kbackend.fused_implementation("CPU")[0] == "cpu"


def _lora(*, role, layer, in_channels, out_channels):
    if role not in ("q", "v"):
        return default_dense(role=role, layer=layer, in_channels=in_channels, out_channels=out_channels)
    return LoRADense(in_channels, out_channels, lora_rank=4, lora_alpha=8, lora_dropout=0.0, has_bias=False)


def _train(share: bool, ids: Tensor):
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    pre = synthetic_model()
    net = LlamaLM(pre.config, _lora, share_block_graph=share)
    load_gguf_weights(net, pre.tensors, hf_layout=False)
    rng = np.random.default_rng(1)
    for p in net.get_parameters():
        if "mindpet_delta_lora" in p.name:
            p.set_data(Tensor((rng.standard_normal(p.shape) * 0.1).astype(np.float32)))
    freeze_delta(net, "lora")
    step = nn.TrainOneStepCell(_cells()[1](net), nn.Adam(net.trainable_params(), 1e-2))
    net.set_train(True)
    losses = [float(step(ids).asnumpy()) for _ in range(3)]
    net.set_train(False)
    return net, losses, net(ids).asnumpy()


def test_shared_block_graph_trains_like_inlined_blocks():
    ids = Tensor(np.random.default_rng(0).integers(0, 64, (1, 16)).astype(np.int32))
    plain, plain_losses, plain_logits = _train(False, ids)
    shared, shared_losses, shared_logits = _train(True, ids)
    assert all(isinstance(b, SharedLlamaBlock) for b in shared.layers)
    assert shared.layers[0].graph_key == shared.layers[1].graph_key  # one graph whatever the layer index
    np.testing.assert_allclose(shared_losses, plain_losses, rtol=1e-6)
    assert shared_losses[-1] < shared_losses[0]
    np.testing.assert_allclose(shared_logits, plain_logits, rtol=1e-5, atol=1e-6)


def test_block_structure_decides_the_graph_key_and_prefix_is_refused():
    pre = synthetic_model()
    lora_only_first = lambda *, role, layer, **kw: _lora(role=role if layer == 0 else "o", layer=layer, **kw)  # noqa: E731
    net = LlamaLM(pre.config, lora_only_first, share_block_graph=True)
    assert net.layers[0].graph_key != net.layers[1].graph_key  # different blocks: not one graph
    with pytest.raises(ValueError, match="share_block_graph does not support prefix"):
        LlamaLM(pre.config, share_block_graph=True, prefix_tokens=2)


def _lora_with_dropout(backend):
    def factory(*, role, layer, in_channels, out_channels):
        if role not in ("q", "v"):
            return default_dense(role=role, layer=layer, in_channels=in_channels, out_channels=out_channels)
        return LoRADense(in_channels, out_channels, lora_rank=4, lora_alpha=8, lora_dropout=0.05, has_bias=False,
                         compute_dtype=ms.float32, backend=backend)
    return factory


@pytest.mark.skipif(not FUSED, reason="mindpet CPU kernel library not built")
def test_shared_blocks_with_primitive_dropout_are_refused():
    # One shared graph gives every layer the first block's dropout seeds: a Dropout primitive would draw
    # identical masks in every layer (the composed backend's LoRA dropout).
    pre = synthetic_model()
    with pytest.raises(ValueError, match="drawn by a dropout primitive; in a shared block graph every layer would "
                                         "draw the same mask"):
        LlamaLM(pre.config, _lora_with_dropout("composed"), share_block_graph=True)
    assert LlamaLM(pre.config, _lora_with_dropout("composed")).layers[0].attention.q_proj.lora_dropout_p == 0.05


@pytest.mark.skipif(not FUSED, reason="mindpet CPU kernel library not built")
def test_shared_blocks_train_with_generator_dropout():
    """LoRA dropout drawn from MindSpore's generator (fused CPU kernels): accepted in a shared block graph; each
    LoRA layer of each step draws its own counters (the generator advances by numel per layer and step) and a
    training step of the 2-block model learns."""
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    pre = synthetic_model()
    net = LlamaLM(pre.config, _lora_with_dropout(None), share_block_graph=True)
    q_proj = net.layers[1].attention.q_proj
    assert q_proj.dropout_mask_source == "generator" and isinstance(net.layers[1], SharedLlamaBlock)
    load_gguf_weights(net, pre.tensors, hf_layout=False)
    freeze_delta(net, "lora")
    step = nn.TrainOneStepCell(_cells()[1](net), nn.Adam(net.trainable_params(), 1e-2))
    net.set_train(True)
    ids = Tensor(np.random.default_rng(0).integers(0, 64, (1, 16)).astype(np.int32))
    losses = []
    for _ in range(6):
        offset = generator_state()[1]
        losses.append(float(step(ids).asnumpy()))
        assert generator_state()[1] == offset + 2 * 2 * 16 * 32  # 2 blocks x (q, v), one [16, 32] mask each
    assert losses[-1] < losses[0]
