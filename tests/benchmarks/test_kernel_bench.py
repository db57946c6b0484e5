"""benchmarks.kernel_bench: the standalone step's worker processes start with the benchmark's environment.

``import mindspore`` sets ``OMP_NUM_THREADS=1`` in the C environment (not in ``os.environ``); a worker
started without ``env`` inherited it and ran the fused kernels on one thread while MindSpore's composed
operators kept their own pool: the fresh-process standalone comparison was biased against fused
(issue #19 part 2, benchmarks/RESULTS.md).
"""
# pylint: disable=redefined-outer-name,unused-argument,protected-access
import ctypes
import os

import pytest

pytest.importorskip("mindspore")
from benchmarks import kernel_bench  # noqa: E402  pylint: disable=wrong-import-position

_LIBC = ctypes.CDLL(None)
_LIBC.getenv.restype = ctypes.c_char_p
_LIBC.setenv.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
_LIBC.unsetenv.argtypes = [ctypes.c_char_p]


@pytest.fixture
def mindspore_style_omp_setting(monkeypatch):
    """``OMP_NUM_THREADS`` absent from ``os.environ`` but 1 in the C environment, as after ``import mindspore``."""
    original = _LIBC.getenv(b"OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    _LIBC.setenv(b"OMP_NUM_THREADS", b"1", 1)
    assert "OMP_NUM_THREADS" not in os.environ
    yield
    if original is None:
        _LIBC.unsetenv(b"OMP_NUM_THREADS")
    else:
        _LIBC.setenv(b"OMP_NUM_THREADS", original, 1)


def test_standalone_workers_do_not_inherit_mindspores_omp_num_threads(mindspore_style_omp_setting):
    result = kernel_bench.run_standalone_worker("composed", steps=1, warmup=1)
    assert result["backend"] == "composed" and result["seconds"] > 0
    assert result["omp_num_threads"] is None  # was "1": the fused kernels then ran single-threaded


@pytest.mark.skipif(not kernel_bench._library.available(), reason="mindpet CPU kernel library not built")
def test_a_fused_standalone_worker_gets_the_kernel_team_of_the_benchmark_process(mindspore_style_omp_setting):
    result = kernel_bench.run_standalone_worker("fused", steps=1, warmup=1)
    assert result["fused_threads"] == kernel_bench.fused_threads()
