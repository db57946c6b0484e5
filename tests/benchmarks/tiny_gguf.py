"""A tiny random LLaMA GGUF file (float32 tensors, llama.cpp's Q/K row order) for tests of the GGUF loaders."""
from __future__ import annotations

from pathlib import Path

import numpy as np

TINY = dict(vocab=48, hidden=32, intermediate=40, layers=2, heads=4, kv_heads=2)


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A 2-layer LLaMA (hidden 32, 4 heads, 2 KV heads, vocab 48, tied embeddings) written with ``gguf``."""
    from gguf import GGUFWriter

    t = TINY
    rng = np.random.default_rng(seed)
    d = t["hidden"] // t["heads"]
    w = lambda *s: (rng.standard_normal(s) * 0.2).astype(np.float32)  # noqa: E731
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(t["layers"])
    writer.add_context_length(128)
    writer.add_embedding_length(t["hidden"])
    writer.add_feed_forward_length(t["intermediate"])
    writer.add_head_count(t["heads"])
    writer.add_head_count_kv(t["kv_heads"])
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(t["vocab"])
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(t["vocab"])])
    writer.add_tensor("token_embd.weight", w(t["vocab"], t["hidden"]))
    writer.add_tensor("output_norm.weight", 1.0 + w(t["hidden"]))
    for i in range(t["layers"]):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", 1.0 + w(t["hidden"]))
        writer.add_tensor(p + "ffn_norm.weight", 1.0 + w(t["hidden"]))
        writer.add_tensor(p + "attn_q.weight", w(t["heads"] * d, t["hidden"]))
        writer.add_tensor(p + "attn_k.weight", w(t["kv_heads"] * d, t["hidden"]))
        writer.add_tensor(p + "attn_v.weight", w(t["kv_heads"] * d, t["hidden"]))
        writer.add_tensor(p + "attn_output.weight", w(t["hidden"], t["heads"] * d))
        writer.add_tensor(p + "ffn_gate.weight", w(t["intermediate"], t["hidden"]))
        writer.add_tensor(p + "ffn_up.weight", w(t["intermediate"], t["hidden"]))
        writer.add_tensor(p + "ffn_down.weight", w(t["hidden"], t["intermediate"]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
