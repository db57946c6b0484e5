"""A MindSpore LLaMA decoder (SmolLM2-135M's architecture) with hooks for LoRA, prefix and prompt tuning.

Architecture (float32): token embedding -> ``num_layers`` x [RMSNorm -> grouped-query causal self-attention
with rotary position embedding -> residual -> RMSNorm -> SwiGLU MLP -> residual] -> RMSNorm -> LM head
(tied to the token embedding when ``tie_embeddings``). Rotary uses the *original* (HF, ``rotate_half``)
layout: the first and second halves of a head form the rotated pairs. GGUF files store Q/K rows in
llama.cpp's interleaved order; :func:`benchmarks.models.gguf_loader.unpermute_qk` converts them once and
:func:`load_gguf_weights` does that for you.

Delta hooks:
- every projection is built by ``dense_factory(role=..., layer=..., in_channels=..., out_channels=...)``
  with roles ``q``, ``k``, ``v``, ``o``, ``gate``, ``up``, ``down`` (LoRA on q/v: return a ``LoRADense``
  with ``has_bias=False`` for those roles; the pre-trained weight must stay named ``weight``);
- ``prompt_tokens=n``: a ``PromptTuning`` table whose rows are prepended to the token embeddings
  (``prepend_prompt``); they take positions ``0..n-1``, the text ``n..``; their logits are dropped;
- ``prefix_tokens=p``: a ``PrefixEncoder`` gives every layer ``p`` key/value positions (per KV head) in front
  of the text's keys/values, always visible (``extend_attention_mask``); the text takes positions
  ``p..p+seq-1``, as if it followed ``p`` earlier tokens. Prefix keys are used as given (not rotated).

Parameter names::

    embed_tokens.embedding_table          layers.L.input_norm.weight
    layers.L.attention.{q,k,v,o}_proj.weight
    layers.L.post_attention_norm.weight   layers.L.mlp.{gate,up,down}_proj.weight
    norm.weight                           lm_head.weight (only when not tied)
    prompt.mindpet_delta_prompttuning_embedding, prefix.mindpet_delta_prefixtuning_* (when enabled)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal

from mindpet.delta.prefix_attention import PrefixEncoder, extend_attention_mask
from mindpet.delta.prompt_tuning import PromptTuning, prepend_prompt
from mindpet.kernels import Attention, RMSNorm, SwiGLU

ROLES = ("q", "k", "v", "o", "gate", "up", "down")
DenseFactory = Callable[..., nn.Cell]
MASK_VALUE = -1e9


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    tie_embeddings: bool = True
    max_positions: int = 2048
    attention_backend: Optional[str] = None
    """Backend of the attention core without prefix keys/values (:class:`mindpet.kernels.Attention`):
    None (the global choice), ``'auto'``, ``'fused'`` or ``'composed'`` (the MindSpore ops of
    :class:`LlamaAttention`)."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError("hidden_size must be num_heads * an even head_dim")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_gguf(cls, config, max_positions: int = 2048) -> "LlamaConfig":
        """From a :class:`benchmarks.models.gguf_loader.GGUFConfig`."""
        return cls(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                   intermediate_size=config.intermediate_size, num_layers=config.num_layers,
                   num_heads=config.num_heads, num_kv_heads=config.num_kv_heads, rope_theta=config.rope_theta,
                   rms_eps=config.rms_eps, tie_embeddings=config.tie_embeddings,
                   max_positions=min(max_positions, config.context_length))


def default_dense(*, role: str, layer: int, in_channels: int, out_channels: int) -> nn.Cell:
    """The plain bias-free ``nn.Dense`` of the pre-trained model."""
    del role, layer
    return nn.Dense(in_channels, out_channels, has_bias=False, weight_init=Normal(0.02))


def token_embedding(config: LlamaConfig) -> nn.Embedding:
    """The ``nn.Embedding`` of the token table, without the initial table MindSpore 2.10's ``nn.Embedding`` keeps
    as ``init_tensor`` next to its Parameter: once the pre-trained table is loaded (``set_data``) that initial
    copy would stay for the life of the model (SmolLM2: 108 MiB; ``python -m benchmarks.ms_memory_repro
    --cases embedding_init``)."""
    embedding = nn.Embedding(config.vocab_size, config.hidden_size, embedding_table=Normal(0.02))
    embedding.init_tensor = None  # the Parameter holds the table; nothing reads init_tensor after __init__
    return embedding


