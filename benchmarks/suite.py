"""The classification benchmark suite: all-MiniLM-L6-v2 on BBC News headlines, one row per method.

    python -m benchmarks.suite --quick | --full [--output-dir results] [--rows full,lora] [--seeds 0,1]
                               [--steps N] [--no-progress]

Each (row, seed) trains in its own Python process (``python -m benchmarks.suite --worker request.json``):
MindSpore's graph caches and allocator do not leak from one method into the next, and the process's peak
resident memory (``ru_maxrss``) is that run's alone. The parent collects the per-run JSON, computes each
method's metric, step time and peak memory as fractions of full fine-tuning of the same seed, checks the
issue's targets and writes ``suite.json``, ``suite.md`` and ``suite.png`` to the output directory (per-run
files under ``suite_runs/``). Exit status 2 when the offline packages are missing, 1 when a run fails.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from benchmarks.lib.methods import (AdapterSettings, BitFitSettings, FullSettings, LoraSettings,
                                    LowRankAdapterSettings, PrefixSettings, PromptSettings, method_from_description)
from benchmarks.lib.metrics import mean_std
from benchmarks.lib.outputs import save_figure, save_npz, write_json, write_text
from benchmarks.lib.runner import module_command, reusable, run_timed
from benchmarks.lib.threads import thread_settings, with_repository_on_path, worker_env

RDROP_ALPHA = 4.0
BATCH_SIZE = 32
MAX_LENGTH = 32


@dataclass(frozen=True)
class Row:
    """One table row: a method, its peak learning rate, R-Drop on or off, and the spec's reference numbers."""

    name: str
    label: str
    method: Callable[[], object]
    learning_rate: float
    rdrop_alpha: float | None = None
    spec_trainable_percent: float | None = None
    """The spec's trainable % on bert-base (target: ours at or below it)."""
    target: bool = False
    """Whether the issue's ">= 0.98 of full fine-tuning accuracy" target applies."""


ROWS: dict[str, Row] = {r.name: r for r in (
    Row("full", "Full fine-tuning", FullSettings, 1e-4),
    Row("lora", "LoRA", LoraSettings, 2e-3, spec_trainable_percent=0.30, target=True),
    Row("adapter", "Adapter", AdapterSettings, 1e-3, spec_trainable_percent=2.33, target=True),
    Row("low_rank_adapter", "Low-Rank Adapter", LowRankAdapterSettings, 3e-3, spec_trainable_percent=0.067,
        target=True),
    Row("bitfit", "BitFit", BitFitSettings, 5e-3, spec_trainable_percent=0.09, target=True),
    Row("prefix", "Prefix-Tuning", PrefixSettings, 5e-3, spec_trainable_percent=4.35),
    Row("prompt", "Prompt-Tuning", PromptSettings, 5e-3, spec_trainable_percent=0.0095),
    Row("rdrop_full", "R-Drop + full", FullSettings, 1e-4, rdrop_alpha=RDROP_ALPHA),
    Row("rdrop_lora", "R-Drop + LoRA", LoraSettings, 2e-3, rdrop_alpha=RDROP_ALPHA),
)}


@dataclass(frozen=True)
class Profile:
    name: str
    rows: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int


PROFILES = {
    "quick": Profile("quick", ("full", "lora", "bitfit", "adapter"), (0,), 120),
    "full": Profile("full", tuple(ROWS), (0, 1, 2), 300),
}

LORA_STEP_TARGET = 0.6
LORA_MEMORY_TARGET = 0.7
ACCURACY_TARGET = 0.98


# ----------------------------------------------------------------------------------------------- worker

def _load_task(source: dict):
    if source["kind"] == "bbc":
        from benchmarks.lib.assets import minilm_dir
        from benchmarks.lib.tasks import bbc_headlines_task

        return bbc_headlines_task(minilm_dir() / "tokenizer.json", max_length=source["max_length"])
    if source["kind"] == "npz":
        return load_task_npz(Path(source["path"]))
    raise ValueError(f"unknown task source {source!r}")


def save_task_npz(task, path: Path) -> Path:
    """Store a tokenised :class:`~benchmarks.lib.tasks.ClassificationTask` for worker processes."""
    arrays = {}
    for split in ("train", "test"):
        data = getattr(task, split)
        t = data.tokens
        arrays.update({f"{split}_input_ids": t.input_ids, f"{split}_attention_mask": t.attention_mask,
                       f"{split}_token_type_ids": t.token_type_ids, f"{split}_labels": data.labels})
    save_npz(path, classes=np.asarray(task.classes), name=np.asarray(task.name), **arrays)
    return path


