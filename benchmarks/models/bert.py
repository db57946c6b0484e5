"""A MindSpore BERT encoder (the HF ``BertModel`` architecture, post-LayerNorm) with a sentence classifier.

Every dense layer of the encoder (attention query/key/value/output, FFN intermediate/output) is built by a
``dense_factory(role, layer, in_channels, out_channels)``, so delta layers (LoRA on query and value,
adapters after the output projections) plug in without touching this module. A replacement must keep
``weight`` / ``bias`` as the names of its pre-trained parameters so the pre-trained weights still load.

LayerNorms (residual add fused), the exact GELU and the attention core (key-padding mask and the
attention-probability dropout inside, in the projections' ``[B, L, hidden]`` layout: no transposes, no
``[B, heads, L, L]`` tensor kept for the backward) are ``mindpet.kernels`` ops (fused on CPU, see
``KERNEL_BACKEND``); parameter names are those of ``nn.LayerNorm``. Prefix-tuning's attention (more keys than
queries) stays composed.

Parameter names of :class:`BertClassifier` (``L`` = layer index)::

    bert.embeddings.{word,position,token_type}_embeddings.embedding_table
    bert.embeddings.layer_norm.{gamma,beta}
    bert.layers.L.attention.{query,key,value,output}.{weight,bias}
    bert.layers.L.attention.layer_norm.{gamma,beta}
    bert.layers.L.ffn.{intermediate,output}.{weight,bias}
    bert.layers.L.ffn.layer_norm.{gamma,beta}
    head.{weight,bias}
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import TruncatedNormal

from mindpet.delta import PromptTuning, prepend_prompt
from mindpet.delta.prefix_attention import PrefixEncoder, extend_attention_mask
from mindpet.kernels import Activation, Attention, LayerNorm

ROLES = ("query", "key", "value", "attention_output", "intermediate", "output")
DenseFactory = Callable[..., nn.Cell]
"""``factory(role=..., layer=..., in_channels=..., out_channels=...) -> Cell`` mapping ``[*, in] -> [*, out]``."""
# Prefix- and prompt-tuning change the attention inputs, not a dense: see PrefixBertEncoder and
# PromptBertEncoder (a BertClassifier takes either as ``encoder``).

MASK_VALUE = -1e9

KERNEL_BACKEND: str | None = None
"""Backend of the LayerNorms (residual add fused), the exact GELU and the attention core: ``'auto'`` /
``'fused'`` / ``'composed'``, or None for the global ``mindpet.kernels`` choice. Read when a model is built;
``'composed'`` gives the MindSpore ops of ``nn.LayerNorm``, :class:`ExactGELU` and the usual BERT attention
(transposes, additive ``-1e9`` mask, softmax, ``nn.Dropout``-style dropout)."""


@dataclass(frozen=True)
class BertConfig:
    """The fields of a HF BERT ``config.json`` that define the forward pass."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act != "gelu":
            raise ValueError(f"only hidden_act='gelu' (exact, erf) is implemented, got {self.hidden_act!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "BertConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_json(cls, path: str | Path) -> "BertConfig":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def default_dense(*, role: str, layer: int, in_channels: int, out_channels: int) -> nn.Cell:
    """The plain ``nn.Dense`` of the pre-trained model (float32)."""
    del role, layer
    return nn.Dense(in_channels, out_channels, weight_init=TruncatedNormal(0.02))


def _dropout(p: float) -> nn.Cell:
    return nn.Dropout(p=p) if p > 0 else nn.Identity()


class ExactGELU(nn.Cell):
    """``0.5 x (1 + erf(x / sqrt 2))``. Written out because CPU ``nn.GELU(approximate=False)`` uses tanh.

    The model uses :func:`exact_gelu` (the fused ``mindpet.kernels.Activation('gelu_erf')``); this
    composed form is kept as the reference."""

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return 0.5 * x * (1.0 + ops.erf(x * (1.0 / math.sqrt(2.0))))


def exact_gelu() -> nn.Cell:
    """Exact (erf) GELU: one fused CPU op, composed MindSpore ops elsewhere (see ``KERNEL_BACKEND``)."""
    return Activation("gelu_erf", backend=KERNEL_BACKEND)


def layer_norm(config: BertConfig) -> LayerNorm:
    """``nn.LayerNorm((hidden,), epsilon=layer_norm_eps)`` as ``mindpet.kernels.LayerNorm`` (same ``gamma`` /
    ``beta``); ``norm(x, residual)`` computes ``LN(x + residual)`` in one op."""
    return LayerNorm((config.hidden_size,), epsilon=config.layer_norm_eps, backend=KERNEL_BACKEND)


class BertEmbeddings(nn.Cell):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        init = TruncatedNormal(config.initializer_range)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, embedding_table=init)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size,
                                                embedding_table=init)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size, embedding_table=init)
        self.layer_norm = layer_norm(config)
        self.dropout = _dropout(config.hidden_dropout_prob)
        self.position_ids = ms.Tensor(np.arange(config.max_position_embeddings, dtype=np.int32))

    def construct(self, input_ids: ms.Tensor, token_type_ids: ms.Tensor) -> ms.Tensor:
        # positions gathered per batch row ([B, L], not [L] broadcast in the add): same-shape adds, so MindSpore's
        # CPU broadcasting Add keeps no per-element index table for the graph's life
        positions = ops.broadcast_to(self.position_ids[:input_ids.shape[1]], input_ids.shape)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) \
            + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.layer_norm(x))


