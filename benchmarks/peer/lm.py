"""The LM peer benchmark: our SmolLM2-135M LoRA job against PyTorch + transformers + PEFT, side by side.

    python -m benchmarks.peer.lm [--reps 3] [--iters 1] [--core C] [--output-dir results]

The same SmolLM2-135M-Instruct weights (the GGUF dequantised to float32 by the same code), the same LoRA
(r=8, alpha=16, dropout 0.05 on q and v, with identical non-zero A and B drawn by numpy), the same batch
(the first 1 x 256-token chunk of the LM suite's BBC training stream), the same loss and optimizer (mean
next-token cross-entropy, Adam). One worker per framework (``benchmarks.peer.lm_worker``), both pinned to
the same single core with one thread; only one is busy at a time. Every phase of the job (import, read,
build, first forward, first step) is one request to each worker, which reports its RSS after and its
peak RSS during the phase (``VmHWM`` reset at the start). The first forward's logits of both sides are
compared. Then the LoRA step is timed in interleaved repetitions (the side that goes first alternates),
then the forward likewise (a job trains, then evaluates). Prints the per-phase table, the medians, ratios and the issue's target verdicts;
writes ``<output-dir>/peer_lm.json`` and ``peer_lm.md`` (worker logs in ``<output-dir>/peer_logs/``).

Exit status: 0; 1 when a worker fails or the logits differ; 2 when the ``peer`` extra or the model/data
packages are missing."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from benchmarks.peer.cli import PEER_EXTRA, Worker, WorkerError, _load, missing_packages
from benchmarks.peer.lm_common import PHASES, SIDES, LMSetup, compare_logits, markdown, summarize, verdicts

LOGIT_TOLERANCE = 1e-4


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer.lm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions of (step, forward) blocks")
    parser.add_argument("--iters", type=int, default=1, help="calls per timed block")
    parser.add_argument("--core", type=int, help="the CPU both workers are pinned to (default: the first one)")
    parser.add_argument("--settle", type=float, default=0.2, help="idle seconds before each timed block")
    parser.add_argument("--seed", type=int, default=0, help="seed of the LoRA weights and of dropout")
    parser.add_argument("--tolerance", type=float, default=LOGIT_TOLERANCE,
                        help="logit check: max |ours - PEFT| <= tolerance x max(1, max |logit|)")
    parser.add_argument("--no-release-heap", action="store_true",
                        help="ours without mindpet.utils.memory.release_free_heap() after loading, compiling and switching "
                             "(to measure what they save)")
    parser.add_argument("--share-block-graph", action=argparse.BooleanOptionalAction, default=True,
                        help="ours with one shared decoder-block graph (default; LoRA dropout masks from MindSpore's "
                             "generator: every layer draws its own); --no-share-block-graph: 30 inlined blocks")
    parser.add_argument("--gguf", type=Path, help="a LLaMA GGUF file (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--synthetic-batch", action="store_true", help="random token ids instead of BBC text")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--output-dir", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    for key in ("reps", "iters", "seq_len"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    return args


def make_batch(gguf: Path, seq_len: int, synthetic: bool, seed: int) -> tuple[np.ndarray, str]:
    """(1, seq_len) int32 token ids and their description."""
    from benchmarks.models import gguf_loader

    reader = gguf_loader._reader(gguf)  # pylint: disable=protected-access
    config = gguf_loader.read_config(reader)
    if synthetic:
        rng = np.random.default_rng(seed)
        return rng.integers(0, config.vocab_size, (1, seq_len)).astype(np.int32), "random token ids"
    from benchmarks.lib.lm_data import bbc_data
    from benchmarks.lib.lm_profile import Profile

    data = bbc_data(gguf_loader.build_tokenizer(reader), Profile(seq_len=seq_len, heldout_chunks=1))
    return data.train[:1].astype(np.int32), f"the first {seq_len}-token chunk of the LM suite's BBC training stream"


def run(args: argparse.Namespace, setup: LMSetup, log: Callable[[str], None] = print) -> dict:
    """Both workers through the job's phases, the logit check and the interleaved timings."""
    output_dir = Path(args.output_dir)
    core = sorted(os.sched_getaffinity(0))[0] if args.core is None else args.core
    load_before = _load()
    workers: dict[str, Worker] = {}
    report = {side: {"phases": {}, "times": {"step": {"wall": [], "cpu": []}, "forward": {"wall": [], "cpu": []}}}
              for side in SIDES}
    try:
        for side in SIDES:
            workers[side] = Worker(side, 1, [core], output_dir / "peer_logs" / f"lm_{side}.log",
                                   module="benchmarks.peer.lm_worker")
        for phase in PHASES:
            for side in SIDES:
                message = {"cmd": "init", "setup": setup.to_json()} if phase == "start" else \
                    {"cmd": "phase", "name": phase}
                reply = workers[side].request(message)
                report[side]["phases"][phase] = {k: reply[k] for k in ("rss_mb", "peak_mb", "cpu_s", "wall_s")}
                log(f"peer-lm {side} {phase}: RSS {reply['rss_mb']:,.0f} MiB, peak {reply['peak_mb']:,.0f} MiB, "
                    f"{reply['wall_s']:.1f} s (load {_load()})")
        check = compare_logits(np.load(Path(setup.logits_dir) / "ours.npy"),
                               np.load(Path(setup.logits_dir) / "theirs.npy"), args.tolerance)
        log(f"peer-lm logits: max |ours - PEFT| = {check['max_abs_diff']:.3g} (tolerance {check['tolerance']:.3g}): "
            f"{'same model' if check['ok'] else 'DIFFERENT'}")
        for case, phase in (("step", "steps"), ("forward", "forwards")):  # training, then evaluation
            for side in SIDES:
                report[side]["phases"][phase] = {"rss_mb": 0.0, "peak_mb": 0.0, "cpu_s": 0.0, "wall_s": 0.0}
            for rep in range(args.reps):
                for side in (SIDES if rep % 2 == 0 else SIDES[::-1]):
                    time.sleep(args.settle)
                    reply = workers[side].request({"cmd": "time", "case": case, "iters": args.iters})
                    report[side]["times"][case]["wall"] += reply["wall"]
                    report[side]["times"][case]["cpu"] += reply["cpu"]
                    p = report[side]["phases"][phase]
                    p["rss_mb"], p["peak_mb"] = reply["rss_mb"], max(p["peak_mb"], reply["peak_mb"])
                    p["cpu_s"] += reply["cpu_s"]
                    p["wall_s"] += reply["wall_s"]
                log(f"peer-lm {case} rep {rep + 1}/{args.reps}: CPU s ours "
                    f"{report['ours']['times'][case]['cpu'][-1]:.2f} / PEFT {report['theirs']['times'][case]['cpu'][-1]:.2f}"
                    f" (load {_load()})")
        infos = {side: workers[side].request({"cmd": "info"})["info"] for side in SIDES}
    finally:
        for worker in workers.values():
            worker.close()
    summary = summarize(report)
    return {"meta": {"core": core, "threads": 1, "reps": args.reps, "iters": args.iters, "load_before": load_before,
                     "load_after": _load(), "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "setup": setup.to_json()},
            "info": infos, "logits_check": check, "report": report, "summary": summary,
            "verdicts": verdicts(summary)}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = missing_packages()
    if missing:
        print(f"peer-lm: {', '.join(missing)} not installed; needs the peer extra: {PEER_EXTRA}", file=sys.stderr)
        return 2
    from benchmarks.lib.assets import AssetMissing
    from benchmarks.models.gguf_loader import missing_reason, smollm2_path

    reason = None if args.gguf else missing_reason()
    if reason:
        print(f"peer-lm: {reason}", file=sys.stderr)
        return 2
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    gguf = args.gguf or smollm2_path()
    try:
        batch, batch_name = make_batch(gguf, args.seq_len, args.synthetic_batch, args.seed)
    except AssetMissing as err:
        print(f"peer-lm: {err}", file=sys.stderr)
        return 2
    batch_path = output_dir / "peer_lm_batch.npy"
    np.save(batch_path, batch)
    logits_dir = output_dir / "peer_lm_logits"
    logits_dir.mkdir(exist_ok=True)
    setup = LMSetup(gguf_path=str(Path(gguf).resolve()), batch_path=str(batch_path.resolve()),
                    logits_dir=str(logits_dir.resolve()), seed=args.seed, release_heap=not args.no_release_heap,
                    share_block_graph=args.share_block_graph)
    print(f"peer-lm: {Path(gguf).name}, batch {batch.shape[0]} x {batch.shape[1]} ({batch_name}), "
          f"{args.reps} repetitions; output {output_dir}")
    try:
        result = run(args, setup)
    except WorkerError as err:
        print(f"peer-lm: {err}", file=sys.stderr)
        return 1
    result["meta"]["batch"] = batch_name
    from benchmarks.lib.outputs import write_json, write_text  # loads MindSpore: after the timings

    text = markdown(result["report"]) + (f"\nLogits: max |ours - PEFT| {result['logits_check']['max_abs_diff']:.3g}; "
                                         f"first-step loss ours {result['info']['ours']['first_step_loss']:.4f}, "
                                         f"PEFT {result['info']['theirs']['first_step_loss']:.4f} (dropout masks "
                                         f"differ). Load average {result['meta']['load_before']} -> "
                                         f"{result['meta']['load_after']}.\n")
    write_json(output_dir / "peer_lm.json", result)
    write_text(output_dir / "peer_lm.md", text)
    print()
    print(text)
    for side in SIDES:
        print(f"{side}: {result['info'][side]['framework']}")
    return 0 if result["logits_check"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