def load_task_npz(path: Path):
    from benchmarks.data.tokenize import EncodedBatch
    from benchmarks.lib.tasks import ClassificationTask, LabelledTokens

    with np.load(path) as z:
        def split(s):
            return LabelledTokens(EncodedBatch(z[f"{s}_input_ids"], z[f"{s}_attention_mask"],
                                               z[f"{s}_token_type_ids"]), z[f"{s}_labels"])

        return ClassificationTask(str(z["name"]), tuple(str(c) for c in z["classes"]), split("train"),
                                  split("test"))


def run_worker(request_path: Path) -> int:
    """Run one (row, seed) of a request file and write its result JSON."""
    from benchmarks.lib.finetune import PretrainedBert, run_row
    from benchmarks.models.bert import BertConfig
    from benchmarks.lib.training import TrainSettings

    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    p = request["pretrained"]
    pretrained = PretrainedBert(p["name"], BertConfig.from_dict(p["config"]), Path(p["weights"]))
    task = _load_task(request["task"])
    method = method_from_description(request["method"])
    settings = TrainSettings(**request["settings"])
    result = run_row(task, pretrained, method, settings, progress=request["progress"], label=request["label"])
    result["row"], result["threads"] = request["row"], thread_settings()
    write_json(request["result"], result)
    return 0


# ----------------------------------------------------------------------------------------------- parent

def _subprocess_env() -> dict:
    env = with_repository_on_path(worker_env())  # the passive OpenMP wait policy unless the caller chose one
    env.setdefault("GLOG_v", "3")  # MindSpore: errors only on stderr
    return env


