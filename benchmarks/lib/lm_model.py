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
    tensors: Dict[str, np.ndarray]  # GGUF names, GGUF (interleaved Q/K) layout unless hf_layout
    hf_layout: bool = False  # Q/K rows already un-permuted (the quantised loaders do it on the codes)


def smollm2(profile: Profile):
    from benchmarks.models import gguf_loader
    from benchmarks.models.llama import LlamaConfig
    gconfig, tensors, reader = gguf_loader.read_gguf(gguf_loader.smollm2_path())
    tokenizer = gguf_loader.build_tokenizer(reader)
    config = LlamaConfig.from_gguf(gconfig, max_positions=profile.seq_len + 64)
    return Pretrained("SmolLM2-135M-Instruct (GGUF Q4_1 -> float32)", config, tensors), tokenizer


# Methods on a quantised base: the format of the projections' weights (None: as stored in the GGUF, Q4_1).
QUANT_FORMAT = {"lora_q4": None, "lora_q8": "q8_0"}
SYNTHETIC_Q4 = "q4_1"  # the synthetic model's stand-in for the GGUF's Q4_1
GGUF_ROLE = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output", "gate": "ffn_gate", "up": "ffn_up",
             "down": "ffn_down"}


def embedding_format(profile: Profile, method: str):
    """The format of the tied token embedding of ``method`` (None: as stored, the GGUF's / synthetic Q8_0)."""
    return profile.q4_embedding if method == "lora_q4" and profile.q4_embedding != "q8_0" else None


def smollm2_quantized(profile: Profile, method: str):
    """SmolLM2 with every projection as a QuantizedTensor read straight from its GGUF blocks (``lora_q8``: each
    re-encoded to q8_0, a float32 copy of one tensor at a time); Q/K rows un-permuted on the codes. The token
    embedding (also the tied LM head) stays in its stored Q8_0 blocks, or is re-encoded to
    ``profile.q4_embedding`` for ``lora_q4`` (:func:`embedding_format`; default q5_0; a float32 copy of that one
    table while it is re-encoded); the norms are stored F32. No float copy of the model."""
    from benchmarks.models import gguf_loader
    from benchmarks.models.llama import LlamaConfig
    from mindpet.quant.gguf import read_gguf_quantized, unpermute_qk
    reader = gguf_loader._reader(gguf_loader.smollm2_path())  # pylint: disable=protected-access
    gconfig = gguf_loader.read_config(reader)
    tokenizer = gguf_loader.build_tokenizer(reader)
    config = LlamaConfig.from_gguf(gconfig, max_positions=profile.seq_len + 64)
    projections = [t.name for t in reader.tensors if t.name.rsplit(".", 2)[-2] in GGUF_ROLE.values()]
    others = [t.name for t in reader.tensors if t.name not in projections and t.name != "token_embd.weight"]
    tensors = read_gguf_quantized(reader, projections, format=QUANT_FORMAT[method])
    tensors.update(read_gguf_quantized(reader, ["token_embd.weight"], format=embedding_format(profile, method)))
    tensors.update(read_gguf_quantized(reader, others))  # the F32 norms
    tensors = unpermute_qk(tensors, config.num_heads, config.num_kv_heads)
    fmt = QUANT_FORMAT[method] or "q4_1"
    embed = (f"embedding re-encoded Q8_0 -> {embedding_format(profile, method)}" if embedding_format(profile, method)
             else "Q8_0 embedding as stored")
    return Pretrained(f"SmolLM2-135M-Instruct (GGUF Q4_1 projections as {fmt}, {embed})", config,
                      tensors, hf_layout=True), tokenizer


def quantized_synthetic(pretrained: Pretrained, method: str, profile: Profile = Profile()) -> Pretrained:
    """The synthetic model with every projection whose in_channels fits the group size quantised (others stay
    float), Q/K un-permuted: the tiny stand-in of :func:`smollm2_quantized`."""
    from mindpet.quant import format_spec, quantize
    from mindpet.quant.gguf import unpermute_qk
    fmt = QUANT_FORMAT[method] or SYNTHETIC_Q4
    config = pretrained.config
    tensors = unpermute_qk(pretrained.tensors, config.num_heads, config.num_kv_heads)
    group = format_spec(fmt).group_size_for
    for name, value in list(tensors.items()):
        if name.rsplit(".", 2)[-2] in GGUF_ROLE.values() and value.shape[1] % group(value.shape[1]) == 0:
            tensors[name] = quantize(value, fmt)
    if tensors["token_embd.weight"].shape[1] % 32 == 0:  # as SmolLM2's GGUF stores it
        tensors["token_embd.weight"] = quantize(tensors["token_embd.weight"], embedding_format(profile, method) or "q8_0")
    return Pretrained(f"{pretrained.name} ({fmt} projections)", config, tensors, hf_layout=True)


