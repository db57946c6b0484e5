"""Portable delta files: only the delta parameters, as safetensors plus a versioned JSON config.

``save_delta(model, "run/delta")`` writes the directory ``run/delta`` holding

- ``delta.safetensors``: every parameter whose name contains ``mindpet_delta_`` (with
  ``include_trainable=True`` also every other trainable parameter, e.g. a task head), keyed by its path in
  ``model.parameters_and_names()``; float32 and float16 as they are, bfloat16 stored as float32;
- ``delta_config.json``: format name and version, package version, the methods, the delta layers with
  their hyper-parameters (rank, alpha, dropout, bottleneck, ...) and paths, every tensor's shape and dtype,
  and the SHA-256 of the tensors file, which ties the pair together.

Both files are written atomically (tensors first, config last), so an interrupted save leaves the previous
pair or a mismatch that :func:`load_delta` detects, never a truncated file.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple, Union

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from mindpet._cells import check_cell
from mindpet._version import __version__
from mindpet.delta import LoRADense
from mindpet.delta.registry import layer_spec
from mindpet.atomic import atomic_write, atomic_write_bytes
from mindpet.methods import DELTA_PREFIX, method_of

__all__ = ["save_delta", "load_delta", "DeltaLoadReport", "describe_delta_layers",
           "CONFIG_FILE", "TENSORS_FILE", "FORMAT_NAME", "FORMAT_VERSION"]

PathLike = Union[str, os.PathLike]
CONFIG_FILE = "delta_config.json"
TENSORS_FILE = "delta.safetensors"
FORMAT_NAME = "mindpet.delta"
FORMAT_VERSION = (1, 0)
_CONFIG_KEYS = ("format", "format_version", "mindpet_version", "tensors_file", "tensors_sha256",
                "include_trainable", "methods", "target_modules", "layers", "tensors")
_DTYPES = {ms.float32: "float32", ms.float16: "float16", ms.bfloat16: "bfloat16", ms.float64: "float64"}



@dataclass(frozen=True)
class DeltaLoadReport:
    """What :func:`load_delta` found, by parameter path.

    Attributes:
        loaded_keys: parameters set from the file.
        missing_keys: delta parameters of the model that the file does not hold (left unchanged).
        unexpected_keys: keys of the file that are not parameters of the model.
        mismatched_keys: ``(key, file shape, model shape)`` for keys whose shapes differ (not loaded).
        config_mismatches: delta layers whose hyper-parameters differ between file and model, e.g.
            ``"bert.layers.0.attention.query: lora_alpha is 16 in the file, 8 in the model"``.
        format_version: the file's format version.
    """

    loaded_keys: List[str] = field(default_factory=list)
    missing_keys: List[str] = field(default_factory=list)
    unexpected_keys: List[str] = field(default_factory=list)
    mismatched_keys: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)
    config_mismatches: List[str] = field(default_factory=list)
    format_version: str = ""

    @property
    def ok(self) -> bool:
        """True when every key matched and every layer's hyper-parameters agree."""
        return not (self.missing_keys or self.unexpected_keys or self.mismatched_keys or self.config_mismatches)


def describe_delta_layers(model: nn.Cell) -> Dict[str, Dict[str, Any]]:
    """``{path: {"method", "class", <hyper-parameters>}}`` for the delta layers of ``model``, by path.

    The layers and their hyper-parameters are those of the layer registry (``mindpet.delta.registry``).
    The adapter inside an ``AdapterDense`` / ``LowRankAdapterDense`` is described by its outer layer.
    """
    layers: Dict[str, Dict[str, Any]] = {}
    for path, cell in model.cells_and_names():
        spec = layer_spec(type(cell))
        if spec is None or any(outer == "" or path.startswith(outer + ".") for outer in layers):
            continue
        layers[path] = spec.describe(cell)
    return dict(sorted(layers.items()))


def _method_of(name: str) -> str:
    """The method of a delta parameter name; an unregistered tag counts by its first word."""
    return method_of(name) or name.split(DELTA_PREFIX, 1)[1].split("_", 1)[0]


def _check_path(path: Any, func: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"For '{func}', 'path' must be a str or os.PathLike (a directory), but got "
                        f"{type(path).__name__}.")
    return os.fspath(path)


def _check_bool(value: Any, name: str, func: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"For '{func}', '{name}' must be a bool, but got {type(value).__name__}.")


