"""GGUF tensors straight from their blocks into :class:`~mindpet.quant.formats.QuantizedTensor`.

ggml block layouts (32 weights per block, little-endian; the ``gguf`` package's ``GGUFReader`` exposes a
quantised tensor of shape ``(N, K)`` as ``uint8 [N, K // 32 * type_size]``):

- ``Q4_0`` (18 bytes): ``d`` float16, 16 bytes ``qs``; weight ``j`` (< 16) is ``qs[j] & 0xF`` and weight
  ``j + 16`` is ``qs[j] >> 4``; ``w = d * (c - 8)``.
- ``Q4_1`` (20 bytes): ``d``, ``m`` float16, 16 bytes ``qs`` as in Q4_0; ``w = d * c + m``.
- ``Q8_0`` (34 bytes): ``d`` float16, 32 ``int8``; ``w = d * c``.
- ``Q5_0`` (22 bytes): ``d`` float16, 4 bytes ``qh`` (a little-endian uint32: bit ``j`` is the 5th bit of
  weight ``j``), 16 bytes ``qs`` as in Q4_0 (the low 4 bits); ``w = d * (c - 16)``.
- ``Q5_1`` (24 bytes): ``d``, ``m`` float16, ``qh``, ``qs`` as in Q5_0; ``w = d * c + m``.

The 4-bit codes (and the low 4 bits of the 5-bit ones) are repacked into mindpet's order (weight ``2j`` low
nibble, ``2j + 1`` high nibble of byte ``j``); a 5-bit block's ``qh`` is already mindpet's 5th-bit order (bit
``k % 8`` of byte ``k // 8``) and is copied into the row's 5th-bit bytes; ``d`` and ``m`` are copied
bit-exactly. No float copy of a quantised tensor is made (the transient memory is one byte per weight of the
tensor being repacked). ``F32`` / ``F16`` tensors are returned as
numpy arrays of their stored dtype (owned copies, not views of the memory map).
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, Optional, Union

import numpy as np

from mindpet.quant.formats import QuantizedTensor, format_spec, requantize

_QUANTISED = {"Q4_0": ("q4_0", 18), "Q4_1": ("q4_1", 20), "Q8_0": ("q8_0", 34), "Q5_0": ("q5_0", 22),
              "Q5_1": ("q5_1", 24)}
_FLOAT = {"F32": np.float32, "F16": np.float16}
_BLOCK = 32
GGUFTensor = Union[QuantizedTensor, np.ndarray]


def _open(path_or_reader):
    if isinstance(path_or_reader, (str, os.PathLike)):
        if not os.path.isfile(path_or_reader):
            raise FileNotFoundError(f"For 'read_gguf_quantized', {os.fspath(path_or_reader)!r} does not exist.")
        from gguf import GGUFReader
        return GGUFReader(os.fspath(path_or_reader))
    if not hasattr(path_or_reader, "tensors"):
        raise TypeError("For 'read_gguf_quantized', 'path_or_reader' must be a path or a gguf.GGUFReader, but got "
                        f"{type(path_or_reader).__name__}.")
    return path_or_reader


def _float16_field(blocks: np.ndarray, start: int) -> np.ndarray:
    """float16 [N, K // 32] read bit-exactly from bytes ``start:start + 2`` of every block."""
    return np.ascontiguousarray(blocks[..., start:start + 2]).view(np.float16)[..., 0]


def _repack_q4(qs: np.ndarray) -> np.ndarray:
    """GGUF nibbles ``[N, B, 16]`` (byte j: weight j low, j + 16 high) -> ours ``uint8 [N, B * 16]``."""
    n, blocks, _ = qs.shape
    codes = np.empty((n, blocks, _BLOCK), dtype=np.uint8)
    np.bitwise_and(qs, np.uint8(0x0F), out=codes[..., :16])
    np.right_shift(qs, np.uint8(4), out=codes[..., 16:])
    packed = codes[..., 0::2]
    packed |= codes[..., 1::2] << np.uint8(4)
    return np.ascontiguousarray(packed).reshape(n, blocks * 16)


def gguf_block_to_quantized(name: str, type_name: str, shape, data: np.ndarray) -> QuantizedTensor:
    """One Q4_0/Q4_1/Q8_0/Q5_0/Q5_1 tensor (``data`` the raw ``uint8`` blocks, ``shape`` = ``(N, K)``) as
    QuantizedTensor."""
    format, type_size = _QUANTISED[type_name]
    if len(shape) != 2:
        raise ValueError(f"GGUF tensor {name!r} ({type_name}) must be 2-D to load quantised, but has shape {shape}.")
    n, k = shape
    if k % _BLOCK or data.size != n * (k // _BLOCK) * type_size:
        raise ValueError(f"GGUF tensor {name!r} ({type_name}, shape {shape}) has {data.size} bytes of blocks; "
                         f"expected {n} x {k // _BLOCK} blocks of {type_size} bytes.")
    blocks = np.asarray(data, dtype=np.uint8).reshape(n, k // _BLOCK, type_size)
    scales = _float16_field(blocks, 0)
    offsets = None
    if format == "q8_0":
        codes = np.ascontiguousarray(blocks[..., 2:]).view(np.int8).reshape(n, k)
    else:
        if format in ("q4_1", "q5_1"):
            offsets = _float16_field(blocks, 2)
        codes = _repack_q4(blocks[..., type_size - 16:])
        if format in ("q5_0", "q5_1"):  # qh: the 4 bytes before qs
            fifth = blocks[..., type_size - 20:type_size - 16].reshape(n, k // 8)
            codes = np.concatenate([codes, fifth], axis=1)
    return QuantizedTensor(format, (n, k), codes, scales, offsets)


def read_gguf_quantized(path_or_reader, names: Optional[Iterable[str]] = None,
                        format: Optional[str] = None) -> Dict[str, GGUFTensor]:
    """Tensors of a GGUF file by name: Q4_0/Q4_1/Q8_0/Q5_0/Q5_1 as :class:`QuantizedTensor` (shape ``(N, K)``, the
    ``nn.Dense`` layout), F32/F16 as numpy arrays of their stored dtype.

    Args:
        path_or_reader: a GGUF file path or an open ``gguf.GGUFReader``.
        names: the tensors to read (default: all); an unknown name is a ValueError.
        format: if given, every quantised tensor is re-encoded to this format one tensor at a time
            (:func:`~mindpet.quant.formats.requantize`: a float32 copy of one tensor at a time, never of the
            model). E.g. ``"q8_0"`` from a Q4_1 file gives an 8-bit kernel format that keeps Q4_1's error.

    Raises:
        ValueError: a requested tensor has another type (e.g. ``Q6_K``; the message names the tensor and
            type), a quantised tensor is not 2-D, or its byte size does not match its shape.
    """
    if format is not None:
        format_spec(format)
    reader = _open(path_or_reader)
    by_name = {t.name: t for t in reader.tensors}
    wanted = list(by_name) if names is None else list(names)
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise ValueError(f"For 'read_gguf_quantized', these 'names' are not tensors of the file: {missing}.")
    for name in wanted:  # every type checked before anything is read
        type_name = by_name[name].tensor_type.name
        if type_name not in _QUANTISED and type_name not in _FLOAT:
            raise ValueError(f"For 'read_gguf_quantized', GGUF tensor {name!r} has type {type_name}, which is not "
                             f"supported (supported: {sorted(_QUANTISED) + sorted(_FLOAT)}).")
    out: Dict[str, GGUFTensor] = {}
    for name in wanted:
        tensor = by_name[name]
        type_name = tensor.tensor_type.name
        shape = tuple(int(d) for d in reversed(tensor.shape))  # GGUF lists dimensions innermost first
        if type_name in _FLOAT:
            out[name] = np.array(tensor.data, dtype=_FLOAT[type_name]).reshape(shape)
            continue
        q = gguf_block_to_quantized(name, type_name, shape, tensor.data)
        out[name] = q if format is None else requantize(q, format)
    return out


def llama_qk_unpermutation(out_channels: int, num_heads: int) -> np.ndarray:
    """Row indices undoing llama.cpp's Q/K row permutation: ``W_hf = W_gguf[index]``.

    Inside each head llama.cpp stores original row ``i`` at ``2 i`` and row ``i + head_dim / 2`` at ``2 i + 1``
    (``benchmarks/models/gguf_loader.py``). Use with :meth:`QuantizedTensor.take_rows` (whole rows of
    codes/scales/offsets move, so nothing is dequantised)."""
    if num_heads < 1 or out_channels % (2 * num_heads):
        raise ValueError(f"out_channels ({out_channels}) must be a multiple of 2 * num_heads ({num_heads}).")
    half = out_channels // num_heads // 2
    return np.arange(out_channels).reshape(num_heads, half, 2).swapaxes(1, 2).reshape(out_channels)


def unpermute_qk(tensors: Dict[str, GGUFTensor], num_heads: int, num_kv_heads: int) -> Dict[str, GGUFTensor]:
    """A copy of ``tensors`` with every ``attn_q.weight`` / ``attn_k.weight`` (QuantizedTensor or array) in the
    original (Hugging Face, rotate-half) row order."""
    out = dict(tensors)
    for name, value in tensors.items():
        heads = num_heads if name.endswith("attn_q.weight") else num_kv_heads if name.endswith("attn_k.weight") \
            else None
        if heads is None:
            continue
        index = llama_qk_unpermutation(value.shape[0], heads)
        out[name] = value.take_rows(index) if isinstance(value, QuantizedTensor) else value[index]
    return out
