"""Our side of the LM job alone, phase by phase, for measuring memory levers one at a time (no torch).

    python -m benchmarks.lm_memory_probe [--no-share-block-graph] [--no-release-heap] [--steps 2] [--json out]
        [--attention-backend composed] [--norm-backend composed] [--mlp-backend composed]

Runs :class:`benchmarks.peer.lm_ours.OursLM` (SmolLM2-135M, LoRA q,v r=8, batch 1 x 256, Adam) in this
process through the LM peer's phases (import, read, build, first forward, first step) and ``--steps`` more
steps and forwards, printing after each the RSS and the peak RSS during it (``VmHWM`` reset at its start),
then the job's peak (the largest phase peak) and the median step / forward CPU seconds."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--share-block-graph", action=argparse.BooleanOptionalAction, default=True,
                        help="one shared block graph (default; see LMSetup)")
    parser.add_argument("--no-release-heap", action="store_true")
    parser.add_argument("--attention-backend", choices=("auto", "fused", "composed"),
                        help="of the LLaMA attention core (default: the global choice)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--norm-backend", choices=("auto", "fused", "composed"),
                        help="the model's RMSNorm (default: global choice, fused when built)")
    parser.add_argument("--mlp-backend", choices=("auto", "fused", "composed"),
                        help="the model's SwiGLU (default: global choice, fused when built)")
    parser.add_argument("--gguf", type=Path)
    parser.add_argument("--synthetic-batch", action="store_true")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from benchmarks.models.gguf_loader import smollm2_path
    from benchmarks.peer.lm import make_batch
    from benchmarks.peer.lm_common import PHASES, LMSetup
    from benchmarks.peer.lm_ours import OursLM
    from benchmarks.peer.lm_worker import measured
    from benchmarks.peer.worker import time_calls

    gguf = args.gguf or smollm2_path()
    with tempfile.TemporaryDirectory() as tmp:
        batch, _ = make_batch(gguf, args.seq_len, args.synthetic_batch, 0)
        np.save(Path(tmp) / "batch.npy", batch)
        setup = LMSetup(gguf_path=str(gguf), batch_path=str(Path(tmp) / "batch.npy"), logits_dir=tmp,
                        release_heap=not args.no_release_heap, share_block_graph=args.share_block_graph,
                        attention_backend=args.attention_backend, norm_backend=args.norm_backend,
                        mlp_backend=args.mlp_backend)
        phases = {"start": measured(lambda: None)}
        runner = OursLM(setup, 1)
        for phase in PHASES[1:]:
            phases[phase] = measured(getattr(runner, f"phase_{phase}"))
            p = phases[phase]
            print(f"{phase:>10}: RSS {p['rss_mb']:7,.0f} MiB, peak during {p['peak_mb']:7,.0f} MiB, "
                  f"{p['cpu_s']:6.1f} CPU s", flush=True)
        times = {}
        phases["steps"] = measured(lambda: times.update(
            step=time_calls(runner.cases["step"], args.steps), forward=time_calls(runner.cases["forward"], args.steps)))
    summary = {"setup": setup.to_json(), "phases": phases,
               "peak_mb": max(p["peak_mb"] for p in phases.values()),
               "step_cpu_s": float(np.median(times["step"][1])), "forward_cpu_s": float(np.median(times["forward"][1])),
               "first_step_loss": runner.first_loss}
    print(f"job peak {summary['peak_mb']:,.0f} MiB; step {summary['step_cpu_s']:.2f} CPU s, forward "
          f"{summary['forward_cpu_s']:.2f} CPU s (medians of {args.steps}); first loss {runner.first_loss:.4f}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
