"""Language-model table: SmolLM2-135M (GGUF dequantised to float32) with the base frozen, held-out perplexity
on BBC article text at sequence length 256, for zero-shot, prompt tuning (20 tokens), prefix tuning (10 tokens)
and LoRA on q/v (r=8).

    python -m benchmarks.lm_suite --quick        # a few dozen steps, small held-out set
    python -m benchmarks.lm_suite --full

Data (fixed, documented): ``benchmarks.data.bbc.load_articles()`` (article bodies, exact duplicate files removed,
stratified 80/20 split by class with ``default_rng(0)``: 1,702 train / 425 held-out articles). Each article is
tokenised with the GGUF's BPE tokenizer; the articles of a split, in their sorted order, are concatenated with
``<|endoftext|>`` (id 0) between them and cut into non-overlapping 256-token chunks (the remainder dropped).
Training batches are drawn from a ``default_rng(seed)`` permutation of the train chunks; the held-out set is
``heldout_chunks`` chunks evenly spaced over the held-out stream (so every class is represented). Perplexity
is ``exp(mean NLL)`` of the 255 next-token predictions inside each chunk.

Methods (base frozen with ``freeze_delta``; Adam, linear warm-up over 10 % of the steps then linear decay):
- ``zero_shot``: the pre-trained model, no training;
- ``prompt``: ``PromptTuning`` with 20 virtual tokens, initialised with the embeddings of the first 20 tokens
  of the train stream (Lester et al.: initialising from real tokens works best);
- ``prefix``: ``PrefixEncoder`` with 10 positions per layer and KV head, trained directly
  (``reparameterize=False``), initialised with the keys/values the frozen model computes for the first 10
  tokens of the train stream, so training starts from "the text follows 10 real tokens";
- ``lora``: ``LoRADense`` (r=8, alpha=16, dropout 0.05) on the q and v projections; the LoRA methods build the
  model with one compiled decoder-block graph (``SharedLlamaBlock``; each layer still draws its own dropout
  mask, from MindSpore's generator), ``--no-share-block-graph`` with 30 inlined blocks;
- ``lora_q4`` / ``lora_q8`` (only with ``--methods``): the same LoRA on a quantised frozen base (issue 16):
  every projection a ``mindpet.quant.QuantizedDense`` holding the GGUF's Q4_1 blocks (``lora_q8``: each
  re-encoded to q8_0); lora_q4's tied token embedding re-encoded from the GGUF's Q8_0 to GGUF Q5_0 (frozen base
  0.160x float32; ``--q4-embedding q8_0`` keeps the stored Q8_0 blocks: 0.179x; ``q4_1|q4_0|nf4``: 0.156x but
  1.06x the float base's perplexity; ``q5_1``: 0.163x; see RESULTS.md), lora_q8's as stored; no float copy of
  the model.

Each method runs in its own subprocess (so peak RSS is per method); the parent writes ``lm_table.md`` and
``lm_results.json`` in the output directory. Static bytes = 4 x (all parameters + 3 x trainable parameters):
float32 weights, gradients and Adam's two moments of the trainable ones.

Measured (quick profile: batch 1 x 256 tokens, 30 steps, 8 held-out chunks = 2,040 predictions; shared 2-core
CPU, GRAPH mode; prefix/LoRA shared the CPU with other jobs for part of their steps): zero-shot ppl 39.54;
prompt 38.74 at init -> 36.52 (0.924 x zero-shot), 0.0086 % trainable, 6.1 s/step (alone; 9.4 under load);
prefix 38.40 at init -> 35.22 (0.891), 0.086 %, 7.5 s/step; LoRA q,v r=8 -> 35.25 (0.892), 0.34 %, 7.2 s/step
(~4.2-4.8 CPU-s/step: MindSpore's CPU ops use little of the second core). Per method ~5 min alone: ~55 s first
step (graph compile), ~30 s first eval (compile) + ~3 s per held-out chunk. Results are deterministic (a
re-run gave the same perplexities). Peak RSS ~7 GB per training process (3.6 GB for zero-shot). The held-out
set of the quick profile is small: differences of a few % are within noise.

Profiles: ``--quick`` (batch 1, 30 steps, 8 held-out chunks, seed 0; ~20 min for the four methods) and
``--full`` (batch 1, 200 steps, 64 held-out chunks = 16,320 predictions, seeds 0, 1, 2; one run at a time on
both cores ~25-30 min per training run (estimated from the quick profile), ~4 h for the nine plus one
zero-shot run). ``--jobs N`` runs N workers
at once, each pinned to its own share of the CPUs with one OpenMP thread per CPU and, unless
``OMP_WAIT_POLICY`` is set, the passive wait policy (:func:`benchmarks.lib.threads.worker_env`); a worker's output goes to
``<output-dir>/logs/``. MindSpore's CPU backend gains little from a second core on this model, so on 2 cores
``--jobs 2`` is the faster way: measured 19-21 min per training run with two running side by side (4.0-4.2 s
per step on one core), ~1 h 45 min for the full profile; it needs ~7 GB of memory per running worker.
Every (method, seed) writes ``lm_<method>_seed<seed>.json`` in the output directory, with the request
it answers; ``--resume`` reuses a finished run whose request is identical, so the full profile can be
completed over several sittings. The table reports the held-out perplexity as mean +- sample std over the
seeds, each seed's value, and whether every seed of prompt and prefix tuning ends below zero-shot.

This module is the command line. The rest, one purpose per module in ``benchmarks.lib``: ``lm_profile`` (methods,
profiles, seeds), ``lm_data`` (chunked token streams), ``lm_model`` (the pre-trained weights and ``build``, the
model of a method), ``lm_training`` (``run_method``: one run), ``lm_report`` (the table), ``runner`` (worker
processes and ``--resume``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from benchmarks.lib.lm_data import LMData, bbc_data, synthetic_data
from benchmarks.lib.lm_model import Pretrained, quantized_synthetic, smollm2, smollm2_quantized, synthetic_model
from benchmarks.lib.lm_profile import ALL_METHODS, METHODS, PROFILES, Q4_EMBEDDING_FORMATS, QUANT_METHODS, SEEDS, Profile
from benchmarks.lib.lm_report import write_tables
from benchmarks.lib.lm_training import run_method
from benchmarks.lib.outputs import write_text
from benchmarks.lib.runner import cpu_groups, module_command, reusable, run_workers
from benchmarks.lib.threads import thread_settings


def _load(model: str, profile: Profile, method: str = "lora") -> Tuple[Pretrained, LMData]:
    """The pre-trained model of ``--model`` for ``method`` and its data (SmolLM2 + BBC articles, or the synthetic
    pair); a method on a quantised base (``lora_q4``, ``lora_q8``) gets the quantised projections, never a float
    copy of them."""
    quantised = method in QUANT_METHODS
    if model == "synthetic":
        pretrained = synthetic_model()
        data = synthetic_data(pretrained.config.vocab_size, profile)
        return (quantized_synthetic(pretrained, method, profile) if quantised else pretrained), data
    pretrained, tokenizer = smollm2_quantized(profile, method) if quantised else smollm2(profile)
    return pretrained, bbc_data(tokenizer, profile)


def _profile(args) -> tuple[str, Profile]:
    name = "full" if args.full else "quick"
    profile = PROFILES[name]
    overrides = {k: v for k, v in (("steps", args.steps), ("heldout_chunks", args.heldout_chunks),
                                   ("batch_size", args.batch_size), ("seq_len", args.seq_len),
                                   ("q4_embedding", args.q4_embedding)) if v is not None}
    if args.no_share_block_graph:
        overrides["share_block_graph"] = False
    return name, replace(profile, **overrides)


def _seeds(args, name: str) -> tuple[int, ...]:
    if args.seeds is None:
        return SEEDS[name]
    try:
        seeds = tuple(int(x) for x in args.seeds.split(",") if x.strip())
    except ValueError:
        seeds = ()
    if not seeds:
        raise SystemExit(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    return seeds


def run_path(output_dir: Path, method: str, seed: int) -> Path:
    return output_dir / f"lm_{method}_seed{seed}.json"


def _request(method: str, model: str, profile: Profile) -> dict:
    """What a run's result depends on; ``--resume`` reuses a finished run only for the same request."""
    return {"method": method, "model": model, "profile": asdict(profile)}