def rotary_tables(config: LlamaConfig) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin of shape (max_positions, head_dim): angle ``pos * theta^(-2i/d)``, repeated for both halves."""
    d = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
    angles = np.outer(np.arange(config.max_positions, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return ops.concat((-x[..., half:], x[..., :half]), -1)


class LlamaAttention(nn.Cell):
    def __init__(self, config: LlamaConfig, layer: int, dense_factory: DenseFactory) -> None:
        super().__init__()
        h, d = config.hidden_size, config.head_dim
        self.heads, self.kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, d
        self.groups = self.heads // self.kv_heads
        self.scale = 1.0 / float(np.sqrt(d))
        self.q_proj = dense_factory(role="q", layer=layer, in_channels=h, out_channels=self.heads * d)
        self.k_proj = dense_factory(role="k", layer=layer, in_channels=h, out_channels=self.kv_heads * d)
        self.v_proj = dense_factory(role="v", layer=layer, in_channels=h, out_channels=self.kv_heads * d)
        self.o_proj = dense_factory(role="o", layer=layer, in_channels=self.heads * d, out_channels=h)
        # rotary + causal GQA core in one fused op per direction (no transposes/broadcasts, whose MindSpore
        # CPU kernels keep per-element index tables for the graph's life; no [L, L] tensors kept)
        self.core = Attention(self.heads, d, self.kv_heads, scale=self.scale, causal=True,
                              backend=config.attention_backend)
        self.fused_core = self.core.fused

    def _heads(self, x: Tensor, n: int) -> Tensor:
        b, length, _ = x.shape
        return ops.transpose(ops.reshape(x, (b, length, n, self.head_dim)), (0, 2, 1, 3))

    def _repeat_kv(self, x: Tensor) -> Tensor:
        """(b, kv_heads, L, d) -> (b, heads, L, d); query head ``i`` uses KV head ``i // groups``."""
        if self.groups == 1:
            return x
        b, n, length, d = x.shape
        x = ops.broadcast_to(ops.expand_dims(x, 2), (b, n, self.groups, length, d))
        return ops.reshape(x, (b, n * self.groups, length, d))

    def key_values(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        """Rotated keys and values, each (b, kv_heads, L, head_dim)."""
        k = self._heads(self.k_proj(x), self.kv_heads)
        v = self._heads(self.v_proj(x), self.kv_heads)
        return k * cos + rotate_half(k) * sin, v

    def construct(self, x: Tensor, cos: Tensor, sin: Tensor, mask_bias: Tensor, prefix_key=None,
                  prefix_value=None) -> Tensor:
        """``mask_bias``: the causal mask (what :class:`LlamaLM` passes); without prefix keys/values and with
        a fused core the mask is the core's own causal one."""
        b, length, _ = x.shape
        if prefix_key is None and self.fused_core:
            return self.o_proj(self.core(self.q_proj(x), self.k_proj(x), self.v_proj(x), cos, sin))
        q = self._heads(self.q_proj(x), self.heads)
        q = q * cos + rotate_half(q) * sin
        k, v = self.key_values(x, cos, sin)
        if prefix_key is not None:
            k = ops.concat((prefix_key.astype(k.dtype), k), 2)
            v = ops.concat((prefix_value.astype(v.dtype), v), 2)
        k, v = self._repeat_kv(k), self._repeat_kv(v)
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * self.scale + mask_bias
        context = ops.matmul(ops.softmax(scores, axis=-1), v)
        context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (b, length, self.heads * self.head_dim))
        return self.o_proj(context)


class LlamaMLP(nn.Cell):
    """``down(silu(gate(x)) * up(x))``; the gate product is :class:`mindpet.kernels.SwiGLU` (``backend``)."""

    def __init__(self, config: LlamaConfig, layer: int, dense_factory: DenseFactory,
                 backend: Optional[str] = None) -> None:
        super().__init__()
        h, f = config.hidden_size, config.intermediate_size
        self.gate_proj = dense_factory(role="gate", layer=layer, in_channels=h, out_channels=f)
        self.up_proj = dense_factory(role="up", layer=layer, in_channels=h, out_channels=f)
        self.down_proj = dense_factory(role="down", layer=layer, in_channels=f, out_channels=h)
        self.swiglu = SwiGLU(backend)

    def construct(self, x: Tensor) -> Tensor:
        return self.down_proj(self.swiglu(self.gate_proj(x), self.up_proj(x)))


