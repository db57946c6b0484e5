"""Crash-safe writers for every file the benchmarks produce (tables, JSON, run records, plots, arrays).

Each goes through the package's :func:`mindpet.atomic.atomic_write`: the content is written to a
scratch file next to the target and renamed over it only when complete, so an interrupted benchmark
(``--resume`` reads its run records back) never leaves a truncated file under the final name. Parent
directories are created.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

import numpy as np

from mindpet.atomic import atomic_write, atomic_write_bytes

PathLike = Union[str, Path]


def _target(path: PathLike) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return Path(atomic_write_bytes(_target(path), text.encode("utf-8")))


def write_json(path: PathLike, value: Any, indent: int = 1) -> Path:
    """Write ``value`` as JSON (``indent``, trailing newline) to ``path`` atomically."""
    return write_text(path, json.dumps(value, indent=indent) + "\n")


def save_npz(path: PathLike, **arrays: np.ndarray) -> Path:
    """``np.savez(path, **arrays)`` atomically; ``path`` must end in ``.npz`` (numpy would append it)."""
    if not str(path).endswith(".npz"):
        raise ValueError(f"save_npz: path must end in '.npz', got '{path}'")
    return Path(atomic_write(_target(path), lambda tmp: np.savez(tmp, **arrays)))


def save_figure(figure, path: PathLike, **savefig_kwargs) -> Path:
    """``figure.savefig(path, **savefig_kwargs)`` atomically (the format follows the extension)."""
    return Path(atomic_write(_target(path), lambda tmp: figure.savefig(tmp, **savefig_kwargs)))
