"""Atomic file writes: a crash mid-write never leaves a truncated file under the final name."""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Callable


def _fsync_path(path: str, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some platforms cannot open directories; the rename is still atomic
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def atomic_write(final_path: str, write: Callable[[str], None]) -> str:
    """Produce ``final_path`` atomically through ``write(tmp_path)``.

    ``write`` receives a path with the same base name inside a fresh hidden directory next to
    ``final_path`` (same file system, so the final rename is atomic; writers that add their own
    scratch files or check the extension work unchanged). After ``write`` returns, the file is
    fsynced, renamed over ``final_path`` with :func:`os.replace` and the directory fsynced. If
    ``write`` raises, or produces no file, the scratch directory is removed, ``final_path`` is left
    as it was (absent, or the previous complete file), and the error propagates.

    Returns:
        The final path.
    """
    final_path = os.path.abspath(os.fspath(final_path))
    directory, base = os.path.split(final_path)
    scratch = tempfile.mkdtemp(prefix=f".{base}.", suffix=".partial", dir=directory)
    try:
        tmp_path = os.path.join(scratch, base)
        write(tmp_path)
        if not os.path.isfile(tmp_path):
            raise OSError(f"atomic_write: the writer produced no file for '{final_path}'.")
        _fsync_path(tmp_path)
        os.replace(tmp_path, final_path)
        _fsync_path(directory, directory=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final_path


def atomic_write_bytes(final_path: str, data: bytes) -> str:
    """Write ``data`` to ``final_path`` atomically (see :func:`atomic_write`)."""
    def _write(tmp_path: str) -> None:
        with open(tmp_path, "wb") as handle:
            handle.write(data)
            handle.flush()
    return atomic_write(final_path, _write)
