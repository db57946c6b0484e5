"""An independent numpy forward of a LLaMA decoder, written against the GGUF layout (not the port's).

It takes the tensors exactly as stored in a GGUF file (``blk.L.attn_q.weight`` ...; Q/K rows in llama.cpp's
interleaved order) and applies rotary embedding to *adjacent* pairs ``(x[2i], x[2i+1])`` with angle
``pos * theta^(-2i/d)``, as llama.cpp does - whereas the MindSpore port un-permutes the rows and rotates
halves. Agreement of the two checks the permutation handling as well as the rest of the forward.
Computes in float64, one layer at a time.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def rotate_adjacent_pairs(x: np.ndarray, theta: float) -> np.ndarray:
    """x (heads, seq, d): pair (2i, 2i+1) at position p rotated by p * theta^(-2i/d)."""
    _, seq, d = x.shape
    freq = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    angle = np.arange(seq, dtype=np.float64)[:, None] * freq[None, :]
    cos, sin = np.cos(angle), np.sin(angle)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def llama_logits(tensors: Mapping[str, np.ndarray], *, num_layers: int, num_heads: int, num_kv_heads: int,
                 rope_theta: float, rms_eps: float, ids) -> np.ndarray:
    """Logits (seq, vocab) float64 for one sequence ``ids`` (no batch, no padding)."""
    f64 = lambda name: np.asarray(tensors[name], dtype=np.float64)  # noqa: E731
    embed = f64("token_embd.weight")
    x = embed[np.asarray(ids)]
    seq, hidden = x.shape
    d = hidden // num_heads
    group = num_heads // num_kv_heads
    causal = np.tril(np.ones((seq, seq), dtype=bool))
    for i in range(num_layers):
        p = f"blk.{i}."
        h = rms_norm(x, f64(p + "attn_norm.weight"), rms_eps)
        q = (h @ f64(p + "attn_q.weight").T).reshape(seq, num_heads, d).transpose(1, 0, 2)
        k = (h @ f64(p + "attn_k.weight").T).reshape(seq, num_kv_heads, d).transpose(1, 0, 2)
        v = (h @ f64(p + "attn_v.weight").T).reshape(seq, num_kv_heads, d).transpose(1, 0, 2)
        q, k = rotate_adjacent_pairs(q, rope_theta), rotate_adjacent_pairs(k, rope_theta)
        heads = []
        for head in range(num_heads):
            kv = head // group
            scores = q[head] @ k[kv].T / np.sqrt(d)
            scores = np.where(causal, scores, -np.inf)
            heads.append(softmax(scores) @ v[kv])
        attn = np.concatenate(heads, axis=-1)
        x = x + attn @ f64(p + "attn_output.weight").T
        h = rms_norm(x, f64(p + "ffn_norm.weight"), rms_eps)
        gate = h @ f64(p + "ffn_gate.weight").T
        up = h @ f64(p + "ffn_up.weight").T
        x = x + (gate / (1.0 + np.exp(-gate)) * up) @ f64(p + "ffn_down.weight").T
    x = rms_norm(x, f64("output_norm.weight"), rms_eps)
    head = f64("output.weight") if "output.weight" in tensors else embed
    return x @ head.T


def random_gguf_tensors(rng: np.random.Generator, *, vocab: int, hidden: int, ffn: int, num_layers: int,
                        num_heads: int, num_kv_heads: int, tie: bool = True) -> dict:
    """Random float32 tensors with GGUF names and shapes (out, in)."""
    d = hidden // num_heads
    w = lambda *shape: (rng.standard_normal(shape) * 0.2).astype(np.float32)  # noqa: E731
    t = {"token_embd.weight": w(vocab, hidden),
         "output_norm.weight": (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)}
    if not tie:
        t["output.weight"] = w(vocab, hidden)
    for i in range(num_layers):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"] = (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
        t[p + "ffn_norm.weight"] = (1.0 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
        t[p + "attn_q.weight"] = w(num_heads * d, hidden)
        t[p + "attn_k.weight"] = w(num_kv_heads * d, hidden)
        t[p + "attn_v.weight"] = w(num_kv_heads * d, hidden)
        t[p + "attn_output.weight"] = w(hidden, num_heads * d)
        t[p + "ffn_gate.weight"] = w(ffn, hidden)
        t[p + "ffn_up.weight"] = w(ffn, hidden)
        t[p + "ffn_down.weight"] = w(hidden, ffn)
    return t
