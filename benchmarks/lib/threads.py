"""The environment of benchmark worker processes: the repository importable, CPU and OpenMP settings.

libgomp, which MindSpore's CPU operators and mindpet's fused kernels share, reads ``OMP_WAIT_POLICY`` once,
when the process starts. With the default policy its idle workers spin after every parallel region and take
the cores from the operators MindSpore runs next; ``PASSIVE`` lets them sleep. Measured on the benchmark
MiniLM (``python -m benchmarks.step_probe --ab 3``, benchmarks/RESULTS.md "MindSpore CPU threads"): LoRA
step 0.80x and LoRA forward 0.78x of their default-policy times, plain forward and full fine-tuning step
unchanged (within the rounds' spread). Workers therefore get ``PASSIVE`` unless the caller set a policy.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

REPOSITORY = str(Path(__file__).resolve().parents[2])
OPENMP_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def with_repository_on_path(env: dict) -> dict:
    """``env`` with the repository first on ``PYTHONPATH``, so ``python -m benchmarks.<x>`` works from anywhere."""
    env["PYTHONPATH"] = REPOSITORY + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def worker_env(cpus: Optional[Sequence[int]] = None, base: Optional[dict] = None) -> dict:
    """Environment of a worker process: ``OMP_WAIT_POLICY=PASSIVE`` unless set; when the worker is confined
    to ``cpus``, one OpenMP thread per CPU."""
    env = dict(os.environ if base is None else base)
    if cpus is not None:
        env["OMP_NUM_THREADS"] = str(len(cpus))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def thread_settings() -> dict:
    """The CPUs and OpenMP settings this process runs with (recorded in every run's result)."""
    return {"cpus": sorted(os.sched_getaffinity(0)), **{k: os.environ.get(k) for k in OPENMP_VARIABLES}}
