"""One language-model run: build, freeze, train with Adam and measure held-out perplexity, step times and memory.

:func:`run_method` returns the run's JSON-ready result; perplexity is ``exp(mean NLL)`` of the next-token
predictions inside each held-out chunk.
"""
from __future__ import annotations

import math
import resource
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from benchmarks.lib.lm_data import LMData
from benchmarks.lib.lm_model import Pretrained, build
from benchmarks.lib.lm_profile import ALL_METHODS, Profile

FREEZE_MODE = {"prompt": "prompttuning", "prefix": "prefixtuning", "lora": "lora", "lora_q4": "lora", "lora_q8": "lora"}


def _cells():
    from mindspore import nn, ops

    class MeanLoss(nn.Cell):
        """Mean next-token cross-entropy over batch x (seq - 1) predictions: ``SparseSoftmaxCrossEntropyWithLogits``,
        one fused op each way (its backward is ``(softmax - onehot) / n``). Composing it as ``log_softmax`` then
        ``gather_elements`` costs 7x the CPU time in the backward on SmolLM2's [255, 49152] logits (0.38 vs 0.05
        CPU s; ``python -m benchmarks.ms_memory_repro --cases cross_entropy``): ~0.3 s of a ~2.4 s LoRA step."""

        def __init__(self, network):
            super().__init__(auto_prefix=False)
            self.network = network
            self.cross_entropy = ops.SparseSoftmaxCrossEntropyWithLogits()

        def construct(self, input_ids):
            logits = self.network(input_ids)[:, :-1]
            batch, length, vocab = logits.shape
            return self.cross_entropy(ops.reshape(logits, (batch * length, vocab)),
                                      ops.reshape(input_ids[:, 1:], (batch * length,)))

    class TokenNLL(nn.Cell):
        """Sum of next-token NLL over the batch (the mean of :class:`MeanLoss` times the number of predictions)."""

        def __init__(self, network):
            super().__init__(auto_prefix=False)
            self.mean = MeanLoss(network)

        def construct(self, input_ids):
            return self.mean(input_ids) * (input_ids.shape[0] * (input_ids.shape[1] - 1))

    return TokenNLL, MeanLoss


def mean_loss_cell():
    """The Cell class wrapping a language model into its mean next-token cross-entropy (batch x (seq - 1))."""
    return _cells()[1]


def learning_rates(peak: float, steps: int, warmup_fraction: float) -> list:
    warmup = max(1, int(round(warmup_fraction * steps)))
    return [peak * (s + 1) / warmup if s < warmup else peak * (steps - s) / max(1, steps - warmup)
            for s in range(steps)]


def compile_then_release(cell, *inputs) -> None:
    """GRAPH mode: compile ``cell`` for ``inputs`` and return the freed compile-time heap (``malloc_trim``) before
    the graph first runs, so the job's peak is not the compiler's temporaries plus the graph's runtime memory
    (issue 16: -415 MB of the lora_q4 job's peak, -227 MB of lora's first step). No-op in PYNATIVE mode."""
    import mindspore as ms
    from mindpet.utils.memory import release_free_heap
    if ms.get_context("mode") == ms.GRAPH_MODE:
        cell.compile(*inputs)
        release_free_heap()


def perplexity(evaluator, chunks: np.ndarray, batch_size: int, progress: bool, desc: str) -> tuple[float, float]:
    """(perplexity, seconds) on ``chunks`` of a ``TokenNLL`` cell (kept across calls: one graph compile)."""
    import mindspore as ms
    from tqdm import tqdm
    evaluator.set_train(False)
    compile_then_release(evaluator, ms.Tensor(chunks[:batch_size]))
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


