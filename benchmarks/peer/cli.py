"""The peer benchmark's parent process.

    python -m benchmarks.peer [--quick] [--modes one,all] [--reps N] [--iters-forward N] [--iters-step N]
                              [--core C] [--output-dir results] [--model-dir DIR --synthetic-batch]
    python -m benchmarks.peer --report results/peer.json     (re-print a saved run's tables)

For each mode (``one``: both workers pinned to the same single core, every thread count 1; ``all``: every
core of this process, thread counts = number of cores) it starts one MindSpore worker and one PyTorch
worker (``benchmarks.peer.worker``), has them build and warm up their four models one after the other,
compares their logits on the batch, then times the cases in interleaved repetitions: for each repetition,
for each case, a block of calls on one side and then on the other (the side that goes first alternates),
only one worker busy at a time and a short idle pause before each block (spinning OpenMP threads of the
previous block settle). Prints the tables and verdicts and writes ``<output-dir>/peer.json`` and
``peer.md``; worker logs go to ``<output-dir>/peer_logs/``.

Exit status: 0; 1 when a worker fails or the two sides' logits differ; 2 when the ``peer`` extra (torch,
transformers, peft) or the offline model/data packages are missing.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from benchmarks.peer import analysis
from benchmarks.peer.common import CASES, SIDES, ModelSetup, bbc_batch, save_batch, synthetic_batch
from benchmarks.lib.threads import with_repository_on_path

PEER_PACKAGES = ("torch", "transformers", "peft")
PEER_EXTRA = 'pip install -e ".[peer]"   (torch==2.13.0, transformers==5.24.0, peft==0.21.2)'
MODES = ("one", "all")
PROFILES = {
    # reps, forward calls per block, step calls per block, untimed warm-up calls per case
    "full": {"reps": 7, "iters_forward": 5, "iters_step": 3, "warmup": 2},
    "quick": {"reps": 5, "iters_forward": 2, "iters_step": 1, "warmup": 1},
}
LOGIT_TOLERANCE = 1e-4


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="5 repetitions of 2 forward / 1 step call (default: 7 of 5 / 3)")
    parser.add_argument("--modes", default="one,all",
                        help="comma-separated: 'one' (1 thread, pinned to one core), 'all' (all cores); default both")
    parser.add_argument("--reps", type=int, help="interleaved repetitions (overrides the profile)")
    parser.add_argument("--iters-forward", type=int, help="forward calls per repetition block")
    parser.add_argument("--iters-step", type=int, help="training-step calls per repetition block")
    parser.add_argument("--warmup", type=int, help="untimed calls of every case after building (>= 1: compiles)")
    parser.add_argument("--core", type=int, help="CPU for the one-thread mode (default: the first one available)")
    parser.add_argument("--settle", type=float, default=0.2, help="idle seconds before each timed block")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="seed of the head/LoRA weights and of dropout")
    parser.add_argument("--tolerance", type=float, default=LOGIT_TOLERANCE,
                        help="logit check: max |ours - PEFT| <= tolerance x max(1, max |logit|)")
    parser.add_argument("--model-dir", type=Path,
                        help="HF BERT directory (config.json, model.safetensors); default all-MiniLM-L6-v2")
    parser.add_argument("--synthetic-batch", action="store_true",
                        help="random token ids instead of BBC headlines (for --model-dir test models)")
    parser.add_argument("--num-classes", type=int, default=5, help="classes of the head with --synthetic-batch")
    parser.add_argument("--output-dir", type=Path, default=Path("results"))
    parser.add_argument("--report", type=Path, metavar="PEER_JSON",
                        help="measure nothing: recompute and print the tables of a saved peer.json")
    args = parser.parse_args(argv)
    args.modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    unknown = [m for m in args.modes if m not in MODES]
    if unknown or not args.modes:
        parser.error(f"--modes: unknown {unknown or 'empty'}; choose from {', '.join(MODES)}")
    profile = PROFILES["quick" if args.quick else "full"]
    for key, value in profile.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in ("reps", "iters_forward", "iters_step", "warmup", "batch_size", "max_length"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    return args


def iterations(args: argparse.Namespace) -> dict:
    """Calls per timed block for each case."""
    return {case: args.iters_step if case.endswith("_step") else args.iters_forward for case in CASES}


def missing_packages() -> list[str]:
    return [name for name in PEER_PACKAGES if importlib.util.find_spec(name) is None]


def worker_env(threads: int) -> dict:
    """Environment of a worker: repository importable, offline hub, every thread pool set to ``threads``."""
    env = with_repository_on_path(dict(os.environ))
    env.setdefault("GLOG_v", "3")  # MindSpore: errors only
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    return env


class WorkerError(RuntimeError):
    pass


class Worker:
    """A ``benchmarks.peer.worker`` process and its request/reply line protocol."""

    def __init__(self, side: str, threads: int, cores: Sequence[int], log_path: Path,
                 module: str = "benchmarks.peer.worker") -> None:
        self.side, self.log_path = side, Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w", encoding="utf-8")  # pylint: disable=consider-using-with
        cmd = [sys.executable, "-m", module, "--side", side, "--threads", str(threads),
               "--cores", ",".join(str(c) for c in cores)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,  # pylint: disable=consider-using-with
                                     stderr=self._log, text=True, env=worker_env(threads))

    def request(self, message: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except OSError:  # broken pipe: the worker is gone
            line = ""
        if not line:
            self.proc.wait(timeout=30)
            raise WorkerError(f"{self.side} worker exited ({self.proc.returncode}) during {message.get('cmd')!r}; "
                              f"log {self.log_path}:\n{self.log_tail()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise WorkerError(f"{self.side} worker failed in {message.get('cmd')!r}:\n{reply.get('error')}")
        return reply

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.request({"cmd": "quit"})
                self.proc.wait(timeout=60)
            except (WorkerError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f}/{b:.2f}/{c:.2f}"


def mode_cores(mode: str, core: int | None) -> tuple[int, list[int]]:
    """(threads, cores) of a mode: one thread on one core, or every core this process may use."""
    available = sorted(os.sched_getaffinity(0))
    if mode == "one":
        if core is not None and core not in available:
            raise ValueError(f"--core {core} is not among this process's CPUs {available}")
        return 1, [available[0] if core is None else core]
    return len(available), available


def run_mode(mode: str, setup: ModelSetup, args: argparse.Namespace, output_dir: Path,
             log: Callable[[str], None] = print) -> dict:
    """Build both sides in their workers, check their logits, time the cases interleaved."""
    threads, cores = mode_cores(mode, args.core)
    load_before = _load()
    if os.getloadavg()[0] > len(os.sched_getaffinity(0)) - 0.5:
        log(f"peer [{analysis.MODE_LABELS[mode]}] warning: load average {load_before} on "
            f"{len(os.sched_getaffinity(0))} CPUs: other jobs compete for the cores (multi-threaded OpenMP "
            "runtimes suffer most; compare the CPU-time column and the one-thread mode)")
    workers: dict[str, Worker] = {}
    try:
        infos = {}
        for side in SIDES:  # one after the other: the idle worker waits on its pipe
            workers[side] = Worker(side, threads, cores, output_dir / "peer_logs" / f"{mode}_{side}.log")
            infos[side] = workers[side].request({"cmd": "setup", "setup": setup.to_json()})["info"]
            log(f"peer [{analysis.MODE_LABELS[mode]}] {side}: built and warmed up in {infos[side]['setup_s']:.1f} s")
        logits = {side: workers[side].request({"cmd": "logits"})["logits"] for side in SIDES}
        check = analysis.compare_logits(logits["ours"], logits["theirs"], args.tolerance)
        log(f"peer [{analysis.MODE_LABELS[mode]}] " + analysis.logit_lines(check)[0])
        iters = iterations(args)
        samples = {side: {case: {"wall": [], "cpu": []} for case in CASES} for side in SIDES}
        for rep in range(args.reps):
            order = SIDES if rep % 2 == 0 else SIDES[::-1]
            for case in CASES:
                for side in order:
                    time.sleep(args.settle)
                    reply = workers[side].request({"cmd": "time", "case": case, "iters": iters[case]})
                    samples[side][case]["wall"].append(reply["wall"])
                    samples[side][case]["cpu"].append(reply["cpu"])
            done = analysis.summarize(samples)
            log(f"peer [{analysis.MODE_LABELS[mode]}] rep {rep + 1}/{args.reps}: " + ", ".join(
                f"{case} {1e3 * done['ours'][case]['wall_s']:.0f}/{1e3 * done['theirs'][case]['wall_s']:.0f} ms"
                for case in CASES) + f" (ours/PEFT medians so far; load {_load()})")
    finally:
        for worker in workers.values():
            worker.close()
    summary = analysis.summarize(samples)
    return {"threads": threads, "cores": cores, "load_before": load_before, "load_after": _load(),
            "info": infos, "logits_check": check, "logits": logits, "samples": samples, "summary": summary,
            "ratios": analysis.ratios(summary, samples)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _jsonable(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def run(args: argparse.Namespace, setup: ModelSetup, model_name: str, batch_name: str,
        log: Callable[[str], None] = print) -> dict:
    """Every mode of ``args``; writes ``peer.json`` and ``peer.md`` to ``args.output_dir``."""
    output_dir = Path(args.output_dir)
    start = time.perf_counter()
    load_start = _load()
    modes = {}
    for mode in args.modes:
        modes[mode] = run_mode(mode, setup, args, output_dir, log)
    mode_ratios = {mode: m["ratios"] for mode, m in modes.items()}
    infos = next(iter(modes.values()))["info"]
    meta = {"model": model_name, "batch": batch_name, "batch_size": args.batch_size, "max_length": args.max_length,
            "num_classes": setup.num_classes, "rank": setup.rank, "alpha": setup.alpha,
            "lora_dropout": setup.lora_dropout, "targets": list(setup.targets), "lr_full": setup.lr_full,
            "lr_lora": setup.lr_lora, "reps": args.reps, "iters": iterations(args), "warmup": args.warmup,
            "profile": "quick" if args.quick else "full",
            "ours": f"{infos['ours']['framework']}, {infos['ours']['mode']} mode, LoRADense kernel backend "
                    f"'{infos['ours']['lora_backend']}'",
            "theirs": f"{infos['theirs']['framework']}, {infos['theirs']['mode']}, attention "
                      f"'{infos['theirs']['attn_implementation']}'",
            "cpus": os.cpu_count(), "cpu_model": _cpu_model(), "load_start": load_start, "load_end": _load(),
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wall_s": time.perf_counter() - start, "python": platform.python_version()}
    result = {"meta": meta, "modes": modes, "verdicts": analysis.verdicts(mode_ratios)}
    # Imported here: the writers load MindSpore (through mindpet), which this parent avoids while timing.
    from benchmarks.lib.outputs import write_json, write_text  # pylint: disable=import-outside-toplevel
    write_json(output_dir / "peer.json", _jsonable(result))
    write_text(output_dir / "peer.md", analysis.markdown(result))
    return result


def recompute(result: dict) -> dict:
    """Summary, ratios and verdicts of a saved result recomputed from its samples (the current analysis)."""
    for mode in result["modes"].values():
        mode["summary"] = analysis.summarize(mode["samples"])
        mode["ratios"] = analysis.ratios(mode["summary"], mode["samples"])
    result["verdicts"] = analysis.verdicts({name: m["ratios"] for name, m in result["modes"].items()})
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        print(analysis.markdown(recompute(json.loads(Path(args.report).read_text(encoding="utf-8")))))
        return 0
    missing = missing_packages()
    if missing:
        print(f"peer: {', '.join(missing)} not installed; the peer benchmark needs the peer extra: {PEER_EXTRA}",
              file=sys.stderr)
        return 2
    from benchmarks.lib.assets import AssetMissing, minilm_dir

    output_dir = Path(args.output_dir)
    try:
        model_dir = Path(args.model_dir) if args.model_dir else minilm_dir()
        if args.synthetic_batch:
            config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
            batch = synthetic_batch(config["vocab_size"], args.batch_size, args.max_length, args.num_classes,
                                    args.seed)
            num_classes, batch_name = args.num_classes, "random token ids"
        else:
            batch, num_classes = bbc_batch(args.batch_size, args.max_length)
            batch_name = "the first BBC News training headlines"
    except AssetMissing as err:
        print(f"peer: {err}", file=sys.stderr)
        return 2
    batch_path = save_batch(output_dir / "peer_batch.npz", batch)
    setup = ModelSetup(model_dir=str(model_dir), batch_path=str(batch_path.resolve()), num_classes=num_classes,
                       seed=args.seed, warmup=args.warmup)
    model_name = "all-MiniLM-L6-v2" if args.model_dir is None else model_dir.name
    print(f"peer: {model_name}, batch {args.batch_size} x {args.max_length}, modes {', '.join(args.modes)}, "
          f"{args.reps} repetitions; output {output_dir}")
    try:
        result = run(args, setup, model_name, batch_name)
    except WorkerError as err:
        print(f"peer: {err}", file=sys.stderr)
        return 1
    print()
    print((output_dir / "peer.md").read_text(encoding="utf-8"))
    print(f"peer: {result['meta']['wall_s'] / 60:.1f} min; wrote {output_dir / 'peer.json'}, peer.md")
    if not all(m["logits_check"]["ok"] for m in result["modes"].values()):
        print("peer: the two sides' logits differ: not the same model", file=sys.stderr)
        return 1
    return 0
