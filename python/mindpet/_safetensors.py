"""Reading safetensors files into numpy, including bfloat16 tensors when numpy has no bfloat16 dtype."""
from __future__ import annotations

import json
import os
import struct
from typing import Dict

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file


def read_safetensors(path: str, func: str) -> Dict[str, np.ndarray]:
    """All tensors of a safetensors file as numpy arrays.

    ``safetensors.numpy`` reads bfloat16 only if numpy knows a bfloat16 dtype (MindSpore registers one);
    otherwise the file is parsed here (8-byte header length, JSON header, raw little-endian data) and
    bfloat16 is widened to float32 exactly. Errors name ``func``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"For '{func}', {path!r} does not exist.")
    try:
        return load_file(path)
    except (SafetensorError, TypeError, ValueError) as err:
        first_error = err
    try:  # the format: u64 header length, JSON header {name: {dtype, shape, data_offsets}}, raw data
        with open(path, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
            data = handle.read()
        arrays = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            raw = np.frombuffer(data[start:end], dtype={"F32": "<f4", "F16": "<f2", "F64": "<f8",
                                                        "BF16": "<u2"}[info["dtype"]])
            if info["dtype"] == "BF16":
                raw = (raw.astype(np.uint32) << 16).view(np.float32)
            arrays[name] = raw.reshape(info["shape"])
        return arrays
    except (KeyError, ValueError, struct.error, json.JSONDecodeError) as err:
        raise ValueError(f"For '{func}', cannot read {path!r} as float safetensors: {first_error}; {err!r}.") from err


def read_safetensors_metadata(path: str, func: str) -> Dict[str, str]:
    """The ``__metadata__`` of a safetensors file header (``{}`` when it has none). Errors name ``func``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"For '{func}', {path!r} does not exist.")
    try:
        with open(path, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
        metadata = header.get("__metadata__") or {}
    except (ValueError, struct.error, AttributeError) as err:  # JSONDecodeError is a ValueError
        raise ValueError(f"For '{func}', cannot read the header of {path!r} as safetensors: {err!r}.") from err
    if not isinstance(metadata, dict):
        raise ValueError(f"For '{func}', the __metadata__ of {path!r} must be an object, but got {metadata!r}.")
    return metadata