def run_one(row: Row, seed: int, steps: int, task_source: dict, pretrained: dict, runs_dir: Path,
            progress: bool, batch_size: int = BATCH_SIZE, timeout: float = 7200.0, resume: bool = False) -> dict:
    """Train ``row`` with ``seed`` in a fresh process; returns its result plus wall and CPU seconds. With
    ``resume``, a finished run of the identical request in ``runs_dir`` is reused instead."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{row.name}_seed{seed}"
    settings = {"steps": steps, "batch_size": batch_size, "learning_rate": row.learning_rate, "seed": seed,
                "rdrop_alpha": row.rdrop_alpha}
    env = _subprocess_env()
    request = {"row": row.name, "label": f"{row.name} seed {seed}", "method": row.method().describe(),
               "settings": settings, "task": task_source, "pretrained": pretrained, "progress": progress,
               # step times depend on it: a run made under another OpenMP wait policy is not reused
               "omp_wait_policy": env["OMP_WAIT_POLICY"],
               "result": str(runs_dir / f"{stem}.json")}
    request_path = runs_dir / f"{stem}.request.json"
    if resume:  # the output directory may be given relative or absolute; progress bars change nothing
        result = reusable(Path(request["result"]), request, request_path, ignore=("progress", "result"))
        if result is not None and "process" in result:  # "process" is added once the worker has finished
            result["process"]["reused"] = True
            return result
    write_json(request_path, request)
    run = run_timed(module_command("benchmarks.suite", "--worker", str(request_path)), env, timeout, quiet=True)
    if run.returncode != 0:
        raise RuntimeError(f"run {stem} failed (exit {run.returncode}); its stderr is above")
    result = json.loads(Path(request["result"]).read_text(encoding="utf-8"))
    result["process"] = {"wall_s": run.wall_s, "cpu_s": run.cpu_s}
    write_json(request["result"], result)
    return result


def summarise(results: list[dict], rows: Sequence[str]) -> list[dict]:
    """One dictionary per row: means over seeds, and ratios to full fine-tuning of the same seed."""
    by_key = {(r["row"], r["settings"]["seed"]): r for r in results}
    table = []
    for name in rows:
        row = ROWS[name]
        runs = [r for r in results if r["row"] == name]
        if not runs:
            continue
        seeds = [r["settings"]["seed"] for r in runs]

        def ratios(get):
            out = []
            for r in runs:
                full = by_key.get(("full", r["settings"]["seed"]))
                out.append(None if full is None else get(r) / get(full))
            return [x for x in out if x is not None]

        first = runs[0]
        acc = mean_std([r["test"]["accuracy"] for r in runs])
        f1 = mean_std([r["test"]["macro_f1"] for r in runs])
        acc_ratio = mean_std(ratios(lambda r: r["test"]["accuracy"]))
        f1_ratio = mean_std(ratios(lambda r: r["test"]["macro_f1"]))
        step_ratio = mean_std(ratios(lambda r: r["timing"]["step_s_median"]))
        cpu_ratio = mean_std(ratios(lambda r: r["timing"].get("step_cpu_s_median", float("nan"))))
        peak_ratio = mean_std(ratios(lambda r: r["memory"]["peak_rss"]))
        entry = {
            "row": name, "label": row.label, "hyperparameters": first["hyperparameters"],
            "rdrop_alpha": row.rdrop_alpha, "seeds": seeds, "steps": first["settings"]["steps"],
            "batch_size": first["settings"]["batch_size"], "epochs": first["epochs"], "optimizer": "Adam",
            "learning_rate": row.learning_rate,
            "parameters": first["parameters"],
            "trainable_percent": first["parameters"]["trainable_percent"],
            "method_percent": first["parameters"]["method_percent"],
            "spec_trainable_percent": row.spec_trainable_percent,
            "static_bytes": first["memory"]["static"],
            "dynamic_bytes": mean_std([r["memory"]["dynamic"] for r in runs])[0],
            "peak_rss_bytes": mean_std([r["memory"]["peak_rss"] for r in runs])[0],
            "accuracy": acc, "macro_f1": f1,
            "accuracy_vs_full": acc_ratio, "macro_f1_vs_full": f1_ratio,
            "step_s": mean_std([r["timing"]["step_s_median"] for r in runs]),
            "step_vs_full": step_ratio, "peak_rss_vs_full": peak_ratio,
            "step_cpu_s": mean_std([r["timing"].get("step_cpu_s_median", float("nan")) for r in runs]),
            "step_cpu_vs_full": cpu_ratio,
            "kernel_backends": first.get("kernel_backends", []),
            "run_wall_s": sum(r["process"]["wall_s"] for r in runs),
            "run_cpu_s": sum(r["process"]["cpu_s"] for r in runs),
        }
        entry["targets"] = check_targets(entry, row)
        table.append(entry)
    return table


def _check(name: str, value: float, bound: float, at_least: bool) -> dict:
    if value is None or math.isnan(value):
        return {"target": name, "value": None, "bound": bound, "met": None, "note": "not measured"}
    met = value >= bound if at_least else value <= bound
    gap = bound - value if at_least else value - bound
    note = "met" if met else f"missed by {gap:.4g} ({100 * gap / bound:.1f}% of the bound)"
    return {"target": name, "value": value, "bound": bound, "met": bool(met), "note": note}


def check_targets(entry: dict, row: Row) -> list[dict]:
    """The issue's targets that apply to this row (judged on means over seeds)."""
    checks = []
    if row.target:
        checks.append(_check("accuracy / full >= 0.98", entry["accuracy_vs_full"][0], ACCURACY_TARGET, True))
        checks.append(_check(f"method trainable % <= spec {row.spec_trainable_percent}", entry["method_percent"],
                             row.spec_trainable_percent, False))
    if row.name == "lora":
        checks.append(_check("step time / full <= 0.6", entry["step_vs_full"][0], LORA_STEP_TARGET, False))
        checks.append(_check("step CPU time / full <= 0.6 (load-robust cross-check)", entry["step_cpu_vs_full"][0],
                             LORA_STEP_TARGET, False))
        checks.append(_check("peak memory / full <= 0.7", entry["peak_rss_vs_full"][0], LORA_MEMORY_TARGET, False))
    return checks


def _mb(n: float) -> str:
    return f"{n / 2 ** 20:,.1f}"


def _pm(pair: tuple[float, float], fmt: str = "{:.4f}") -> str:
    mean, std = pair
    if math.isnan(mean):
        return "-"
    return fmt.format(mean) + (f" ± {fmt.format(std)}" if std else "")


