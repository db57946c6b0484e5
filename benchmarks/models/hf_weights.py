"""Load HuggingFace BERT safetensors weights into :mod:`benchmarks.models.bert` cells.

The HF -> MindSpore name mapping is one table of regular expressions (``HF_NAME_RULES``); HF keys that
the port does not use (``embeddings.position_ids``, a buffer; ``pooler.*``, unused by mean pooling) are
listed in ``HF_IGNORED``. Loading reports missing and unexpected keys and fails on anything not allowed.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import mindspore as ms
from mindspore import nn
from safetensors.numpy import load_file, save_file

_LN = {"weight": "gamma", "bias": "beta"}
_LAYER = r"encoder\.layer\.(\d+)\."

HF_NAME_RULES: tuple[tuple[str, str], ...] = (
    (r"embeddings\.(word|position|token_type)_embeddings\.weight", r"embeddings.\1_embeddings.embedding_table"),
    (r"embeddings\.LayerNorm\.(weight|bias)", r"embeddings.layer_norm.{ln}"),
    (_LAYER + r"attention\.self\.(query|key|value)\.(weight|bias)", r"layers.\1.attention.\2.\3"),
    (_LAYER + r"attention\.output\.dense\.(weight|bias)", r"layers.\1.attention.output.\2"),
    (_LAYER + r"attention\.output\.LayerNorm\.(weight|bias)", r"layers.\1.attention.layer_norm.{ln}"),
    (_LAYER + r"intermediate\.dense\.(weight|bias)", r"layers.\1.ffn.intermediate.\2"),
    (_LAYER + r"output\.dense\.(weight|bias)", r"layers.\1.ffn.output.\2"),
    (_LAYER + r"output\.LayerNorm\.(weight|bias)", r"layers.\1.ffn.layer_norm.{ln}"),
)
HF_IGNORED: tuple[str, ...] = ("embeddings.position_ids", "pooler.*")
DEFAULT_ALLOWED_MISSING: tuple[str, ...] = ("head.*", "*mindpet_delta_*")


def hf_to_mindspore_name(hf_name: str, prefix: str = "bert.") -> str | None:
    """The port's parameter name for ``hf_name``; None for an ignored key; KeyError for an unknown one.

    >>> hf_to_mindspore_name("encoder.layer.0.attention.self.query.weight")
    'bert.layers.0.attention.query.weight'
    """
    name = hf_name[len("bert."):] if hf_name.startswith("bert.") else hf_name
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in HF_IGNORED):
        return None
    for pattern, template in HF_NAME_RULES:
        match = re.fullmatch(pattern, name)
        if match:
            if "{ln}" in template:
                template = template.replace("{ln}", _LN[match.groups()[-1]])
            return prefix + match.expand(template)
    raise KeyError(f"no mapping for HF weight {hf_name!r}")


def convert_hf_state(hf_state: Mapping[str, np.ndarray], prefix: str = "bert.") -> dict[str, np.ndarray]:
    """HF-named arrays renamed to the port's names (ignored keys dropped, float32, contiguous)."""
    out: dict[str, np.ndarray] = {}
    for hf_name, value in hf_state.items():
        name = hf_to_mindspore_name(hf_name, prefix)
        if name is not None:
            out[name] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def convert_hf_file(hf_path: str | Path, out_path: str | Path, prefix: str = "bert.") -> Path:
    """Write the HF safetensors file as a safetensors file with the port's names (for checkpoint helpers)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(convert_hf_state(load_file(str(hf_path)), prefix), str(out_path))
    return out_path


@dataclass(frozen=True)
class LoadReport:
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    """Network parameters that the file did not provide (all matched an allowed pattern)."""


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def load_hf_weights(net: nn.Cell, hf_path: str | Path, prefix: str = "bert.",
                    allowed_missing: Iterable[str] = DEFAULT_ALLOWED_MISSING) -> LoadReport:
    """Load a HF BERT safetensors file into ``net``.

    Raises ValueError when a file weight has no parameter in ``net`` (unexpected), a shape differs, or a
    parameter not matching ``allowed_missing`` (default: the task head and delta parameters) is left unloaded.
    """
    state = convert_hf_state(load_file(str(hf_path)), prefix)
    params = {name: p for name, p in net.parameters_and_names()}
    unexpected = sorted(set(state) - set(params))
    if unexpected:
        raise ValueError(f"unexpected weights in {hf_path} (no such parameter): {unexpected}")
    bad_shapes = [f"{n}: file {state[n].shape} vs net {params[n].shape}" for n in state
                  if tuple(state[n].shape) != tuple(params[n].shape)]
    if bad_shapes:
        raise ValueError(f"shape mismatch loading {hf_path}: {bad_shapes}")
    allowed = tuple(allowed_missing)
    missing = sorted(set(params) - set(state))
    not_allowed = [n for n in missing if not _matches(n, allowed)]
    if not_allowed:
        raise ValueError(f"parameters missing from {hf_path}: {not_allowed}")
    ms.load_param_into_net(net, {n: ms.Parameter(ms.Tensor(v), name=n) for n, v in state.items()}, strict_load=True)
    return LoadReport(loaded=tuple(sorted(state)), missing=tuple(missing))