class BertAttention(nn.Cell):
    """Multi-head self-attention, output projection, dropout, residual and LayerNorm.

    ``construct(x, key_mask)`` runs the ``mindpet.kernels.Attention`` core (``key_mask [B, L]``, 1 = real
    token; the attention-probability dropout inside it). A query of a batch row whose keys are all masked
    gets a zero context (HF BERT's additive mask gives the mean of the values there); only the padded rows of
    an all-padding sequence are such rows, and mean pooling drops them."""

    def __init__(self, config: BertConfig, layer: int, dense_factory: DenseFactory) -> None:
        super().__init__()
        h = config.hidden_size
        self.heads = config.num_attention_heads
        self.head_dim = h // self.heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.query = dense_factory(role="query", layer=layer, in_channels=h, out_channels=h)
        self.key = dense_factory(role="key", layer=layer, in_channels=h, out_channels=h)
        self.value = dense_factory(role="value", layer=layer, in_channels=h, out_channels=h)
        self.output = dense_factory(role="attention_output", layer=layer, in_channels=h, out_channels=h)
        self.core = Attention(self.heads, self.head_dim, scale=self.scale, causal=False, backend=KERNEL_BACKEND,
                              dropout=config.attention_probs_dropout_prob)
        self.attention_dropout = _dropout(config.attention_probs_dropout_prob)  # prefix-tuning's attention
        self.dropout = _dropout(config.hidden_dropout_prob)
        self.layer_norm = layer_norm(config)

    def _split_heads(self, x: ms.Tensor) -> ms.Tensor:
        b, length, _ = x.shape
        return ops.transpose(ops.reshape(x, (b, length, self.heads, self.head_dim)), (0, 2, 1, 3))

    def construct(self, x: ms.Tensor, key_mask: ms.Tensor) -> ms.Tensor:
        context = self.core(self.query(x), self.key(x), self.value(x), None, None, key_mask)
        return self.layer_norm(self.dropout(self.output(context)), x)  # LN(x + dropout(output))

    def with_prefix(self, x: ms.Tensor, mask_bias: ms.Tensor, prefix_key: ms.Tensor,
                    prefix_value: ms.Tensor) -> ms.Tensor:
        """Attention whose keys and values are preceded by ``prefix_key`` / ``prefix_value``
        ``[B, heads, P, head_dim]``; ``mask_bias`` must already cover the ``P + L`` keys."""
        q = self._split_heads(self.query(x))
        k = ops.concat((ops.cast(prefix_key, x.dtype), self._split_heads(self.key(x))), 2)
        v = ops.concat((ops.cast(prefix_value, x.dtype), self._split_heads(self.value(x))), 2)
        return self._attend(x, q, k, v, mask_bias)

    def _attend(self, x: ms.Tensor, q: ms.Tensor, k: ms.Tensor, v: ms.Tensor, mask_bias: ms.Tensor) -> ms.Tensor:
        b, length, h = x.shape
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * self.scale + mask_bias
        probs = self.attention_dropout(ops.softmax(scores, axis=-1))
        context = ops.reshape(ops.transpose(ops.matmul(probs, v), (0, 2, 1, 3)), (b, length, h))
        return self.layer_norm(self.dropout(self.output(context)), x)  # LN(x + dropout(output))


