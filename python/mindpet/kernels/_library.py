"""Locating and loading the CPU kernel library ``mindpet/lib/libmindpet_cpu_kernels.so``.

The library resolves its GEMM at run time (never linked): :func:`load` points it at MindSpore's own
oneDNN (``mindspore/lib/libdnnl.so.3``, ``dnnl_sgemm``; ``mindpet._mindspore.onednn_library``) unless
``MINDPET_BLAS_LIBRARY`` names another library exporting ``dnnl_sgemm`` or ``cblas_sgemm`` (e.g.
scipy-openblas32's).
"""
from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import Optional

LIBRARY_NAME = "libmindpet_cpu_kernels.so"

_lock = threading.Lock()
_state: dict = {}


class NativeLibraryError(RuntimeError):
    """The fused CPU kernels are not available (library not built, or no BLAS found)."""


def library_path() -> Path:
    """Where the package install puts the CPU kernel library (it may be absent)."""
    override = os.environ.get("MINDPET_CPU_KERNEL_LIBRARY")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "lib" / LIBRARY_NAME


def _default_blas() -> Optional[Path]:
    env = os.environ.get("MINDPET_BLAS_LIBRARY")
    if env:
        return Path(env)
    from mindpet._mindspore import onednn_library  # pylint: disable=import-outside-toplevel
    return onednn_library()


def load() -> str:
    """Load the kernel library, resolve its BLAS, and return the library's path.

    Raises:
        NativeLibraryError: the library is missing or cannot be loaded, or no BLAS was found.
    """
    with _lock:
        if "path" in _state:
            return _state["path"]
        if "error" in _state:
            raise NativeLibraryError(_state["error"])
        try:
            _state["path"] = _load_locked()
            return _state["path"]
        except NativeLibraryError as err:
            _state["error"] = str(err)
            raise


def _load_locked() -> str:
    path = library_path()
    if not path.exists():
        raise NativeLibraryError(
            f"the mindpet CPU kernel library is not built ({path} is missing); reinstall mindpet with "
            f"`pip install .` on a machine with a C++17 compiler and CMake, or use backend='composed'")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        raise NativeLibraryError(f"cannot load {path}: {err}") from err
    lib.MindpetSetBlasLibrary.argtypes = [ctypes.c_char_p]
    lib.MindpetSetBlasLibrary.restype = ctypes.c_int
    lib.MindpetBlasDescription.restype = ctypes.c_char_p
    blas = _default_blas()
    if blas is not None and lib.MindpetSetBlasLibrary(str(blas).encode()) != 0:
        raise NativeLibraryError(f"{blas} exports neither dnnl_sgemm nor cblas_sgemm")
    description = lib.MindpetBlasDescription().decode()
    if description.startswith("no BLAS"):
        raise NativeLibraryError(f"the mindpet CPU kernels found no BLAS: {description}")
    _state["lib"] = lib
    _state["blas"] = description
    return str(path)


def available() -> bool:
    """True when the CPU kernel library loads and has a BLAS."""
    try:
        load()
        return True
    except NativeLibraryError:
        return False


def blas_description() -> str:
    """Which GEMM the CPU kernels call (after a successful :func:`load`)."""
    load()
    return _state["blas"]
