"""A peer-benchmark worker: one framework in one process, driven by the parent over a line protocol.

    python -m benchmarks.peer.worker --side ours|theirs [--threads N] [--cores 0,1]

The parent sets the thread environment (``OMP_NUM_THREADS`` ...) before starting the worker; the worker
pins itself to ``--cores`` (``os.sched_setaffinity``) before any framework is imported, then sets the
framework's own thread count. Requests are JSON lines on stdin; each gets one JSON line on the worker's
original stdout. Everything the frameworks print goes to stderr (fd 1 is redirected there).

Requests: ``{"cmd": "setup", "setup": ModelSetup}``, ``{"cmd": "logits"}``,
``{"cmd": "time", "case": name, "iters": n}`` (per-call wall and process-CPU seconds), ``{"cmd": "quit"}``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Sequence


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer.worker")
    parser.add_argument("--side", choices=("ours", "theirs"), required=True)
    parser.add_argument("--threads", type=int, default=None, help="framework thread count (default: its own)")
    parser.add_argument("--cores", default=None, help="comma-separated CPU ids to pin to (default: inherited)")
    return parser.parse_args(argv)


def time_calls(fn, iters: int) -> tuple[list[float], list[float]]:
    """Per-call wall (``perf_counter``) and process CPU (``process_time``, all threads) seconds."""
    walls, cpus = [], []
    for _ in range(iters):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return walls, cpus


def _build(side: str, setup_json: dict, threads: int | None):
    from benchmarks.peer.common import CASES, ModelSetup

    setup = ModelSetup.from_json(setup_json)
    if side == "ours":
        from benchmarks.peer import ms_side as module

        module.configure_threads(threads)
        runner = module.OursSide(setup)
    else:
        from benchmarks.peer import torch_side as module

        module.configure_threads(threads)
        runner = module.TheirsSide(setup)
    warmup = {}
    for case in CASES:
        walls, _ = time_calls(runner.cases[case], max(1, setup.warmup))
        warmup[case] = walls
    return runner, warmup


def serve(side: str, threads: int | None, requests, reply) -> None:
    runner = None
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        cmd = request.get("cmd")
        try:
            if cmd == "quit":
                reply({"ok": True})
                return
            if cmd == "setup":
                start = time.perf_counter()
                runner, warmup = _build(side, request["setup"], threads)
                info = runner.info()
                info.update({"setup_s": time.perf_counter() - start, "warmup_s": warmup, "pid": os.getpid(),
                             "affinity": sorted(os.sched_getaffinity(0)), "threads_requested": threads,
                             "omp_num_threads": os.environ.get("OMP_NUM_THREADS")})
                reply({"ok": True, "info": info})
            elif runner is None:
                raise RuntimeError(f"{cmd!r} before 'setup'")
            elif cmd == "logits":
                reply({"ok": True, "logits": {k: v.tolist() for k, v in runner.logits().items()}})
            elif cmd == "time":
                walls, cpus = time_calls(runner.cases[request["case"]], int(request["iters"]))
                reply({"ok": True, "wall": walls, "cpu": cpus})
            else:
                raise ValueError(f"unknown request {cmd!r}")
        except Exception:  # pylint: disable=broad-except
            reply({"ok": False, "error": traceback.format_exc()})


def serve_on_stdio(serve_fn, side: str, threads: int | None, cores: str | None) -> int:
    """Pin to ``cores`` ("0,1"), then ``serve_fn(side, threads, stdin, reply)`` with JSON lines on the real
    stdout; anything else printed to stdout (MindSpore, PyTorch) goes to stderr instead."""
    if cores:
        os.sched_setaffinity(0, {int(c) for c in cores.split(",")})
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def reply(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    serve_fn(side, threads, sys.stdin, reply)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return serve_on_stdio(serve, args.side, args.threads, args.cores)


if __name__ == "__main__":
    sys.exit(main())