def _to_numpy(param) -> Tuple[np.ndarray, str]:
    """The array to store and the parameter's dtype name (bfloat16 is stored as float32)."""
    dtype = _DTYPES.get(param.dtype)
    if dtype is None:
        raise ValueError(f"parameter '{param.name}' has dtype {param.dtype}; only float parameters are saved.")
    data = param.astype(ms.float32) if dtype == "bfloat16" else param
    return np.ascontiguousarray(data.asnumpy()), dtype


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_delta(model: nn.Cell, path: PathLike, include_trainable: bool = False) -> str:
    """Save the delta parameters of ``model`` to the directory ``path`` (created if needed).

    Args:
        model: the network.
        path: a directory; ``delta.safetensors`` and ``delta_config.json`` are (over)written inside.
        include_trainable: also save every parameter with ``requires_grad=True`` (e.g. a task head that
            ``freeze_delta(model, 'lora', exclude=['*head*'])`` left trainable). Default: only the delta.

    Returns:
        The directory path.

    Raises:
        TypeError: bad argument types. ValueError: the model has no delta parameter; ``path`` is a file;
            a parameter to save is not a float.
    """
    func = "save_delta"
    check_cell(model, func)
    directory = _check_path(path, func)
    _check_bool(include_trainable, "include_trainable", func)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"For '{func}', 'path' {directory!r} is a file; pass a directory.")
    names = [(n, p) for n, p in model.parameters_and_names()
             if DELTA_PREFIX in n or (include_trainable and p.requires_grad)]
    if not any(DELTA_PREFIX in n for n, _ in names):
        raise ValueError(f"For '{func}', the model has no delta parameter (no name contains '{DELTA_PREFIX}'); "
                         f"add delta layers first, e.g. with mindpet.inject.")
    arrays, tensors = {}, {}
    for name, param in names:
        try:
            arrays[name], dtype = _to_numpy(param)
        except ValueError as err:
            raise ValueError(f"For '{func}', {err}") from err
        tensors[name] = {"shape": list(param.shape), "dtype": dtype}
    layers = describe_delta_layers(model)
    methods = sorted({_method_of(n) for n in arrays if DELTA_PREFIX in n})
    target_modules = {m: [p for p, info in layers.items() if info["method"] == m] for m in methods}

    os.makedirs(directory, exist_ok=True)
    tensors_path = os.path.join(directory, TENSORS_FILE)
    atomic_write(tensors_path, lambda tmp: save_file(arrays, tmp, metadata={"format": FORMAT_NAME}))
    config = {
        "format": FORMAT_NAME,
        "format_version": "%d.%d" % FORMAT_VERSION,
        "mindpet_version": __version__,
        "tensors_file": TENSORS_FILE,
        "tensors_sha256": _sha256(tensors_path),
        "include_trainable": include_trainable,
        "methods": methods,
        "target_modules": target_modules,
        "layers": layers,
        "tensors": tensors,
    }
    text = json.dumps(config, indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(os.path.join(directory, CONFIG_FILE), text.encode("utf-8"))
    return directory


def _parse_version(value: Any, where: str) -> Tuple[int, int]:
    try:
        major, minor = (int(part) for part in str(value).split("."))
    except ValueError as err:
        raise ValueError(f"For 'load_delta', {where} has format_version {value!r}; expected 'MAJOR.MINOR'.") from err
    return major, minor


def _read_config(config_path: str) -> Dict[str, Any]:
    """The checked config: right format, compatible major version; unknown keys warned about."""
    try:
        with open(config_path, "r", encoding="utf-8") as handle:
            config = json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"For 'load_delta', {config_path!r} is not valid JSON: {err}.") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise ValueError(f"For 'load_delta', {config_path!r} is not a mindpet delta config "
                         f"(expected \"format\": \"{FORMAT_NAME}\").")
    major, minor = _parse_version(config.get("format_version"), repr(config_path))
    if major != FORMAT_VERSION[0]:
        raise ValueError(f"For 'load_delta', {config_path!r} has format version {major}.{minor}, incompatible "
                         f"with this mindpet ({__version__}), which reads major version {FORMAT_VERSION[0]}.")
    missing = [k for k in ("tensors_file", "tensors_sha256", "layers", "tensors") if k not in config]
    if missing:
        raise ValueError(f"For 'load_delta', {config_path!r} lacks the keys {missing}.")
    unknown = sorted(k for k in config if k not in _CONFIG_KEYS)
    if unknown:
        newer = (major, minor) > FORMAT_VERSION
        origin = (f"written by a newer format version {major}.{minor} (this mindpet reads "
                  f"{FORMAT_VERSION[0]}.{FORMAT_VERSION[1]})" if newer else "unexpected")
        warnings.warn(f"load_delta: {config_path!r} has keys {unknown} ({origin}); they are ignored.",
                      UserWarning, stacklevel=3)
    return config