def parameter_sizes(net) -> dict:
    """Parameter counts and bytes of ``net``: ``total`` counts a quantised weight as its ``N x K`` values (not its
    codes), ``bytes`` the stored bytes of every parameter (codes, scales, offsets as stored), ``frozen_bytes``
    those of the frozen ones; ``projection_bytes`` / ``projection_float32_bytes``: the projections' weights as
    stored / in float32 (N x K x 4)."""
    quantised = {}
    for cell_name, cell in net.cells_and_names():
        if getattr(cell, "quantized_weight", None) is not None:
            w = cell.quantized_weight
            quantised.update({id(p): None for p in (cell.weight_codes, cell.weight_scales, cell.weight_offsets)
                              if p is not None})
            # (N x K, stored bytes, whether a projection: the tied embedding's quantised head is not one)
            quantised[id(cell.weight_codes)] = (w.out_channels * w.in_channels, w.nbytes, cell_name.endswith("_proj"))
    total = trainable = stored = frozen = proj = proj32 = 0
    for name, p in net.parameters_and_names():
        nbytes = int(np.prod(p.shape)) * p.itemsize
        stored += nbytes
        frozen += 0 if p.requires_grad else nbytes
        trainable += int(np.prod(p.shape)) if p.requires_grad else 0
        info = quantised.get(id(p), "float")
        if info == "float":
            total += int(np.prod(p.shape))
            if name.endswith("_proj.weight"):
                proj, proj32 = proj + nbytes, proj32 + 4 * int(np.prod(p.shape))
        elif info is not None:  # the codes stand for the N x K weight
            total += info[0]
            if info[2]:
                proj, proj32 = proj + info[1], proj32 + 4 * info[0]
    return {"total": total, "trainable": trainable, "bytes": stored, "frozen_bytes": frozen, "projection_bytes": proj,
            "projection_float32_bytes": proj32}


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

    if method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; known: {ALL_METHODS}")
    ms.set_context(mode=ms.PYNATIVE_MODE if pynative else ms.GRAPH_MODE, device_target="CPU")
    ms.set_seed(profile.seed)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    net = build(method, pretrained, data, profile)
    if release_weights:  # issue 15: else the float32 weights exist twice for the whole run (~580 MB)
        pretrained.tensors.clear()
        release_free_heap()
    if method != "zero_shot":
        freeze_delta(net, FREEZE_MODE[method])
    sizes = parameter_sizes(net)
    total, trainable = sizes["total"], (sizes["trainable"] if method != "zero_shot" else 0)
    result = {"method": method, "model": pretrained.name, "profile": asdict(profile),
              "parameters": {"total": total, "trainable": trainable, "trainable_pct": 100.0 * trainable / total},
              "static_bytes": sizes["bytes"] + 3 * 4 * trainable,
              "frozen_base_bytes": sizes["frozen_bytes"], "frozen_base_float32_bytes": 4 * (total - trainable),
              "projection_bytes": sizes["projection_bytes"],
              "projection_float32_bytes": sizes["projection_float32_bytes"],
              "build_s": time.perf_counter() - wall0}
    result["rss_after_build_mb"] = _rss_mb()[0]
    TokenNLL, MeanLoss = _cells()
    evaluator = TokenNLL(net)

    if method in ("lora", "lora_q4"):  # B = 0 at initialisation: the model is exactly the zero-shot one (lora_q4:
        # the same Q4_1 values, dequantised inside the kernel instead of on load), no need to evaluate
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
        compile_then_release(step_cell, ms.Tensor(data.train[order[:profile.batch_size]]))
        result["rss_after_train_compile_mb"] = _rss_mb()[0]
        for step in bar:
            batch = data.train[order[step * profile.batch_size:(step + 1) * profile.batch_size]]
            t, c = time.perf_counter(), time.process_time()
            loss = float(step_cell(ms.Tensor(batch)).asnumpy())
            seconds.append(time.perf_counter() - t)
            cpu_seconds.append(time.process_time() - c)
            losses.append(loss)
            if step == 0:  # issue 15: return the heap the graph compile freed (~230 MB)
                result["peak_rss_first_step_mb"] = _rss_mb()[1]
                release_free_heap()
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        result["peak_rss_training_mb"] = _rss_mb()[1]
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
