"""An independent numpy float64 BERT forward (HF weight names, HF BertModel semantics) with mean pooling.

Written from the BERT paper / HF config semantics, sharing no code with ``benchmarks.models``.
GELU is exact: ``0.5 x (1 + erf(x / sqrt 2))`` with ``math.erf`` applied element-wise (numpy has no erf).
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def sentence_embeddings(state: Mapping[str, np.ndarray], config: Mapping, input_ids: np.ndarray,
                        attention_mask: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
    """Mean-pooled last hidden states ``[B, hidden]`` in float64; masked keys get exactly zero weight."""
    w = {k: np.asarray(v, dtype=np.float64) for k, v in state.items()}
    eps = config["layer_norm_eps"]
    heads = config["num_attention_heads"]
    b, length = input_ids.shape
    x = (w["embeddings.word_embeddings.weight"][input_ids]
         + w["embeddings.position_embeddings.weight"][np.arange(length)][None]
         + w["embeddings.token_type_embeddings.weight"][token_type_ids])
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    hidden = x.shape[-1]
    d = hidden // heads
    keep = attention_mask.astype(bool)[:, None, None, :]

    def dense(t: np.ndarray, name: str) -> np.ndarray:
        return t @ w[name + ".weight"].T + w[name + ".bias"]

    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def heads_of(t: np.ndarray) -> np.ndarray:
            return t.reshape(b, length, heads, d).transpose(0, 2, 1, 3)

        q, k, v = (heads_of(dense(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
        scores = np.where(keep, q @ k.transpose(0, 1, 3, 2) / math.sqrt(d), -np.inf)
        context = (_softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(b, length, hidden)
        x = layer_norm(x + dense(context, p + "attention.output.dense"),
                       w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        ffn = dense(gelu(dense(x, p + "intermediate.dense")), p + "output.dense")
        x = layer_norm(x + ffn, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    m = attention_mask.astype(np.float64)[..., None]
    return (x * m).sum(1) / m.sum(1)


def random_hf_state(config: Mapping, rng: np.random.Generator, scale: float = 0.3) -> dict[str, np.ndarray]:
    """Random float32 weights under HF BERT names (with the unused pooler and position_ids, as in real files)."""
    h, inner = config["hidden_size"], config["intermediate_size"]
    shapes = {
        "embeddings.word_embeddings.weight": (config["vocab_size"], h),
        "embeddings.position_embeddings.weight": (config["max_position_embeddings"], h),
        "embeddings.token_type_embeddings.weight": (config["type_vocab_size"], h),
        "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,),
        "pooler.dense.weight": (h, h), "pooler.dense.bias": (h,),
    }
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for n in ("query", "key", "value"):
            shapes[p + f"attention.self.{n}.weight"] = (h, h)
            shapes[p + f"attention.self.{n}.bias"] = (h,)
        shapes.update({p + "attention.output.dense.weight": (h, h), p + "attention.output.dense.bias": (h,),
                       p + "attention.output.LayerNorm.weight": (h,), p + "attention.output.LayerNorm.bias": (h,),
                       p + "intermediate.dense.weight": (inner, h), p + "intermediate.dense.bias": (inner,),
                       p + "output.dense.weight": (h, inner), p + "output.dense.bias": (h,),
                       p + "output.LayerNorm.weight": (h,), p + "output.LayerNorm.bias": (h,)})
    state = {}
    for name, shape in shapes.items():
        value = rng.normal(0.0, scale, size=shape)
        if name.endswith("LayerNorm.weight"):
            value += 1.0
        state[name] = value.astype(np.float32)
    state["embeddings.position_ids"] = np.arange(config["max_position_embeddings"], dtype=np.int64)[None]
    return state