def _record(result: dict, request: dict, data: LMData, path: Path) -> None:
    """Complete a finished run's result with what it answers and how it ran, and write it to ``path``."""
    result["request"], result["data"], result["threads"] = request, data.info, thread_settings()
    write_text(path, json.dumps(result, indent=2))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.lm_suite", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="a few dozen steps, small held-out set, seed 0 (default)")
    group.add_argument("--full", action="store_true", help="the full profile: 200 steps, 64 held-out chunks, seeds 0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {ALL_METHODS} (default: {','.join(METHODS)})")
    parser.add_argument("--seeds", help="comma-separated training seeds (overrides the profile's)")
    parser.add_argument("--output-dir", type=Path, default=Path("results") / "lm")
    parser.add_argument("--resume", action="store_true",
                        help="reuse finished runs of identical requests found in the output directory")
    parser.add_argument("--model", choices=("smollm2", "synthetic"), default="smollm2")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--heldout-chunks", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--q4-embedding", choices=Q4_EMBEDDING_FORMATS,
                        help="lora_q4's tied token embedding / LM head: q8_0 as the GGUF stores it, or re-encoded to a "
                             f"5-/4-bit format (default: {Profile().q4_embedding})")
    parser.add_argument("--no-share-block-graph", action="store_true",
                        help="the LoRA methods with 30 inlined decoder blocks instead of one compiled block graph")
    parser.add_argument("--in-process", action="store_true", help="run the methods in this process")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time, each pinned to its own share of the CPUs (default 1: one run on all)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--pynative", action="store_true", help="PYNATIVE instead of GRAPH mode (with --in-process)")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    name, profile = _profile(args)
    seeds = _seeds(args, name)
    progress = not args.no_progress
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(ALL_METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; known: {ALL_METHODS}")
    out = args.output_dir
    try:
        cpu_groups(os.sched_getaffinity(0), args.jobs)
    except ValueError as err:
        parser.error(f"--{err}")
    if args.jobs > 1 and args.in_process:
        parser.error("--jobs runs workers in parallel processes; it cannot be combined with --in-process")

    if args.run_one:  # a worker: one method, one seed (the first of --seeds)
        run_profile = replace(profile, seed=seeds[0])
        pretrained, data = _load(args.model, run_profile, args.run_one)
        result = run_method(args.run_one, pretrained, data, run_profile, progress, release_weights=True)
        _record(result, _request(args.run_one, args.model, run_profile), data, run_path(out, args.run_one, seeds[0]))
        return 0

    if args.model == "smollm2":
        from benchmarks.models.gguf_loader import missing_reason
        from benchmarks.lib.assets import missing_reason as data_missing
        reason = missing_reason() or data_missing()
        if reason:
            print(f"cannot run the LM suite: {reason}", file=sys.stderr)
            return 2

    planned = [(method, seed) for method in methods for seed in (seeds[:1] if method == "zero_shot" else seeds)]
    results: Dict[Tuple[str, int], dict] = {}
    commands, loaded = [], None
    for method, seed in planned:
        run_profile = replace(profile, seed=seed)
        request, path = _request(method, args.model, run_profile), run_path(out, method, seed)
        result = reusable(path, request) if args.resume else None
        if result is not None:
            print(f"[lm_suite] {method} seed {seed}: reusing {path}", flush=True)
        elif args.in_process:
            kind = method if method in QUANT_METHODS else "float"
            if loaded is None or loaded[0] != kind:
                loaded = (kind, _load(args.model, profile, method))
            pretrained, data = loaded[1]
            result = run_method(method, pretrained, data, run_profile, progress, args.pynative)
            _record(result, request, data, path)
        else:
            cmd = module_command("benchmarks.lm_suite", "--run-one", method, "--model", args.model,
                                 "--output-dir", str(out), f"--{name}", "--seeds", str(seed))
            for flag, value in (("--steps", args.steps), ("--heldout-chunks", args.heldout_chunks),
                                ("--batch-size", args.batch_size), ("--seq-len", args.seq_len),
                                ("--q4-embedding", args.q4_embedding)):
                if value is not None:
                    cmd += [flag, str(value)]
            if args.no_share_block_graph:
                cmd.append("--no-share-block-graph")
            if not progress or args.jobs > 1:  # parallel workers write logs, not progress bars
                cmd.append("--no-progress")
            commands.append((f"{method} seed {seed}", cmd))
        if result is not None:
            results[method, seed] = result
    run_workers(commands, args.jobs, out / "logs", tag="lm_suite")
    runs, data_info = [], {}
    for method, seed in planned:
        result = results.get((method, seed)) or json.loads(run_path(out, method, seed).read_text(encoding="utf-8"))
        data_info = result.pop("data", data_info)
        runs.append(result)
    md, js = write_tables(runs, data_info, name, out)
    print(md.read_text(encoding="utf-8"))
    print(f"written: {md}, {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