class LlamaBlock(nn.Cell):
    """Pre-norm decoder block. The second norm takes the attention output with the block input as its
    residual and returns the sum too (``y, h = norm(attn, x)``: one fused op for ``h = x + attn`` and
    ``norm(h)``). ``norm_backend`` / ``mlp_backend`` select the :class:`mindpet.kernels.RMSNorm` /
    :class:`~mindpet.kernels.SwiGLU` implementation (None: the global choice; fused CPU kernels when built,
    else composed)."""

    def __init__(self, config: LlamaConfig, layer: int, dense_factory: DenseFactory,
                 norm_backend: Optional[str] = None, mlp_backend: Optional[str] = None) -> None:
        super().__init__()
        self.input_norm = RMSNorm(config.hidden_size, config.rms_eps, backend=norm_backend)
        self.attention = LlamaAttention(config, layer, dense_factory)
        self.post_attention_norm = RMSNorm(config.hidden_size, config.rms_eps, backend=norm_backend)
        self.mlp = LlamaMLP(config, layer, dense_factory, mlp_backend)

    def construct(self, x, cos, sin, mask_bias, prefix_key=None, prefix_value=None):
        attn = self.attention(self.input_norm(x), cos, sin, mask_bias, prefix_key, prefix_value)
        y, h = self.post_attention_norm(attn, x)
        return h + self.mlp(y)


class SharedLlamaBlock(LlamaBlock):
    """A :class:`LlamaBlock` whose graph MindSpore compiles once for every block of the same structure
    (``mindspore.lazy_inline`` with ``policy="front"``: one sub-graph, inlined by the front end). The
    default policy (a sub-graph kept as a call) fails on CPU in MindSpore 2.10 for a training step;
    ``"front"`` works. Blocks share the graph when their projections are of the same kinds and sizes
    (``graph_key``), whatever their layer index. No prefix keys/values (lazy_inline needs a construct
    without default arguments).

    Dropout: the shared graph holds the first block's constants, so a dropout primitive (``nn.Dropout``,
    ``ops.Dropout``: seeds are attributes) would draw the same mask in every layer. LoRA dropout is allowed
    when its mask comes from MindSpore's generator (``LoRADense.dropout_mask_source == 'generator'``, the
    fused CPU kernels): the generator's seed and offset are Parameters, so each inlined copy draws its own
    offset and every layer, and every step, a different mask. Any other dropout (rate > 0) raises ValueError."""

    @ms.lazy_inline(policy="front", attrs=["graph_key"])
    def __init__(self, config: LlamaConfig, layer: int, dense_factory: DenseFactory,
                 norm_backend: Optional[str] = None, mlp_backend: Optional[str] = None) -> None:
        super().__init__(config, layer, dense_factory, norm_backend, mlp_backend)
        for name, cell in self.cells_and_names():
            rate = getattr(cell, "lora_dropout_p", None) if not isinstance(cell, nn.Dropout) else cell.p
            if rate and getattr(cell, "dropout_mask_source", None) != "generator":
                raise ValueError(f"SharedLlamaBlock: {name or 'the block'} has dropout {rate} drawn by a dropout "
                                 "primitive; in a shared block graph every layer would draw the same mask "
                                 "(measured on MindSpore 2.10): use dropout 0, LoRA on the fused CPU kernels "
                                 "(masks from the generator) or unshared blocks")
        self.graph_key = repr(config) + repr(self)  # the sub-cells' kinds and settings, not the layer index

    def construct(self, x, cos, sin, mask_bias):
        y, h = self.post_attention_norm(self.attention(self.input_norm(x), cos, sin, mask_bias), x)
        return h + self.mlp(y)


