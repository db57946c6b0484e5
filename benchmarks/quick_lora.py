"""The quick LoRA job: all-MiniLM-L6-v2 + LoRA (query, value) on BBC News headlines.

    python -m benchmarks.quick_lora [--steps N] [--output-dir results] [--no-progress]

Loads MiniLM, replaces the query and value denses with ``LoRADense`` (pre-trained weights kept),
``freeze_delta(model, 'lora', exclude=['*head*'])``, trains with Adam in GRAPH mode, saves the trainable
weights with ``TrainableParamsCheckPoint``, then in a fresh process builds the model again, loads the
pre-trained weights + the delta with ``load_pretrained_and_delta`` and checks that it reproduces the
fine-tuned test logits and accuracy. Prints the results and writes
``<output-dir>/quick_lora.json``. Exit status 1 if the reload does not reproduce the fine-tuned model,
2 if the offline packages are missing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from benchmarks.lib.assets import AssetMissing, minilm_dir
from benchmarks.lib.methods import LoraSettings
from benchmarks.lib.training import TrainSettings

JOB = "quick_lora"
RELOAD_LOGIT_TOLERANCE = 1e-4


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quick_lora", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps (batches), default 150")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=32, help="tokens per headline (padded/truncated)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate (LoRA and head), default 2e-3")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--lora-dropout", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=Path("results"))
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return parser.parse_args(argv)


def report(summary: dict, json_path: Path) -> str:
    """Human-readable lines of a run summary."""
    p, t, ckpt = summary["parameters"], summary["timing"], summary["delta_checkpoint"]
    lines = [
        f"task        {summary['task']['name']}: {summary['task']['train']} train / {summary['task']['test']} test, "
        f"{len(summary['task']['classes'])} classes (majority accuracy {summary['majority_accuracy']:.3f})",
        f"model       {summary['model']['name']} + LoRA r={summary['method']['rank']} "
        f"alpha={summary['method']['alpha']:g} on {'/'.join(summary['method']['targets'])}",
        f"trainable   {p['trainable']:,} of {p['total']:,} parameters = {p['trainable_percent']:.3f}% "
        f"(LoRA {p['delta']:,} = {p['delta_percent']:.3f}%, the rest the head)",
    ]
    for key, label in (("before", "before"), ("after", "fine-tuned"), ("reloaded", "reloaded")):
        s = summary[key]
        lines.append(f"{label:<11} accuracy {s['accuracy']:.4f}  macro-F1 {s['macro_f1']:.4f}")
    lines += [
        f"reload      max |logit difference| {summary['reload_max_abs_logit_diff']:.2e}",
        f"loss        {summary['loss']['mean_first']:.4f} -> {summary['loss']['mean_last']:.4f} "
        f"(mean of first/last {summary['loss']['window']} steps)",
        f"checkpoint  {ckpt['path']}: {ckpt['bytes']:,} bytes ({ckpt['bytes'] / 1024:.1f} KB), {ckpt['tensors']} tensors",
        f"time        total {t['wall_s']:.1f} s (train {t['train_s']:.1f} s for {summary['settings']['steps']} steps, "
        f"median step {t['step_s_median']:.3f} s; eval before {t['eval_before_s']:.1f} s, "
        f"after {t['eval_after_s']:.1f} s; reload + eval {t['reload_s']:.1f} s)",
        f"summary     {json_path}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    start = time.perf_counter()
    args = parse_args(argv)
    try:
        model_dir = minilm_dir()
    except AssetMissing as err:
        print(f"{JOB}: {err}", file=sys.stderr)
        return 2
    from benchmarks.lib.finetune import PretrainedBert, run_finetune, write_summary
    from benchmarks.lib.tasks import bbc_headlines_task

    try:
        task = bbc_headlines_task(model_dir / "tokenizer.json", max_length=args.max_length)
    except AssetMissing as err:
        print(f"{JOB}: {err}", file=sys.stderr)
        return 2
    pretrained = PretrainedBert.from_dir(model_dir, name="all-MiniLM-L6-v2")
    method = LoraSettings(rank=args.rank, alpha=args.alpha, dropout=args.lora_dropout)
    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed)
    summary = run_finetune(task, pretrained, method, settings, args.output_dir / JOB, progress=not args.no_progress)
    summary["timing"]["wall_s"] = time.perf_counter() - start
    ok = (summary["reloaded"] == summary["after"]
          and summary["reload_max_abs_logit_diff"] <= RELOAD_LOGIT_TOLERANCE)
    summary["reload_reproduces"] = ok
    json_path = write_summary(summary, args.output_dir / f"{JOB}.json")
    print(report(summary, json_path))
    if not ok:
        print(f"{JOB}: the reloaded model does not reproduce the fine-tuned one", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