def _quantized_factory(pretrained: Pretrained, profile: Profile, lora_roles=("q", "v")):
    """The dense factory of a quantised base: a QuantizedDense holding the projection's QuantizedTensor (no float
    weight), LoRA (q/v) on top; a projection left float (synthetic) gets the float layers."""
    import mindspore as ms
    from mindpet.delta import LoRADense
    from mindpet.quant import QuantizedDense, QuantizedTensor
    from benchmarks.models.llama import default_dense

    def lora(in_channels, out_channels, base=None):
        return LoRADense(in_channels, out_channels, lora_rank=profile.lora_rank, lora_alpha=profile.lora_alpha,
                         lora_dropout=profile.lora_dropout, has_bias=False, param_init_type=ms.float32,
                         compute_dtype=ms.float32, base=base)

    def factory(*, role, layer, in_channels, out_channels):
        weight = pretrained.tensors[f"blk.{layer}.{GGUF_ROLE[role]}.weight"]
        if isinstance(weight, QuantizedTensor):
            base = QuantizedDense.from_quantized(weight, compute_dtype=ms.float32)
            return lora(in_channels, out_channels, base) if role in lora_roles else base
        if role in lora_roles:
            return lora(in_channels, out_channels)
        return default_dense(role=role, layer=layer, in_channels=in_channels, out_channels=out_channels)

    return factory


def quantized_tied_embedding(q):
    """The token embedding and tied LM head on one quantised table ``q`` ``[vocab, hidden]`` (any format: the
    GGUF's Q8_0 blocks, or a 4-/5-bit re-encoding): the head is a QuantizedDense on the table (``logits = h
    deq(E)^T``, through quant_lora_linear) and the embedding gathers the codes, scales (and offsets) of the
    tokens' rows and dequantises only those (``kernels.dequantize_composed``). No float copy of the table."""
    import mindspore as ms
    from mindspore import nn, ops
    from mindpet.kernels import dequantize_composed
    from mindpet.quant import QuantizedDense

    class QuantizedTiedEmbedding(nn.Cell):
        def __init__(self):
            super().__init__()
            self.head = QuantizedDense.from_quantized(q, compute_dtype=ms.float32)
            self.hidden, self.group, self.bits = int(q.shape[1]), int(q.group_size), int(q.bits)
            self.has_offsets = q.offsets is not None

        def construct(self, input_ids):
            flat = input_ids.reshape((-1,))
            head = self.head
            offsets = ops.gather(head.weight_offsets, flat, 0) if self.has_offsets else None
            rows = dequantize_composed(ops.gather(head.weight_codes, flat, 0), ops.gather(head.weight_scales, flat, 0),
                                       offsets, head._lut, self.bits, self.group,  # pylint: disable=protected-access
                                       ms.float32)  # [tokens, hidden]
            return rows.reshape(input_ids.shape + (self.hidden,))

    return QuantizedTiedEmbedding()


def load_quantized_weights(net, pretrained: Pretrained) -> None:
    """Load every float tensor of ``pretrained`` (norms, embedding, float projections) into ``net``, whose
    quantised projections were built holding their weights; raises on any other mismatch."""
    from mindpet.quant import QuantizedTensor, load_quantized_into
    from benchmarks.models.llama import gguf_name_map
    mapping = gguf_name_map(pretrained.config.num_layers, pretrained.config.tie_embeddings)
    floats = {mapping[k]: v for k, v in pretrained.tensors.items() if not isinstance(v, QuantizedTensor)}
    quantised = {cell.weight_codes.name[:-len("_codes")] for _, cell in net.cells_and_names()
                 if getattr(cell, "quantized_weight", None) is not None}  # built holding their weights
    report = load_quantized_into(net, floats, strict=False)
    if report.unexpected_keys or set(report.missing_keys) - quantised:
        raise ValueError(f"quantised model load: unexpected {report.unexpected_keys[:5]}, missing "
                         f"{sorted(set(report.missing_keys) - quantised)[:5]}")


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
    from mindpet.quant import QuantizedTensor
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
    elif method in QUANT_FORMAT:
        factory = _quantized_factory(pretrained, profile)
    if method in QUANT_FORMAT and isinstance(pretrained.tensors.get("token_embd.weight"), QuantizedTensor):
        kwargs = dict(embedding=quantized_tied_embedding(pretrained.tensors["token_embd.weight"]))
    net = LlamaLM(config, factory, share_block_graph=profile.shares_block_graph(method), **kwargs)
    if method in QUANT_FORMAT:
        load_quantized_weights(net, pretrained)
    else:
        load_gguf_weights(net, pretrained.tensors, hf_layout=pretrained.hf_layout)
    if method == "prefix":
        mode = ms.get_context("mode")
        ms.set_context(mode=ms.PYNATIVE_MODE)
        base_kv = net.key_values(ms.Tensor(first[None, :profile.prefix_tokens].astype(np.int32)))
        ms.set_context(mode=mode)
        net.prefix.mindpet_delta_prefixtuning_past_key_values.set_data(ms.Tensor(prefix_from_key_values(base_kv)))
    return net