def _read_tensors(directory: str, config: Dict[str, Any]) -> Dict[str, np.ndarray]:
    tensors_path = os.path.join(directory, os.path.basename(str(config["tensors_file"])))
    if not os.path.isfile(tensors_path):
        raise FileNotFoundError(f"For 'load_delta', the tensors file {tensors_path!r} does not exist.")
    if _sha256(tensors_path) != config["tensors_sha256"]:
        raise ValueError(f"For 'load_delta', {tensors_path!r} does not match {CONFIG_FILE} (SHA-256 differs): the "
                         f"files come from different saves, or one was modified or an earlier save interrupted.")
    try:
        arrays = load_file(tensors_path)
    except SafetensorError as err:
        raise ValueError(f"For 'load_delta', {tensors_path!r} is not a valid safetensors file: {err}.") from err
    if sorted(arrays) != sorted(config["tensors"]):
        raise ValueError(f"For 'load_delta', the keys of {tensors_path!r} differ from those listed in "
                         f"{CONFIG_FILE}.")
    return arrays


def _config_mismatches(saved: Dict[str, Any], current: Dict[str, Dict[str, Any]]) -> List[str]:
    problems = []
    for path, info in saved.items():
        mine = current.get(path)
        if not isinstance(info, dict) or mine is None or mine["class"] != info.get("class"):
            continue  # absent or different layers show up as missing/unexpected keys
        for key, value in info.items():
            if key in ("method", "class") or key not in mine:
                continue
            ours = mine[key]
            same = (math.isclose(float(value), float(ours), rel_tol=1e-6)
                    if isinstance(value, (int, float)) and not isinstance(value, bool) else value == ours)
            if not same:
                problems.append(f"{path}: {key} is {value!r} in the file, {ours!r} in the model")
    return problems


def _merged_layers(model: nn.Cell) -> List[str]:
    return [p for p, c in model.cells_and_names() if isinstance(c, LoRADense) and c.merged]


def load_delta(model: nn.Cell, path: PathLike, strict: bool = True) -> DeltaLoadReport:
    """Load a directory written by :func:`save_delta` into ``model``.

    Keys are matched against the paths of ``model.parameters_and_names()``. The file's layer
    hyper-parameters are compared with the model's delta layers at the same paths (e.g. a different
    ``lora_alpha`` changes outputs without changing any shape). Values are cast to each parameter's dtype.
    Everything is checked before the model is changed.

    Args:
        model: the network, with delta layers where the saved model had them (e.g. the same ``inject``).
        path: the directory holding ``delta_config.json`` and ``delta.safetensors``.
        strict: raise on any missing, unexpected or shape-mismatched key or hyper-parameter mismatch;
            with False, load every key whose shape fits (hyper-parameter mismatches included) and report
            the rest.

    Returns:
        A :class:`DeltaLoadReport`.

    Raises:
        TypeError: bad argument types. FileNotFoundError: a file is missing.
        ValueError: not a mindpet delta config; an incompatible major format version; the two files do not
            belong together; the model has merged LoRA layers (``unmerge_lora`` first); with ``strict``,
            any problem of the report. Unknown config keys (e.g. from a newer minor version) only warn.
    """
    func = "load_delta"
    check_cell(model, func)
    directory = _check_path(path, func)
    _check_bool(strict, "strict", func)
    config_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"For '{func}', {config_path!r} does not exist; 'path' must be a directory "
                                f"written by save_delta.")
    config = _read_config(config_path)
    arrays = _read_tensors(directory, config)
    merged = _merged_layers(model)
    if merged:
        raise ValueError(f"For '{func}', the model has merged LoRA layers {merged}; call "
                         f"mindpet.unmerge_lora(model) before loading new LoRA weights.")

    params = dict(model.parameters_and_names())
    mismatched = [(k, tuple(a.shape), tuple(params[k].shape)) for k, a in arrays.items()
                  if k in params and tuple(a.shape) != tuple(params[k].shape)]
    bad = {k for k, _, _ in mismatched}
    report = DeltaLoadReport(
        loaded_keys=[k for k in arrays if k in params and k not in bad],
        missing_keys=[k for k in params if DELTA_PREFIX in k and k not in arrays],
        unexpected_keys=[k for k in arrays if k not in params],
        mismatched_keys=mismatched,
        config_mismatches=_config_mismatches(config["layers"], describe_delta_layers(model)),
        format_version=str(config["format_version"]),
    )
    if strict and not report.ok:
        raise ValueError(f"For '{func}' with strict=True, {directory!r} does not fit the model: missing keys "
                         f"{report.missing_keys}; unexpected keys {report.unexpected_keys}; shape mismatches "
                         f"(key, file, model) {report.mismatched_keys}; hyper-parameter mismatches "
                         f"{report.config_mismatches}.")
    for key in report.loaded_keys:
        param = params[key]
        param.set_data(Tensor(arrays[key]).astype(param.dtype))
    return report
