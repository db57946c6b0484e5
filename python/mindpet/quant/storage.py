"""Saving and loading a quantised base (safetensors, written atomically, format recorded and checked).

File layout: a QuantizedTensor ``name`` is stored as the tensors ``name.codes``, ``name.scales`` and (q4_1, q5_1)
``name.offsets`` with their own dtypes; a plain numpy array (norms, embeddings kept in float, biases) as
``name``. The safetensors ``__metadata__`` holds ``"mindpet.quant": "1"`` and ``"tensors"``: a JSON object
``{name: {"format", "shape", "bits", "group_size", "has_offsets"}}`` for quantised entries and
``{name: {"format": "array"}}`` for arrays. :func:`load_quantized` checks every record against the format's
spec and the stored arrays (dtype, shape, finite scales/offsets, no missing or unexpected tensor).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Dict, Union

import numpy as np

from mindpet.atomic import atomic_write
from mindpet._safetensors import read_safetensors_metadata
from mindpet.quant.formats import QuantizedTensor, format_spec

StoredTensor = Union[QuantizedTensor, np.ndarray]
_MAGIC = "mindpet.quant"
_VERSION = "1"
_ARRAY = "array"
_FIELDS = ("codes", "scales", "offsets")


def _collect(tensors_or_net) -> Dict[str, StoredTensor]:
    """The name -> tensor dict to save: a mapping, or any object with ``quantized_tensors()`` returning one
    (the hook a quantised Cell implements)."""
    source = tensors_or_net
    hook = getattr(tensors_or_net, "quantized_tensors", None)
    if callable(hook):
        source = hook()
    if not isinstance(source, Mapping):
        raise TypeError("For 'save_quantized', 'tensors_or_net' must be a dict of name -> QuantizedTensor | "
                        "numpy.ndarray or have a quantized_tensors() method returning one, but got "
                        f"{type(source).__name__}.")
    if not source:
        raise ValueError("For 'save_quantized', 'tensors_or_net' has no tensors to save.")
    for name, value in source.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"For 'save_quantized', every name must be a non-empty str, but got {name!r}.")
        if not isinstance(value, (QuantizedTensor, np.ndarray)):
            raise TypeError(f"For 'save_quantized', tensor {name!r} must be a QuantizedTensor or numpy.ndarray, "
                            f"but got {type(value).__name__}.")
        if isinstance(value, np.ndarray) and (value.dtype.kind not in "fiub" or value.dtype.itemsize > 8):
            raise TypeError(f"For 'save_quantized', array {name!r} has dtype {value.dtype}, which safetensors "
                            f"cannot store.")
    return dict(source)


def save_quantized(tensors_or_net, path: Union[str, os.PathLike]) -> str:
    """Write quantised (and plain) tensors to the safetensors file ``path`` atomically; returns the path.

    ``tensors_or_net``: a dict of name -> QuantizedTensor | numpy.ndarray, or an object (e.g. a quantised
    Cell) whose ``quantized_tensors()`` returns such a dict. Raises TypeError/ValueError before writing.
    """
    from safetensors.numpy import save_file
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"For 'save_quantized', 'path' must be a str or os.PathLike, but got {type(path).__name__}.")
    entries = _collect(tensors_or_net)
    arrays: Dict[str, np.ndarray] = {}
    records = {}
    for name, value in entries.items():
        if isinstance(value, QuantizedTensor):
            records[name] = {"format": value.format, "shape": list(value.shape), "bits": value.bits,
                             "group_size": value.group_size, "has_offsets": value.offsets is not None}
            parts = {f"{name}.{field}": getattr(value, field) for field in _FIELDS if getattr(value, field) is not None}
        else:
            records[name] = {"format": _ARRAY}
            parts = {name: value}
        for key, array in parts.items():
            if key in arrays:
                raise ValueError(f"For 'save_quantized', the stored tensor name {key!r} is produced twice "
                                 f"(a name clashes with another's '.codes'/'.scales'/'.offsets').")
            arrays[key] = np.ascontiguousarray(array)
    metadata = {_MAGIC: _VERSION, "tensors": json.dumps(records, sort_keys=True)}
    return atomic_write(os.fspath(path), lambda tmp: save_file(arrays, tmp, metadata=metadata))


def _corrupt(path, message: str) -> ValueError:
    return ValueError(f"For 'load_quantized', {os.fspath(path)!r} is not a consistent quantised-base file: {message}")


def _read_records(path) -> dict:
    metadata = read_safetensors_metadata(os.fspath(path), "load_quantized")
    if metadata.get(_MAGIC) != _VERSION:
        raise _corrupt(path, f"its metadata has no '{_MAGIC}': '{_VERSION}' entry (not written by save_quantized?).")
    try:
        records = json.loads(metadata["tensors"])
    except (KeyError, TypeError, ValueError) as err:
        raise _corrupt(path, f"its 'tensors' metadata is missing or not JSON ({err!r}).") from err
    if not isinstance(records, dict) or not all(isinstance(r, dict) for r in records.values()):
        raise _corrupt(path, "its 'tensors' metadata must be an object of objects.")
    return records


def _rebuild(path, name: str, record: dict, arrays: Dict[str, np.ndarray]) -> QuantizedTensor:
    fmt = record.get("format")
    try:
        spec = format_spec(fmt)
        shape = tuple(int(d) for d in record["shape"])
        q = QuantizedTensor(fmt, shape, arrays.get(f"{name}.codes"), arrays.get(f"{name}.scales"),
                            arrays.get(f"{name}.offsets"))
    except (KeyError, TypeError, ValueError) as err:
        raise _corrupt(path, f"tensor {name!r}: {err}") from err
    expected = {"bits": spec.bits, "group_size": q.group_size, "has_offsets": spec.has_offsets}
    recorded = {key: record.get(key) for key in expected}
    if recorded != expected:
        raise _corrupt(path, f"tensor {name!r} records {recorded} but format {fmt!r} with shape {list(shape)} "
                             f"means {expected}.")
    for field in ("scales", "offsets"):
        values = getattr(q, field)
        if values is not None and not np.isfinite(values).all():
            raise _corrupt(path, f"tensor {name!r} has non-finite {field}.")
    return q


def load_quantized(path: Union[str, os.PathLike]) -> Dict[str, StoredTensor]:
    """The name -> QuantizedTensor | numpy.ndarray dict written by :func:`save_quantized`, bit-exact.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a safetensors file, no mindpet.quant metadata, or a record inconsistent with the stored
            tensors (format, shape, bits, group size, dtypes, missing/extra tensors, non-finite scales).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"For 'load_quantized', 'path' must be a str or os.PathLike, but got {type(path).__name__}.")
    records = _read_records(path)
    try:
        arrays = load_file(os.fspath(path))
    except (SafetensorError, TypeError, ValueError, OSError) as err:
        raise _corrupt(path, f"safetensors cannot read it ({err}).") from err
    out: Dict[str, StoredTensor] = {}
    used = set()
    for name, record in records.items():
        if record.get("format") == _ARRAY:
            if name not in arrays:
                raise _corrupt(path, f"the array {name!r} recorded in the metadata is missing.")
            out[name] = arrays[name]
            used.add(name)
        else:
            out[name] = _rebuild(path, name, record, arrays)
            used.update(f"{name}.{field}" for field in _FIELDS if getattr(out[name], field) is not None)
    extra = sorted(set(arrays) - used)
    if extra:
        raise _corrupt(path, f"tensors not described by the metadata: {extra}.")
    return out