class LlamaLM(nn.Cell):
    """``construct(input_ids (batch, seq) int32) -> logits (batch, seq, vocab)`` float32.

    Args:
        config: the architecture.
        dense_factory: builds every projection (see the module docstring).
        prompt_tokens: length of a trainable prompt (``PromptTuning``) prepended to the embeddings; 0 = none.
        prompt_init: optional (prompt_tokens, hidden) array initialising the prompt (e.g. embeddings of
            real tokens, as Lester et al. recommend).
        prefix_tokens: trainable prefix length per layer (``PrefixEncoder``); 0 = none.
        prefix_reparameterize, prefix_mid_dim: passed to ``PrefixEncoder``.
        share_block_graph: build :class:`SharedLlamaBlock` layers (one compiled block graph; not with a
            prefix).
        embedding: a Cell replacing the ``nn.Embedding`` (tied embeddings only): ``construct(ids)`` gives the
            embeddings and its ``head`` the tied logits (a quantised table, issue 16).
        norm_backend, mlp_backend: backend of every :class:`mindpet.kernels.RMSNorm` (the blocks' and the
            final one) and of the MLPs' :class:`mindpet.kernels.SwiGLU`: ``'auto'``, ``'fused'``,
            ``'composed'`` or None (the global choice).
    """

    def __init__(self, config: LlamaConfig, dense_factory: DenseFactory = default_dense, *, prompt_tokens: int = 0,
                 prompt_init: Optional[np.ndarray] = None, prefix_tokens: int = 0,
                 prefix_reparameterize: bool = False, prefix_mid_dim: int = 512,
                 share_block_graph: bool = False, embedding: Optional[nn.Cell] = None,
                 norm_backend: Optional[str] = None, mlp_backend: Optional[str] = None) -> None:
        super().__init__()
        if prompt_tokens and prefix_tokens:
            raise ValueError("use prompt tuning or prefix tuning, not both")
        self.config = config
        # embedding: a Cell in place of nn.Embedding holding a quantised table, whose ``head`` (a QuantizedDense
        # on the same table) computes the tied LM head (benchmarks.lib.lm_model.QuantizedTiedEmbedding)
        self.quantized_embedding = embedding is not None
        self.embed_tokens = embedding if embedding is not None else token_embedding(config)
        if share_block_graph and prefix_tokens:
            raise ValueError("share_block_graph does not support prefix tuning")
        block = SharedLlamaBlock if share_block_graph else LlamaBlock
        self.layers = nn.CellList([block(config, i, dense_factory, norm_backend, mlp_backend)
                                   for i in range(config.num_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_eps, backend=norm_backend)
        self.lm_head = None if config.tie_embeddings else nn.Dense(config.hidden_size, config.vocab_size,
                                                                    has_bias=False)
        self.num_layers = config.num_layers
        self.prompt_tokens, self.prefix_tokens = prompt_tokens, prefix_tokens
        if prompt_tokens:
            init = "normal" if prompt_init is None else Tensor(np.asarray(prompt_init, np.float32))
            self.prompt = PromptTuning(prompt_tokens, config.hidden_size, embedding_init=init)
            self.prompt_ids = self.prompt.default_ids(1)
        if prefix_tokens:
            self.prefix = PrefixEncoder(config.num_layers, config.num_kv_heads, config.head_dim, prefix_tokens,
                                        mid_dim=prefix_mid_dim, reparameterize=prefix_reparameterize)
        # Tied head: MatMul with transpose_b on the (frozen) table itself. Transposing a frozen Parameter
        # inside the graph (ops.transpose(table)) is constant-folded and its copies held: ~4x the table's
        # 113 MB at compile and ~2x at run time (see README, "Memory").
        self.tied_head = ops.MatMul(transpose_b=True)
        cos, sin = rotary_tables(config)
        self.cos, self.sin = Tensor(cos), Tensor(sin)
        self.positions = Tensor(np.arange(config.max_positions, dtype=np.int32))

    def _rotary(self, start: int, length: int):
        return self.cos[start:start + length], self.sin[start:start + length]

    def _mask_bias(self, length: int) -> Tensor:
        pos = self.positions[:length]
        causal = ops.expand_dims(pos, 0) <= ops.expand_dims(pos, 1)
        bias = ops.select(causal, ops.zeros((length, length), ms.float32),
                          ops.fill(ms.float32, (length, length), MASK_VALUE))
        if self.prefix_tokens:
            bias = extend_attention_mask(bias, self.prefix_tokens, keep_value=0.0)
        return bias

    def logits(self, hidden: Tensor) -> Tensor:
        hidden = self.norm(hidden)
        if self.lm_head is None:
            b, length, h = hidden.shape
            if self.quantized_embedding:
                logits = self.embed_tokens.head(ops.reshape(hidden, (b * length, h)))
            else:
                logits = self.tied_head(ops.reshape(hidden, (b * length, h)), self.embed_tokens.embedding_table)
            return ops.reshape(logits, (b, length, self.config.vocab_size))
        return self.lm_head(hidden)

    def construct(self, input_ids: Tensor) -> Tensor:
        batch, seq = input_ids.shape
        x = self.embed_tokens(input_ids)
        if self.prompt_tokens:
            prompt = ops.broadcast_to(self.prompt(self.prompt_ids), (batch, self.prompt_tokens, x.shape[2]))
            x, _ = prepend_prompt(x, prompt)
        length = x.shape[1]
        cos, sin = self._rotary(self.prefix_tokens, length)
        bias = self._mask_bias(length)
        if self.prefix_tokens:
            prefixes = self.prefix(batch)
            for i in range(self.num_layers):
                x = self.layers[i](x, cos, sin, bias, prefixes[i][0], prefixes[i][1])
        else:
            for i in range(self.num_layers):
                x = self.layers[i](x, cos, sin, bias)
        if self.prompt_tokens:
            x = x[:, self.prompt_tokens:]
        return self.logits(x)

    def key_values(self, input_ids: Tensor) -> list:
        """Per layer (rotated keys, values), each (batch, kv_heads, seq, head_dim), of the frozen model
        run on ``input_ids`` at positions ``0..seq-1`` without prompt/prefix (e.g. to initialise a prefix
        from real text). Call it in PYNATIVE mode."""
        seq = input_ids.shape[1]
        x = self.embed_tokens(input_ids)
        cos, sin = self._rotary(0, seq)
        pos = np.arange(seq)
        bias = Tensor(np.where(pos[None, :] <= pos[:, None], 0.0, MASK_VALUE).astype(np.float32))
        out = []
        for i in range(self.num_layers):
            layer = self.layers[i]
            out.append(layer.attention.key_values(layer.input_norm(x), cos, sin))
            x = layer(x, cos, sin, bias)
        return out


def prefix_from_key_values(key_values: list) -> np.ndarray:
    """``PrefixEncoder`` (``reparameterize=False``) value from :meth:`LlamaLM.key_values` of one sequence:
    (prefix_len, num_layers * 2 * kv_heads * head_dim), so layer ``i``'s prefix keys/values are exactly
    the keys/values the frozen model computed for those tokens."""
    kv = np.stack([np.stack([k.asnumpy()[0], v.asnumpy()[0]]) for k, v in key_values])  # (L, 2, n, P, d)
    return np.ascontiguousarray(kv.transpose(3, 0, 1, 2, 4).reshape(kv.shape[3], -1)).astype(np.float32)


def gguf_name_map(num_layers: int, tie_embeddings: bool = True) -> Dict[str, str]:
    """GGUF tensor name -> parameter name of :class:`LlamaLM`."""
    names = {"token_embd.weight": "embed_tokens.embedding_table", "output_norm.weight": "norm.weight"}
    if not tie_embeddings:
        names["output.weight"] = "lm_head.weight"
    per_layer = {"attn_norm": "input_norm", "attn_q": "attention.q_proj", "attn_k": "attention.k_proj",
                 "attn_v": "attention.v_proj", "attn_output": "attention.o_proj",
                 "ffn_norm": "post_attention_norm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj"}
    for i in range(num_layers):
        for src, dst in per_layer.items():
            names[f"blk.{i}.{src}.weight"] = f"layers.{i}.{dst}.weight"
    return names


def load_gguf_weights(net: LlamaLM, tensors: Mapping[str, np.ndarray], hf_layout: bool) -> None:
    """Copy GGUF-named float32 tensors into ``net``. ``hf_layout=False``: the tensors are as stored in the
    GGUF (Q/K rows interleaved) and are un-permuted here. Raises on a missing, unexpected or mis-shaped
    tensor; parameters named ``mindpet_delta_*`` may stay unset. The Parameters take over the float32 arrays'
    memory (``Tensor.from_numpy``, no copy; un-permuted Q/K are new arrays): do not modify the arrays
    afterwards."""
    from benchmarks.models.gguf_loader import unpermute_rows
    config = net.config
    mapping = gguf_name_map(config.num_layers, config.tie_embeddings)
    unexpected = sorted(set(tensors) - set(mapping))
    if unexpected:
        raise ValueError(f"unexpected tensors: {unexpected[:5]}")
    params = {p.name: p for p in net.get_parameters()}
    missing = [dst for src, dst in mapping.items() if src not in tensors]
    if missing:
        raise ValueError(f"missing tensors for: {missing[:5]}")
    for src, dst in mapping.items():
        value = np.asarray(tensors[src], np.float32)
        if not hf_layout and src.endswith("attn_q.weight"):
            value = unpermute_rows(value, config.num_heads)
        elif not hf_layout and src.endswith("attn_k.weight"):
            value = unpermute_rows(value, config.num_kv_heads)
        if dst not in params:
            raise ValueError(f"the network has no parameter {dst!r} (for {src})")
        if tuple(params[dst].shape) != value.shape:
            raise ValueError(f"{src}: shape {value.shape} does not fit {dst} {tuple(params[dst].shape)}")
        # no copy: the Parameter takes over the array's memory (a copy per tensor raised the load's peak by
        # ~108 MiB on SmolLM2 while the initial values were still held)
        params[dst].set_data(Tensor.from_numpy(np.ascontiguousarray(value)))
    unset = [name for name in params if name not in mapping.values() and "mindpet_delta_" not in name]
    if unset:
        raise ValueError(f"parameters without a pre-trained value: {unset[:5]}")
