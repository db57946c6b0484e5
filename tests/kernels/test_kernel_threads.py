"""The CPU kernels' thread team: its size from the CPU affinity, the cgroup quota and the
environment, and correct results whatever the team (more participants than cores, several callers
at once)."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from mindpet.kernels import _library
from kernel_testing import call_aot, requires_fused

pytestmark = requires_fused

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _lib():
    return ctypes.CDLL(str(_library.library_path()))


@pytest.mark.parametrize("text, cpus", [
    ("max 100000\n", 0), ("max", 0), ("200000 100000\n", 2), ("150000 100000", 1), ("50000 100000", 1),
    ("400000 50000", 8), ("", 0), ("abc 100000", 0), ("100000", 0), ("12x 100000", 0),
])
def test_cgroup_v2_cpu_max_is_parsed_to_whole_cpus(text, cpus):
    fn = _lib().MindpetCpusFromCpuMax
    fn.argtypes = [ctypes.c_char_p]
    assert fn(text.encode()) == cpus


@pytest.mark.parametrize("quota, period, cpus", [(-1, 100000, 0), (0, 100000, 0), (300000, 100000, 3),
                                                 (250000, 100000, 2), (10000, 100000, 1), (100000, 0, 0)])
def test_cgroup_v1_quota_and_period_give_whole_cpus(quota, period, cpus):
    fn = _lib().MindpetCpusFromQuota
    fn.argtypes = [ctypes.c_int64, ctypes.c_int64]
    assert fn(quota, period) == cpus


@pytest.mark.parametrize("affinity, quota, env, team", [(4, 0, 0, 4), (4, 2, 0, 2), (2, 8, 0, 2), (4, 2, 3, 3),
                                                        (0, 0, 0, 1), (1, 0, 6, 6)])
def test_team_size_is_the_environment_else_affinity_capped_by_quota(affinity, quota, env, team):
    assert _lib().MindpetTeamSize(affinity, quota, env) == team


def _max_threads_in_child(env_updates: dict, cpus=None) -> int:
    """MindpetMaxThreads() in a fresh process with the given environment and CPU affinity."""
    env = {k: v for k, v in os.environ.items() if k not in ("MINDPET_NUM_THREADS", "OMP_NUM_THREADS")}
    env.update(env_updates)
    code = ("import ctypes, os, sys\n"
            f"cpus = {cpus!r}\n"
            "if cpus is not None: os.sched_setaffinity(0, cpus)\n"
            f"print(ctypes.CDLL({str(_library.library_path())!r}).MindpetMaxThreads())\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


@pytest.mark.parametrize("text, cpus", [("0-1\n", 2), ("0", 1), ("0-3,6", 5), ("0,2,4-5", 4), ("", 0),
                                        ("3-1", 0), ("a-b", 0)])
def test_cpuset_lists_are_counted(text, cpus):
    fn = _lib().MindpetCpusInList
    fn.argtypes = [ctypes.c_char_p]
    assert fn(text.encode()) == cpus


def test_max_threads_follows_the_start_time_cpus_and_the_environment():
    """The process's CPUs when the OpenMP runtime starts (one CPU -> one thread), the environment
    first; MindSpore's later OMP_NUM_THREADS=1 / thread binding cannot shrink it (see parallel.cc)."""
    one_cpu = [sorted(os.sched_getaffinity(0))[0]]
    assert _max_threads_in_child({}, one_cpu) == 1
    assert 1 <= _max_threads_in_child({}) <= os.cpu_count()
    assert _max_threads_in_child({"MINDPET_NUM_THREADS": "3"}, one_cpu) == 3
    assert _max_threads_in_child({"OMP_NUM_THREADS": "2"}) == 2
    assert _max_threads_in_child({"MINDPET_NUM_THREADS": "5", "OMP_NUM_THREADS": "2"}) == 5


