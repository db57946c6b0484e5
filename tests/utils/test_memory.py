"""mindpet.utils.memory: RSS readings against /proc, the peak reset, and malloc_trim returning freed heap."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from mindpet.utils import memory

MIB = 2 ** 20
LINUX = sys.platform.startswith("linux")
GLIBC = LINUX and memory._malloc_trim() is not None  # pylint: disable=protected-access
needs_linux = pytest.mark.skipif(not LINUX, reason="/proc/self/status is Linux's")


def _proc_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(key)


@needs_linux
def test_rss_and_peak_read_proc_status():
    rss, peak = memory.rss_bytes(), memory.peak_rss_bytes()
    assert abs(rss - _proc_kib("VmRSS") * 1024) < 16 * MIB
    assert abs(peak - _proc_kib("VmHWM") * 1024) < 16 * MIB
    assert peak >= rss - 16 * MIB


@needs_linux
def test_reset_peak_restarts_the_peak_at_the_current_rss():
    block = np.ones(256 * MIB // 8)  # 256 MiB, touched
    del block
    assert memory.peak_rss_bytes() - memory.rss_bytes() >= 200 * MIB
    assert memory.reset_peak_rss() is True
    assert memory.peak_rss_bytes() - memory.rss_bytes() < 32 * MIB


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_release_free_heap_returns_fragmented_free_heap():
    # 64 KiB blocks stay below glibc's mmap threshold: they come from the heap. Freeing every other one
    # leaves free holes the heap cannot shrink past; malloc_trim(0) gives their pages back.
    blocks = [b"x" * (64 * 1024) for _ in range(4096)]  # 256 MiB
    del blocks[::2]
    before = memory.rss_bytes()
    assert memory.release_free_heap() is True
    after = memory.rss_bytes()
    assert before - after >= 64 * MIB, (before / MIB, after / MIB)
    assert len(blocks) == 2048 and blocks[-1][:1] == b"x"  # the live half is untouched


def test_release_free_heap_is_a_no_op_without_malloc_trim(monkeypatch):
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    assert memory.release_free_heap() is False


def test_readings_are_none_without_proc(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "_STATUS", tmp_path / "absent")
    monkeypatch.setattr(memory, "_CLEAR_REFS", tmp_path / "no_dir" / "clear_refs")
    assert memory.rss_bytes() is None and memory.peak_rss_bytes() is None
    assert memory.reset_peak_rss() is False


def test_release_graph_memory_frees_a_run_graphs_cached_memory_and_the_graph_still_runs():
    import mindspore as ms
    from mindspore import Tensor, nn, ops

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    ms.set_seed(0)

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.layers = nn.CellList([nn.Dense(256, 256) for _ in range(12)])

        def construct(self, x):
            for layer in self.layers:
                x = x + ops.sigmoid(layer(x)) * layer(x)
            return (x * x).mean()

    net = Net()
    step = nn.TrainOneStepCell(net, nn.SGD(net.trainable_params(), 1e-3))
    x = Tensor(np.random.default_rng(0).standard_normal((16384, 256)).astype(np.float32) * 0.1)
    losses = [float(step(x).asnumpy())]  # activations 16384 x 256 x 4 B = 16 MiB each
    before = memory.rss_bytes()
    memory.release_graph_memory()
    assert before - memory.rss_bytes() >= 16 * MIB, (before / MIB, memory.rss_bytes() / MIB)  # measured 41
    losses.append(float(step(x).asnumpy()))  # the graph runs again, from its updated weights
    assert losses[1] < losses[0]
