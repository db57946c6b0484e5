"""Models of the language-model table: the pre-trained weights (SmolLM2 from its GGUF, or a tiny random LLaMA)
and :func:`build`, the :class:`~benchmarks.models.llama.LlamaLM` of a method with those weights loaded."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

from benchmarks.lib.lm_data import LMData
from benchmarks.lib.lm_profile import Profile


@dataclass
class Pretrained:
    name: str
    config: object  # LlamaConfig
    tensors: Dict[str, np.ndarray]  # GGUF names, GGUF (interleaved Q/K) layout


def smollm2(profile: Profile):
    from benchmarks.models import gguf_loader
    from benchmarks.models.llama import LlamaConfig
    gconfig, tensors, reader = gguf_loader.read_gguf(gguf_loader.smollm2_path())
    tokenizer = gguf_loader.build_tokenizer(reader)
    config = LlamaConfig.from_gguf(gconfig, max_positions=profile.seq_len + 64)
    return Pretrained("SmolLM2-135M-Instruct (GGUF Q4_1 -> float32)", config, tensors), tokenizer


def synthetic_model(seed: int = 0, vocab: int = 64):
    from benchmarks.models.llama import LlamaConfig
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                         num_kv_heads=2, rope_theta=10000.0, rms_eps=1e-5, max_positions=128)
    rng = np.random.default_rng(seed)
    d = config.head_dim
    w = lambda *s: (rng.standard_normal(s) * 0.1).astype(np.float32)  # noqa: E731
    t = {"token_embd.weight": w(vocab, 32), "output_norm.weight": np.ones(32, np.float32)}
    for i in range(config.num_layers):
        p = f"blk.{i}."
        t.update({p + "attn_norm.weight": np.ones(32, np.float32), p + "ffn_norm.weight": np.ones(32, np.float32),
                  p + "attn_q.weight": w(4 * d, 32), p + "attn_k.weight": w(2 * d, 32),
                  p + "attn_v.weight": w(2 * d, 32), p + "attn_output.weight": w(32, 4 * d),
                  p + "ffn_gate.weight": w(48, 32), p + "ffn_up.weight": w(48, 32), p + "ffn_down.weight": w(32, 48)})
    return Pretrained("synthetic tiny LLaMA", config, t)


def build(method: str, pretrained: Pretrained, data: LMData, profile: Profile):
    """The LlamaLM of ``method`` with pre-trained weights loaded and the delta initialised (not yet frozen)."""
    import mindspore as ms
    from mindpet.delta import LoRADense
    from benchmarks.models.llama import LlamaLM, default_dense, load_gguf_weights, prefix_from_key_values

    config, first = pretrained.config, data.train.reshape(-1)
    kwargs, factory = {}, default_dense
    if method == "prompt":
        kwargs = dict(prompt_tokens=profile.prompt_tokens,
                      prompt_init=pretrained.tensors["token_embd.weight"][first[:profile.prompt_tokens]])
    elif method == "prefix":
        kwargs = dict(prefix_tokens=profile.prefix_tokens, prefix_reparameterize=False)
    elif method == "lora":
        def lora_qv(*, role, layer, in_channels, out_channels):
            if role not in ("q", "v"):
                return default_dense(role=role, layer=layer, in_channels=in_channels, out_channels=out_channels)
            return LoRADense(in_channels, out_channels, lora_rank=profile.lora_rank, lora_alpha=profile.lora_alpha,
                             lora_dropout=profile.lora_dropout, has_bias=False, param_init_type=ms.float32,
                             compute_dtype=ms.float32)
        factory = lora_qv
    net = LlamaLM(config, factory, **kwargs)
    load_gguf_weights(net, pretrained.tensors, hf_layout=False)
    if method == "prefix":
        mode = ms.get_context("mode")
        ms.set_context(mode=ms.PYNATIVE_MODE)
        base_kv = net.key_values(ms.Tensor(first[None, :profile.prefix_tokens].astype(np.int32)))
        ms.set_context(mode=mode)
        net.prefix.mindpet_delta_prefixtuning_past_key_values.set_data(ms.Tensor(prefix_from_key_values(base_kv)))
    return net