_OVERSUBSCRIBED = r"""
import numpy as np
from kernel_testing import call_aot
rng = np.random.default_rng(0)
m, k, n, r = 3000, 96, 80, 4
x, dy = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((m, n)).astype(np.float32)
w = rng.standard_normal((n, k)).astype(np.float32)
a, b = rng.standard_normal((r, k)).astype(np.float32), rng.standard_normal((n, r)).astype(np.float32)
u = (x @ a.T).astype(np.float32)
ins = [dy, x, w, a, b, u, np.zeros(1, np.float32), np.array(0.5, np.float32), np.array(0, np.int64)]
outs = [np.zeros((m, k), np.float32), np.zeros((r, k), np.float32), np.zeros((n, r), np.float32)]
code, arrays = call_aot("LoraLinearBackward", ins + outs)
assert code == 0
for _ in range(3):  # per-chunk partial sums: the same bits whoever ran which chunk
    again = call_aot("LoraLinearBackward", ins + [np.zeros_like(o) for o in outs])[1]
    for got, first in zip(again[-3:], arrays[-3:]):
        assert np.array_equal(got, first)
d = dy.astype(np.float64)
g = d @ b
for got, want in ((arrays[-3], d @ w + 0.5 * g @ a), (arrays[-2], 0.5 * g.T @ x), (arrays[-1], 0.5 * d.T @ u)):
    assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max(), np.abs(got - want).max()
h = rng.standard_normal((m, 64)).astype(np.float32)
dyh = rng.standard_normal((m, 64)).astype(np.float32)
wd, wu = rng.standard_normal((16, 64)).astype(np.float32), rng.standard_normal((64, 16)).astype(np.float32)
z = (h @ wd.T).astype(np.float32)
outs = [np.zeros((m, 64), np.float32), np.zeros((16, 64), np.float32), np.zeros(16, np.float32),
        np.zeros((64, 16), np.float32), np.zeros(64, np.float32)]
code, arrays = call_aot("AdapterBackward", [dyh, h, wd, wu, z, np.array(1, np.int64)] + outs)
assert code == 0
for _ in range(3):
    again = call_aot("AdapterBackward", [dyh, h, wd, wu, z, np.array(1, np.int64)] + [np.zeros_like(o) for o in outs])[1]
    for got, first in zip(again[-5:], arrays[-5:]):
        assert np.array_equal(got, first)
dz = (dyh.astype(np.float64) @ wu) * (z > 0)
for got, want in ((arrays[-5], dyh + dz @ wd), (arrays[-4], dz.T @ h), (arrays[-3], dz.sum(0)),
                  (arrays[-2], dyh.T.astype(np.float64) @ np.maximum(z, 0)), (arrays[-1], dyh.sum(0))):
    assert np.abs(got - want).max() <= 2e-5 * np.abs(want).max(), np.abs(got - want).max()
print("ok")
"""


@pytest.mark.parametrize("scheduling", [{}, {"MINDPET_CPU_CHUNKS": "guided"},
                                        {"MINDPET_CPU_CHUNKS": "guided", "MINDPET_CPU_THREADS_BACKEND": "pool"}],
                         ids=["openmp-blocks", "openmp-guided", "pool-guided"])
def test_results_are_exact_with_more_participants_than_cores(scheduling):
    """Eight participants on this machine's cores, under each scheduling: the chunks and the
    per-chunk partial sums give the float64 results, bit-identical from call to call."""
    env = dict(os.environ, MINDPET_NUM_THREADS="8", **scheduling)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(REPO, "tests", "kernels"), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", _OVERSUBSCRIBED], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_concurrent_callers_get_their_own_results():
    """Several threads calling kernels at once (as MindSpore's parallel actors may) share the pool."""
    rng = np.random.default_rng(3)
    m, k, n, r = 2048, 64, 48, 2
    problems = []
    for _ in range(4):
        x, w, b = rng.standard_normal((m, k)), rng.standard_normal((n, k)), rng.standard_normal(n)
        a, bb = rng.standard_normal((r, k)), rng.standard_normal((n, r))
        problems.append([v.astype(np.float32) for v in (x, w, b, a, bb)])
    results = [None] * len(problems)

    def run(i):
        x, w, b, a, bb = problems[i]
        args = [x, w, b, a, bb, np.zeros(1, np.float32), np.array(0.5, np.float32), np.array(1, np.int64),
                np.array(0, np.int64), np.zeros((m, n), np.float32), np.zeros((m, r), np.float32)]
        for _ in range(5):
            code, arrays = call_aot("LoraLinearForward", args)
            assert code == 0
        results[i] = arrays[-2]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(problems))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (x, w, b, a, bb), y in zip(problems, results):
        x64 = x.astype(np.float64)
        want = x64 @ w.T + b + 0.5 * (x64 @ a.T) @ bb.T
        assert np.abs(y - want).max() <= 2e-5 * np.abs(want).max()
