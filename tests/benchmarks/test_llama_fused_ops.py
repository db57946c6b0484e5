"""The benchmark LLaMA with mindpet's fused RMSNorm (residual add fused), SwiGLU and attention core trains like
the composed model: same logits, three LoRA steps' losses and logits after them, inlined, with the shared block
graph, and with a prefix (keys/values in front, the mask extended). (Logits against numpy:
tests/benchmarks/test_smollm2_port.py.)"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

from benchmarks.lib.lm_model import synthetic_model
from benchmarks.lib.lm_training import _cells
from benchmarks.models.llama import LlamaLM, default_dense, load_gguf_weights
from mindpet.delta import LoRADense
from mindpet.graph import freeze_delta
from mindpet.kernels.backend import fused_implementation

requires_fused = pytest.mark.skipif(fused_implementation("CPU")[0] != "cpu",
                                    reason="mindpet CPU kernel library not built")


def _lora(*, role, layer, in_channels, out_channels):
    if role not in ("q", "v"):
        return default_dense(role=role, layer=layer, in_channels=in_channels, out_channels=out_channels)
    return LoRADense(in_channels, out_channels, lora_rank=4, lora_alpha=8, lora_dropout=0.0, has_bias=False)


def _train(backend: str, ids: Tensor, **kwargs):
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    pre = synthetic_model()
    config = dataclasses.replace(pre.config, attention_backend=backend)
    net = LlamaLM(config, _lora, norm_backend=backend, mlp_backend=backend, **kwargs)
    load_gguf_weights(net, pre.tensors, hf_layout=False)
    rng = np.random.default_rng(1)
    for p in net.get_parameters():
        if "mindpet_delta_" in p.name:
            p.set_data(Tensor((rng.standard_normal(p.shape) * 0.1).astype(np.float32)))
    freeze_delta(net, "lora")  # with a prefix: the LoRA trains through the prefix-extended attention
    net.set_train(False)
    before = net(ids).asnumpy()
    step = nn.TrainOneStepCell(_cells()[1](net), nn.Adam(net.trainable_params(), 1e-2))
    net.set_train(True)
    losses = [float(step(ids).asnumpy()) for _ in range(3)]
    net.set_train(False)
    return net, losses, before, net(ids).asnumpy()


@requires_fused
@pytest.mark.parametrize("kwargs", [{}, {"share_block_graph": True}, {"prefix_tokens": 3}],
                         ids=["inlined", "shared-block-graph", "prefix"])
def test_fused_model_trains_like_composed(kwargs):
    ids = Tensor(np.random.default_rng(0).integers(0, 64, (1, 16)).astype(np.int32))
    fused, fused_losses, fused_before, fused_after = _train("fused", ids, **kwargs)
    _, composed_losses, composed_before, composed_after = _train("composed", ids, **kwargs)
    block = fused.layers[0]
    assert (block.input_norm.impl, block.mlp.swiglu.impl, block.attention.core.impl) == ("cpu", "cpu", "cpu")
    np.testing.assert_allclose(fused_losses, composed_losses, rtol=2e-5)
    assert fused_losses[-1] < fused_losses[0]
    # float32 logits of magnitude ~1 after 2 blocks, rounded differently by each fused op
    np.testing.assert_allclose(fused_before, composed_before, rtol=1e-5, atol=1e-4)
    # after 3 Adam steps (lr 1e-2, which normalises tiny gradients to full steps): near, not equal
    np.testing.assert_allclose(fused_after, composed_after, rtol=1e-2, atol=3e-3)
