"""Evaluation loading: the pre-trained checkpoint, then the delta checkpoint on top, with a key report."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Union

import mindspore as ms
from mindspore import Parameter, load_checkpoint, load_param_into_net, nn

from mindpet._cells import check_cell

_FUNC = "load_pretrained_and_delta"
_FORMATS = {".ckpt": "ckpt", ".safetensors": "safetensors"}
_FLOATS = (ms.float16, ms.float32, ms.float64, ms.bfloat16)

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pretrained_and_delta` loaded, by parameter name.

    Attributes:
        missing_keys: network parameters found in neither file (left as they were).
        unexpected_pretrained_keys: keys of the pre-trained file that are not network parameters.
        unexpected_delta_keys: keys of the delta file that are not network parameters.
        overridden_keys: network parameters present in both files; the delta value was loaded.
    """

    missing_keys: List[str] = field(default_factory=list)
    unexpected_pretrained_keys: List[str] = field(default_factory=list)
    unexpected_delta_keys: List[str] = field(default_factory=list)
    overridden_keys: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is missing and nothing unexpected."""
        return not (self.missing_keys or self.unexpected_pretrained_keys or self.unexpected_delta_keys)


def _check_file(path, arg: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"For '{_FUNC}', '{arg}' must be a str or os.PathLike, but got {type(path).__name__}.")
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in _FORMATS:
        raise ValueError(f"For '{_FUNC}', '{arg}' must end with '.ckpt' or '.safetensors', but got {path!r}.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"For '{_FUNC}', '{arg}' file {path!r} does not exist or is not a file.")
    return path


def _read(path: str, arg: str) -> Dict[str, Parameter]:
    """Read a checkpoint; ValueError naming ``arg`` and the file if it is truncated, corrupt or empty."""
    try:
        values = load_checkpoint(path, format=_FORMATS[os.path.splitext(path)[1].lower()])
    except Exception as err:  # MindSpore raises ValueError, RuntimeError, OSError or a protobuf error
        raise ValueError(f"For '{_FUNC}', cannot read '{arg}' file {path!r}: it is truncated, corrupt or not a "
                         f"checkpoint ({type(err).__name__}: {err})") from err
    if not values:
        raise ValueError(f"For '{_FUNC}', '{arg}' file {path!r} holds no parameters.")
    return values


def _fit(param: Parameter, value: Parameter, key: str, source: str):
    """``value`` converted to ``param``'s dtype (floats only); ValueError on a shape or dtype clash."""
    if tuple(param.shape) != tuple(value.shape):
        raise ValueError(f"For '{_FUNC}', parameter '{key}' has shape {tuple(param.shape)} in the network but "
                         f"{tuple(value.shape)} in {source}.")
    if param.dtype == value.dtype:
        return value
    if param.dtype in _FLOATS and value.dtype in _FLOATS:
        return Parameter(value.astype(param.dtype), name=key)
    raise ValueError(f"For '{_FUNC}', parameter '{key}' has dtype {param.dtype} in the network but "
                     f"{value.dtype} in {source}.")


def load_pretrained_and_delta(network: nn.Cell, pretrained_ckpt: PathLike, delta_ckpt: PathLike,
                              strict: bool = False) -> LoadReport:
    """Load a pre-trained checkpoint, then a delta checkpoint on top, into ``network``.

    Both files may be ``.ckpt`` or ``.safetensors`` (chosen by extension) and are read with
    ``mindspore.load_checkpoint``. Keys are matched exactly against parameter names
    (``Parameter.name``, as ``load_param_into_net`` does; its prefix-guessing fallback is not used).
    A key in both files takes the delta value. Float dtypes are converted to the network's.

    All checks happen before the network is touched: argument types, files exist, then shapes and
    dtypes; with ``strict=True`` also missing and unexpected keys.

    Returns:
        A :class:`LoadReport` with missing keys (in neither file) and unexpected keys per file.

    Raises:
        TypeError: bad argument types. FileNotFoundError: a file is missing.
        ValueError: unknown extension; a file that is truncated, corrupt or empty (the message names
            the file); shape/dtype mismatch; ``strict`` and a missing or unexpected key.
    """
    check_cell(network, _FUNC, "network")
    pretrained_ckpt = _check_file(pretrained_ckpt, "pretrained_ckpt")
    delta_ckpt = _check_file(delta_ckpt, "delta_ckpt")
    if not isinstance(strict, bool):
        raise TypeError(f"For '{_FUNC}', 'strict' must be a bool, but got {type(strict).__name__}.")

    params = {p.name: p for _, p in network.parameters_and_names()}
    pretrained, delta = _read(pretrained_ckpt, "pretrained_ckpt"), _read(delta_ckpt, "delta_ckpt")
    report = LoadReport(
        missing_keys=[k for k in params if k not in pretrained and k not in delta],
        unexpected_pretrained_keys=[k for k in pretrained if k not in params],
        unexpected_delta_keys=[k for k in delta if k not in params],
        overridden_keys=[k for k in delta if k in params and k in pretrained],
    )
    if strict and not report.ok:
        raise ValueError(f"For '{_FUNC}' with strict=True: missing keys (in neither file) "
                         f"{report.missing_keys}; unexpected keys in pretrained_ckpt "
                         f"{report.unexpected_pretrained_keys}; unexpected keys in delta_ckpt "
                         f"{report.unexpected_delta_keys}.")
    merged = {}
    for source, values in ((f"pretrained_ckpt {pretrained_ckpt!r}", pretrained), (f"delta_ckpt {delta_ckpt!r}", delta)):
        for key, value in values.items():
            if key in params:
                merged[key] = _fit(params[key], value, key, source)
    if merged:
        load_param_into_net(network, merged, strict_load=True)
    return report