class BertFeedForward(nn.Cell):
    """Intermediate dense, exact GELU, output dense, dropout, residual and LayerNorm."""

    def __init__(self, config: BertConfig, layer: int, dense_factory: DenseFactory) -> None:
        super().__init__()
        h, inner = config.hidden_size, config.intermediate_size
        self.intermediate = dense_factory(role="intermediate", layer=layer, in_channels=h, out_channels=inner)
        self.activation = exact_gelu()
        self.output = dense_factory(role="output", layer=layer, in_channels=inner, out_channels=h)
        self.dropout = _dropout(config.hidden_dropout_prob)
        self.layer_norm = layer_norm(config)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return self.layer_norm(self.dropout(self.output(self.activation(self.intermediate(x)))), x)


class BertLayer(nn.Cell):
    def __init__(self, config: BertConfig, layer: int, dense_factory: DenseFactory) -> None:
        super().__init__()
        self.attention = BertAttention(config, layer, dense_factory)
        self.ffn = BertFeedForward(config, layer, dense_factory)

    def construct(self, x: ms.Tensor, key_mask: ms.Tensor) -> ms.Tensor:
        return self.ffn(self.attention(x, key_mask))

    def with_prefix(self, x: ms.Tensor, mask_bias: ms.Tensor, prefix_key: ms.Tensor,
                    prefix_value: ms.Tensor) -> ms.Tensor:
        return self.ffn(self.attention.with_prefix(x, mask_bias, prefix_key, prefix_value))


class BertEncoder(nn.Cell):
    """Token embeddings through ``num_hidden_layers`` transformer layers: ``[B, L] -> [B, L, hidden]``."""

    def __init__(self, config: BertConfig, dense_factory: DenseFactory = default_dense) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.CellList([BertLayer(config, i, dense_factory) for i in range(config.num_hidden_layers)])

    def construct(self, input_ids: ms.Tensor, attention_mask: ms.Tensor, token_type_ids: ms.Tensor) -> ms.Tensor:
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            x = layer(x, attention_mask)
        return x


def additive_mask(attention_mask: ms.Tensor) -> ms.Tensor:
    """Keep-mask ``[B, L]`` (1 = attend) -> additive attention bias ``[B, 1, 1, L]`` (0 or ``MASK_VALUE``)."""
    mask = ops.cast(attention_mask, ms.float32)
    return ops.reshape((1.0 - mask) * MASK_VALUE, (mask.shape[0], 1, 1, mask.shape[1]))


class PrefixBertEncoder(BertEncoder):
    """Prefix-tuning: a ``mindpet`` ``PrefixEncoder`` gives every layer ``prefix_len`` trainable key and value
    positions in front of the token keys/values; the additive mask is widened with
    ``extend_attention_mask(..., keep_value=0)`` so every query sees them. The encoder's parameters are
    ``bert.prefix.mindpet_delta_prefixtuning_*`` (freeze mode ``'prefix'``)."""

    def __init__(self, config: BertConfig, dense_factory: DenseFactory = default_dense, prefix_len: int = 10,
                 mid_dim: int = 128, dropout_rate: float = 0.0) -> None:
        super().__init__(config, dense_factory)
        self.prefix_len = prefix_len
        self.prefix = PrefixEncoder(config.num_hidden_layers, config.num_attention_heads,
                                    config.hidden_size // config.num_attention_heads, prefix_len, mid_dim=mid_dim,
                                    dropout_rate=dropout_rate)

    def construct(self, input_ids: ms.Tensor, attention_mask: ms.Tensor, token_type_ids: ms.Tensor) -> ms.Tensor:
        mask_bias = extend_attention_mask(additive_mask(attention_mask), self.prefix_len, 0)
        prefixes = self.prefix(input_ids.shape[0])
        x = self.embeddings(input_ids, token_type_ids)
        for i in range(self.config.num_hidden_layers):
            x = self.layers[i].with_prefix(x, mask_bias, prefixes[i][0], prefixes[i][1])
        return x


