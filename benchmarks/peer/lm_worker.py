"""An LM peer-benchmark worker: one framework in one process, driven by the parent over a line protocol.

    python -m benchmarks.peer.lm_worker --side ours|theirs [--threads N] [--cores 0]

Pins itself to ``--cores`` before any framework is imported. Requests (JSON lines on stdin, one JSON reply
each on the original stdout; everything the frameworks print goes to stderr):
``{"cmd": "init", "setup": LMSetup}``, ``{"cmd": "phase", "name": one of PHASES[1:]}``,
``{"cmd": "time", "case": "step"|"forward", "iters": n}``, ``{"cmd": "info"}``, ``{"cmd": "quit"}``.
Every reply of init/phase/time carries ``rss_mb`` (VmRSS after) and ``peak_mb`` (VmHWM during the request:
the peak is reset at its start), plus the request's process-CPU and wall seconds."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Callable, Sequence

from benchmarks.lib.procfs import reset_peak, status_mib
from benchmarks.peer.lm_common import PHASES, LMSetup
from benchmarks.peer.worker import serve_on_stdio, time_calls


def measured(fn: Callable[[], object]) -> dict:
    """Run ``fn`` with the peak RSS reset first: its RSS after, peak during, CPU and wall seconds."""
    reset_peak()
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return {"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0,
            "rss_mb": status_mib("VmRSS"), "peak_mb": max(status_mib("VmHWM"), status_mib("VmRSS"))}


def make_side(side: str, setup: LMSetup, threads: int | None):
    if side == "ours":
        from benchmarks.peer.lm_ours import OursLM
        return OursLM(setup, threads)
    from benchmarks.peer.lm_theirs import TheirsLM
    return TheirsLM(setup, threads)


def serve(side: str, threads: int | None, requests, reply, factory=make_side) -> None:
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
            if cmd == "init":
                out = measured(lambda: None)
                runner = factory(side, LMSetup.from_json(request["setup"]), threads)
                reply({"ok": True, **out, "pid": os.getpid(), "affinity": sorted(os.sched_getaffinity(0))})
            elif runner is None:
                raise RuntimeError(f"{cmd!r} before 'init'")
            elif cmd == "phase":
                name = request["name"]
                if name not in PHASES[1:]:
                    raise ValueError(f"unknown phase {name!r}; known: {PHASES[1:]}")
                reply({"ok": True, **measured(getattr(runner, f"phase_{name}"))})
            elif cmd == "time":
                calls = {}
                out = measured(lambda: calls.update(zip(("wall", "cpu"), time_calls(
                    runner.cases[request["case"]], int(request["iters"])))))
                reply({"ok": True, **out, **calls})
            elif cmd == "info":
                reply({"ok": True, "info": runner.info()})
            else:
                raise ValueError(f"unknown request {cmd!r}")
        except Exception:  # pylint: disable=broad-except
            reply({"ok": False, "error": traceback.format_exc()})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer.lm_worker")
    parser.add_argument("--side", choices=("ours", "theirs"), required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cores", default=None)
    args = parser.parse_args(argv)
    return serve_on_stdio(serve, args.side, args.threads, args.cores)


if __name__ == "__main__":
    sys.exit(main())