def markdown(table: list[dict], meta: dict) -> str:
    lines = [f"# Classification suite ({meta['profile']} profile)", "",
             f"{meta['model']} on {meta['task']['name']} ({meta['task']['train']} train / {meta['task']['test']} test "
             f"headlines, {len(meta['task']['classes'])} classes, max length {meta['task']['max_length']}; majority "
             f"accuracy {meta['majority_accuracy']:.3f}). Seeds {meta['seeds']}, {meta['steps']} steps of batch "
             f"{meta['batch_size']}, Adam, linear warm-up 10 % then linear decay. Measured {meta['finished']} on "
             f"{meta['cpus']} CPUs (load average at start {meta['load_average']}); suite wall time "
             f"{meta['wall_s'] / 60:.1f} min; the runs' own wall time {meta.get('runs_wall_s', 0) / 60:.1f} min and CPU "
             f"time {meta['cpu_s'] / 60:.1f} min" + (f" ({meta['reused_runs']} run(s) reused from an earlier "
                                                      "invocation)" if meta.get("reused_runs") else "") + ".", "",
             "| method | hyper-parameters | epochs | optimizer | lr | trainable % (method / +head) | spec % | "
             "static MB (params+grads+Adam) | dynamic MB | peak RSS MB | accuracy | macro-F1 | acc / full | "
             "step s | step / full | step CPU s | CPU / full | peak / full |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in table:
        s = e["static_bytes"]
        hyper = e["hyperparameters"] + (f", R-Drop alpha={e['rdrop_alpha']:g}" if e["rdrop_alpha"] else "")
        spec = "-" if e["spec_trainable_percent"] is None else f"{e['spec_trainable_percent']:g}"
        lines.append(
            f"| {e['label']} | {hyper} | {e['epochs']:.2f} | {e['optimizer']} | {e['learning_rate']:g} | "
            f"{e['method_percent']:.3f} / {e['trainable_percent']:.3f} | {spec} | "
            f"{_mb(s['total'])} ({_mb(s['parameters'])}+{_mb(s['gradients'])}+{_mb(s['optimizer_state'])}) | "
            f"{_mb(e['dynamic_bytes'])} | {_mb(e['peak_rss_bytes'])} | {_pm(e['accuracy'])} | {_pm(e['macro_f1'])} | "
            f"{_pm(e['accuracy_vs_full'], '{:.3f}')} | {_pm(e['step_s'], '{:.3f}')} | "
            f"{_pm(e['step_vs_full'], '{:.2f}')} | {_pm(e['step_cpu_s'], '{:.3f}')} | "
            f"{_pm(e['step_cpu_vs_full'], '{:.2f}')} | {_pm(e['peak_rss_vs_full'], '{:.2f}')} |")
    if meta.get("failed"):
        lines += ["", "Failed runs (not in the table): " + ", ".join(f"{f['row']} seed {f['seed']}"
                                                                     for f in meta["failed"]) + "."]
    lines += ["", "Step time is the median over the steps after warm-up (10 % of the steps, at least 2), in "
              "seconds of wall time; step CPU is the same median of the process's CPU time (all threads), which "
              "other load on the machine disturbs less; ratios are to full fine-tuning of the same seed, then averaged. Static bytes are exact: "
              "every parameter, a gradient per trainable parameter and the Adam optimizer's own parameters "
              "(two moments per trainable parameter, the learning-rate schedule, step, beta powers). Peak RSS is "
              "the run's process maximum (`ru_maxrss`, includes the MindSpore runtime); dynamic = peak RSS during "
              "training - RSS after building the model - gradients - optimizer state. mindpet kernel backends "
              "of the delta layers: " + ("; ".join(f"{e['label']}: {'/'.join(e['kernel_backends'])}"
                                                   for e in table if e["kernel_backends"]) or "none") + ".", "",
              "## Targets", "", "| method | target | value | bound | result |", "|---|---|---|---|---|"]
    for e in table:
        for c in e["targets"]:
            value = "-" if c["value"] is None else f"{c['value']:.4g}"
            lines.append(f"| {e['label']} | {c['target']} | {value} | {c['bound']:g} | {c['note']} |")
    return "\n".join(lines + ["", targets_note(table, meta)]) + "\n"


def targets_note(table: list[dict], meta: dict) -> str:
    """What the targets are, that a miss is reported (exit status 0), and why a short run misses some."""
    checks = [c for e in table for c in e["targets"] if c["met"] is not None]
    met = sum(c["met"] for c in checks)
    epochs = max((e["epochs"] for e in table), default=0.0)
    note = (f"{met} of {len(checks)} targets met. The targets are the issue's goals for the delta methods "
            f"against full fine-tuning of the same seed: accuracy >= {ACCURACY_TARGET} x full and the method's "
            f"trainable share <= the spec's share on bert-base (LoRA, Adapter, Low-Rank Adapter, BitFit), LoRA step "
            f"time <= {LORA_STEP_TARGET} x full and LoRA peak memory <= {LORA_MEMORY_TARGET} x full. A missed target "
            f"is reported, not an error: the exit status is 0 unless a run fails.")
    seeds = len(meta["seeds"])
    if seeds > 1 and epochs >= 5:
        return note
    return note + (
        f" This run ({seeds} seed{'s' if seeds != 1 else ''}, {meta['steps']} steps = {epochs:.1f} epochs) is a smoke "
        f"run of the whole pipeline, not the verdict, and misses some targets by design: the accuracy ratios are taken "
        f"before the delta methods have converged (they train fewer parameters and catch up with full "
        f"fine-tuning later) and on few seeds (two identical runs differ by about 0.01); the trainable-share "
        f"targets are missed by construction where MiniLM has more biases and attention weights per parameter than "
        f"bert-base, whatever the run length; the LoRA step-time and memory ratios depend on the machine (on 2 CPU "
        f"cores the frozen model's forward and backward dominate the step; the memory of the MindSpore runtime, the "
        f"frozen weights and the compiled training graph, ~0.8 GB whatever the method, the peak; missed in the "
        f"full profile too). The verdict is the full profile's (python -m benchmarks.suite --full: 3 seeds, "
        f"300 steps), recorded in benchmarks/RESULTS.md.")


def plot(table: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for e in table:
        x = max(e["method_percent"], 1e-4) if e["row"] not in ("full", "rdrop_full") else e["method_percent"]
        y = e["accuracy"][0]
        left.errorbar(x, y, yerr=e["accuracy"][1] or None, fmt="o", capsize=3)
        left.annotate(e["label"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    left.set_xscale("log")
    left.set_xlabel("trainable parameters, % of the model (without the head)")
    left.set_ylabel("test accuracy")
    left.set_title("accuracy vs trainable %")
    left.grid(True, which="both", alpha=0.3)
    names = [e["label"] for e in table]
    step = [e["step_vs_full"][0] for e in table]
    peak = [e["peak_rss_vs_full"][0] for e in table]
    xs = np.arange(len(table))
    cpu = [e["step_cpu_vs_full"][0] for e in table]
    right.bar(xs - 0.27, step, 0.27, label="step wall time / full")
    right.bar(xs, cpu, 0.27, label="step CPU time / full")
    right.bar(xs + 0.27, peak, 0.27, label="peak RSS / full")
    right.axhline(1.0, color="grey", lw=0.8)
    right.axhline(LORA_STEP_TARGET, color="C0", lw=0.8, ls="--", label="LoRA step target 0.6")
    right.axhline(LORA_MEMORY_TARGET, color="C2", lw=0.8, ls="--", label="LoRA memory target 0.7")
    right.set_xticks(xs)
    right.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    right.set_title("train step time and peak memory vs full fine-tuning")
    right.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def _jsonable(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def run_suite(profile: Profile, task_source: dict, pretrained: dict, output_dir: Path, progress: bool = True,
              batch_size: int = BATCH_SIZE, log: Callable[[str], None] = print, resume: bool = False) -> dict:
    """Run every (seed, row) of ``profile`` (full fine-tuning first, for the ratios) and write the outputs."""
    start = time.perf_counter()
    load = os.getloadavg()
    output_dir = Path(output_dir)
    runs_dir = output_dir / "suite_runs"
    rows = sorted(profile.rows, key=lambda r: (r != "full", list(ROWS).index(r)))
    results, failed = [], []
    for seed in profile.seeds:
        for name in rows:
            try:
                result = run_one(ROWS[name], seed, profile.steps, task_source, pretrained, runs_dir, progress,
                                 batch_size=batch_size, resume=resume)
            except (RuntimeError, subprocess.TimeoutExpired) as err:  # keep the other rows
                log(f"{name:>17} seed {seed}: FAILED - {err}")
                failed.append({"row": name, "seed": seed, "error": str(err)})
                continue
            log(f"{name:>17} seed {seed}: accuracy {result['test']['accuracy']:.4f}  macro-F1 "
                f"{result['test']['macro_f1']:.4f}  step {result['timing']['step_s_median']:.3f} s  peak RSS "
                f"{result['memory']['peak_rss'] / 2 ** 20:,.0f} MB  ({result['process']['wall_s']:.0f} s wall, "
                f"{result['process']['cpu_s']:.0f} s CPU{', reused' if result['process'].get('reused') else ''})")
            results.append(result)
    if not results:
        raise RuntimeError(f"every run failed: {failed}")
    table = summarise(results, rows)
    first = results[0]
    meta = {"profile": profile.name, "rows": list(rows), "seeds": list(profile.seeds), "steps": profile.steps,
            "batch_size": batch_size, "model": first["model"]["name"], "task": first["task"],
            "majority_accuracy": first["majority_accuracy"], "cpus": os.cpu_count(),
            "load_average": f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}",
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wall_s": time.perf_counter() - start, "cpu_s": sum(r["process"]["cpu_s"] for r in results),
            "runs_wall_s": sum(r["process"]["wall_s"] for r in results),
            "reused_runs": sum(1 for r in results if r["process"].get("reused")), "failed": failed}
    summary = {"meta": meta, "table": table,
               "runs": [{k: v for k, v in r.items() if k not in ("step_seconds",)} for r in results]}
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "suite.json", _jsonable(summary))
    write_text(output_dir / "suite.md", markdown(table, meta))
    plot(table, output_dir / "suite.png")
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", dest="profile", const="quick",
                       help="rows full, lora, bitfit, adapter; seed 0; 120 steps (the default)")
    group.add_argument("--full", action="store_const", dest="profile", const="full",
                       help="every row, seeds 0, 1, 2, 300 steps")
    group.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=f"comma-separated subset of: {', '.join(ROWS)}")
    parser.add_argument("--seeds", help="comma-separated seeds (overrides the profile's)")
    parser.add_argument("--steps", type=int, help="training steps per run (overrides the profile's)")
    parser.add_argument("--output-dir", type=Path, default=Path("results"))
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")
    parser.add_argument("--resume", action="store_true",
                        help="reuse finished runs of identical requests found in <output-dir>/suite_runs")
    parser.set_defaults(profile="quick")
    return parser.parse_args(argv)


def profile_from_args(args: argparse.Namespace) -> Profile:
    profile = PROFILES[args.profile]
    if args.rows:
        rows = tuple(r.strip() for r in args.rows.split(",") if r.strip())
        unknown = [r for r in rows if r not in ROWS]
        if unknown:
            raise SystemExit(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
        profile = replace(profile, rows=rows)
    if args.seeds:
        profile = replace(profile, seeds=tuple(int(s) for s in args.seeds.split(",")))
    if args.steps:
        profile = replace(profile, steps=args.steps)
    return profile


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return run_worker(args.worker)
    profile = profile_from_args(args)
    from benchmarks.lib.assets import AssetMissing, bbc_dir, minilm_dir
    from benchmarks.models.bert import BertConfig

    try:
        model_dir = minilm_dir()
        bbc_dir()
    except AssetMissing as err:
        print(f"suite: {err}", file=sys.stderr)
        return 2
    pretrained = {"name": "all-MiniLM-L6-v2", "config": asdict(BertConfig.from_json(model_dir / "config.json")),
                  "weights": str(model_dir / "model.safetensors")}
    task_source = {"kind": "bbc", "max_length": MAX_LENGTH}
    print(f"suite: {profile.name} profile, rows {', '.join(profile.rows)}, seeds {list(profile.seeds)}, "
          f"{profile.steps} steps each; output {args.output_dir}")
    try:
        summary = run_suite(profile, task_source, pretrained, args.output_dir, progress=not args.no_progress,
                            resume=args.resume)
    except RuntimeError as err:
        print(f"suite: {err}", file=sys.stderr)
        return 1
    print((args.output_dir / "suite.md").read_text(encoding="utf-8"))
    m = summary["meta"]
    print(f"suite: {m['wall_s'] / 60:.1f} min wall, {m['cpu_s'] / 60:.1f} min CPU; wrote "
          f"{args.output_dir / 'suite.json'}, suite.md, suite.png")
    if m["failed"]:
        print(f"suite: {len(m['failed'])} run(s) failed: " + ", ".join(f"{f['row']} seed {f['seed']}"
                                                              for f in m["failed"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
