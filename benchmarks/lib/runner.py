"""Benchmark runs in worker processes, and reusing finished runs (``--resume``).

The classification suite (:mod:`benchmarks.suite`) and the language-model suite (:mod:`benchmarks.lm_suite`)
run every (method, seed) in its own Python process (``python -m <tool> ...``): MindSpore's compiled graphs,
caches and allocator cannot leak from one run into the next, and the process's peak resident memory is
that run's alone. A run answers a *request*, a JSON dictionary of everything its result depends on; with
``--resume`` a finished run is reused when the request it answered has the same :func:`request_digest` as
the new one.

Two ways of running the workers: :func:`run_timed` runs one and measures its wall and CPU time (the
classification suite); :func:`run_workers` runs a list of them, ``jobs`` at a time, each parallel worker
pinned to its own share of the CPUs (:func:`cpu_groups`) with one OpenMP thread per CPU (the LM suite).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple

from benchmarks.lib.threads import REPOSITORY, worker_env


def request_digest(request: Mapping[str, Any], ignore: Iterable[str] = ()) -> str:
    """SHA-256 of ``request`` as canonical JSON (keys sorted, tuples as lists), without the top-level keys in
    ``ignore`` (what does not change the result, e.g. whether progress bars are shown). Two requests name the
    same run exactly when their digests are equal, also after one of them went through a JSON file."""
    skip = set(ignore)
    canonical = json.dumps({k: v for k, v in request.items() if k not in skip}, sort_keys=True,
                           separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_json(path: Optional[Path]) -> Optional[dict]:
    """The JSON object in ``path``, or None when the file is missing, unreadable or not a JSON object."""
    if path is None:
        return None
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def reusable(result_path: Path, request: Mapping[str, Any], request_path: Optional[Path] = None,
             ignore: Iterable[str] = ()) -> Optional[dict]:
    """The finished result in ``result_path`` if it answers ``request``, else None (``--resume``).

    The request a result answered is read from ``request_path`` when given (a request file written beside the
    result), else from the result's own ``"request"`` entry; it must have the digest of ``request``, the keys
    in ``ignore`` left out."""
    result = read_json(result_path)
    if result is None:
        return None
    answered = read_json(request_path) if request_path is not None else result.get("request")
    if not isinstance(answered, dict) or request_digest(answered, ignore) != request_digest(request, ignore):
        return None
    return result


def module_command(module: str, *args: str) -> List[str]:
    """The command running ``python -m module args...`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


@dataclass(frozen=True)
class ProcessRun:
    """A finished worker process: exit status, wall seconds, CPU seconds (user + system, all threads)."""

    returncode: int
    wall_s: float
    cpu_s: float


def run_timed(cmd: Sequence[str], env: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None,
              quiet: bool = False) -> ProcessRun:
    """Run ``cmd`` to completion (in this directory: relative paths in it stay valid) and measure it. ``quiet``
    discards its standard output (standard error is kept). Raises ``subprocess.TimeoutExpired`` after
    ``timeout`` s."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), env=None if env is None else dict(env),
                          stdout=subprocess.PIPE if quiet else None, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return ProcessRun(proc.returncode, wall, cpu)


def cpu_groups(cpus: Sequence[int], jobs: int) -> List[Tuple[int, ...]]:
    """Split the usable CPUs into ``jobs`` disjoint, contiguous groups of near-equal size (one per job slot)."""
    cpus = sorted(cpus)
    if not 1 <= jobs <= len(cpus):
        raise ValueError(f"jobs must be between 1 and the {len(cpus)} usable CPUs, got {jobs}")
    bounds = [round(i * len(cpus) / jobs) for i in range(jobs + 1)]
    return [tuple(cpus[bounds[i]:bounds[i + 1]]) for i in range(jobs)]


def run_workers(commands: Sequence[Tuple[str, List[str]]], jobs: int, log_dir: Path, tag: str = "runner") -> None:
    """Run ``(label, argv)`` worker commands, ``jobs`` at a time, from the repository directory. With
    ``jobs == 1`` a worker inherits this process's CPUs, environment and output, and the first failure raises
    ``subprocess.CalledProcessError``; otherwise each running worker is pinned to its own group of CPUs
    (:func:`cpu_groups`, environment :func:`~benchmarks.lib.threads.worker_env`) and writes its output to
    ``log_dir/<label>.log``, and failures raise ``RuntimeError`` after all have finished. Progress lines are
    printed with the prefix ``[tag]``."""
    if jobs == 1:
        for label, cmd in commands:
            print(f"[{tag}] {label}: {' '.join(cmd[1:])}", flush=True)
            subprocess.run(cmd, check=True, cwd=REPOSITORY)
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    free, pending, running, failed = cpu_groups(os.sched_getaffinity(0), jobs), list(commands), [], []
    try:
        while pending or running:
            while pending and free:  # started from this thread only: the pinning runs between fork and exec
                (label, cmd), cpus = pending.pop(0), free.pop(0)
                log = log_dir / f"{label.replace(' ', '_')}.log"
                print(f"[{tag}] {label} on CPUs {list(cpus)}: {' '.join(cmd[1:])} (log: {log})", flush=True)
                handle = open(log, "w", encoding="utf-8")  # pylint: disable=consider-using-with
                pin = functools.partial(os.sched_setaffinity, 0, cpus)
                proc = subprocess.Popen(cmd, cwd=REPOSITORY, env=worker_env(cpus), stdout=handle,
                                        stderr=subprocess.STDOUT, preexec_fn=pin)
                running.append((proc, label, cpus, handle, log))
            time.sleep(0.5)
            for entry in [e for e in running if e[0].poll() is not None]:
                proc, label, cpus, handle, log = entry
                handle.close()
                running.remove(entry)
                free.append(cpus)
                print(f"[{tag}] {label}: finished (exit {proc.returncode})", flush=True)
                if proc.returncode != 0:
                    failed.append(f"worker '{label}' failed with exit {proc.returncode}; see {log}")
    finally:  # interrupted (or a bug here): stop the workers still running, close their logs
        for proc, _, _, handle, _ in running:
            proc.kill()
            proc.wait()
            handle.close()
    if failed:
        raise RuntimeError("; ".join(failed))