class PromptBertEncoder(BertEncoder):
    """Prompt-tuning: ``num_virtual_tokens`` trainable vectors (``mindpet`` ``PromptTuning``) are put in front
    of the embedding layer's output with ``prepend_prompt`` (mask extended with ones), so they are seen by
    every layer's attention. Only the hidden states of the real positions are returned (``[B, L, H]``), so
    pooling is unchanged. The prompt table is ``bert.prompt.mindpet_delta_prompttuning_embedding``.

    The prompt enters after the embedding LayerNorm and carries no position embedding: the pre-trained
    positions of the real tokens are kept (0..L-1) instead of being shifted by the prompt length."""

    def __init__(self, config: BertConfig, dense_factory: DenseFactory = default_dense,
                 num_virtual_tokens: int = 20) -> None:
        super().__init__(config, dense_factory)
        self.num_virtual_tokens = num_virtual_tokens
        self.prompt = PromptTuning(num_virtual_tokens, config.hidden_size)
        self.prompt_ids = ms.Tensor(np.arange(num_virtual_tokens, dtype=np.int32)[None])

    def construct(self, input_ids: ms.Tensor, attention_mask: ms.Tensor, token_type_ids: ms.Tensor) -> ms.Tensor:
        x = self.embeddings(input_ids, token_type_ids)
        ids = ops.broadcast_to(self.prompt_ids, (input_ids.shape[0], self.num_virtual_tokens))
        x, mask = prepend_prompt(x, self.prompt(ids), attention_mask)
        for layer in self.layers:
            x = layer(x, mask)
        return x[:, self.num_virtual_tokens:]


def mean_pool(hidden: ms.Tensor, attention_mask: ms.Tensor) -> ms.Tensor:
    """Mean of the hidden states of the real (mask 1) tokens: ``[B, L, H] -> [B, H]``.

    The masked sum is a batched ``[B, 1, L] @ [B, L, H]`` product instead of ``hidden * mask[..., None]``:
    MindSpore's CPU broadcasting Mul keeps ``B L H`` index entries for the graph's life, forward and backward."""
    mask = ops.cast(attention_mask, hidden.dtype)
    total = ops.squeeze(ops.bmm(ops.expand_dims(mask, 1), hidden), 1)
    return total / ops.clamp(ops.reduce_sum(mask, 1).reshape((-1, 1)), min=1e-9)


class SentenceEmbedder(nn.Cell):
    """Mean-pooled BERT sentence embedding ``[B, hidden]`` (the sentence-transformers model before Normalize)."""

    def __init__(self, config: BertConfig, dense_factory: DenseFactory = default_dense) -> None:
        super().__init__()
        self.bert = BertEncoder(config, dense_factory)

    def construct(self, input_ids: ms.Tensor, attention_mask: ms.Tensor, token_type_ids: ms.Tensor) -> ms.Tensor:
        return mean_pool(self.bert(input_ids, attention_mask, token_type_ids), attention_mask)


class BertClassifier(nn.Cell):
    """Mean-pooled BERT sentence embedding, dropout and a linear ``head``: returns logits ``[B, classes]``."""

    def __init__(self, config: BertConfig, num_classes: int, dense_factory: DenseFactory = default_dense,
                 head_dropout: float | None = None, encoder: BertEncoder | None = None) -> None:
        super().__init__()
        self.bert = BertEncoder(config, dense_factory) if encoder is None else encoder
        self.head_dropout = _dropout(config.hidden_dropout_prob if head_dropout is None else head_dropout)
        self.head = nn.Dense(config.hidden_size, num_classes, weight_init=TruncatedNormal(config.initializer_range))

    def construct(self, input_ids: ms.Tensor, attention_mask: ms.Tensor, token_type_ids: ms.Tensor) -> ms.Tensor:
        pooled = mean_pool(self.bert(input_ids, attention_mask, token_type_ids), attention_mask)
        return self.head(self.head_dropout(pooled))
