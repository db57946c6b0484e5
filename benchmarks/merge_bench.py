"""LoRA merge benchmark: forward time of merged and unmerged ``LoRADense`` relative to ``nn.Dense``.

    python -m benchmarks.merge_bench            # layer 4096x1024 -> 1024 at r=16 and r=256, MiniLM-sized BERT
    python -m benchmarks.merge_bench --quick    # layer only, 2048 rows, r=16 and r=256, 7 repetitions

GRAPH mode, float32. Three variants hold the same pre-trained weight: a plain ``nn.Dense``, a
``LoRADense`` (random non-zero A, B; the branch runs) and the same LoRA layer after ``merge()``
(``W + s B A``; the branch must be skipped, so it should cost what the Dense costs). Before timing, the
script checks that merged and unmerged outputs agree and that changing B after the merge changes
nothing (the compiled graph really skips the branch). Every variant is compiled and warmed up, then
the variants run in interleaved repetitions (order rotating), each repetition ``--inner`` calls
followed by reading the last output; the table shows the median per call over repetitions and the
ratios of the medians to ``nn.Dense``. The machine is shared and noisy: compare ratios, not times.
r=256 makes the LoRA branch as costly as half the Dense, so a merged layer that still ran it would
show up as merged/dense ~1.5 instead of ~1.0.

The model table does the same for a randomly initialised all-MiniLM-L6-v2-sized BERT encoder (6 layers,
hidden 384, batch 32 x 32) with LoRA r=8 on query and value: plain, unmerged, merged.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Sequence

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

import mindpet
from mindpet.delta import LoRADense

VARIANTS = ("dense", "unmerged", "merged")


def _array(rng: np.random.Generator, *shape: int, scale: float = 0.05) -> Tensor:
    return Tensor((rng.standard_normal(shape) * scale).astype(np.float32))


def layer_variants(cin: int, cout: int, rank: int, seed: int = 0) -> Dict[str, nn.Cell]:
    """nn.Dense, LoRADense and merged LoRADense with the same W, b (and the same A, B for the two LoRA)."""
    rng = np.random.default_rng(seed)
    w, b, a, bb = _array(rng, cout, cin), _array(rng, cout), _array(rng, rank, cin), _array(rng, cout, rank)
    dense = nn.Dense(cin, cout, weight_init=w, bias_init=b)

    def lora() -> LoRADense:
        return LoRADense(cin, cout, rank, 2.0 * rank, 0.0, lora_a_init=a, lora_b_init=bb, weight_init=w, bias_init=b,
                         compute_dtype=ms.float32)

    merged = lora()
    merged.merge()
    cells = {"dense": dense, "unmerged": lora(), "merged": merged}
    for cell in cells.values():
        cell.set_train(False)
    return cells


def model_variants(rank: int = 8, seed: int = 0) -> Dict[str, nn.Cell]:
    """MiniLM-sized BERT encoders (random weights, dropout off): plain, LoRA q,v unmerged, LoRA q,v merged."""
    from benchmarks.models.bert import BertConfig, BertEncoder  # pylint: disable=import-outside-toplevel

    config = BertConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ms.set_seed(seed)
    plain = BertEncoder(config)
    base = {name: param.value().copy() for name, param in plain.parameters_and_names()}
    cells = {"dense": plain}
    for variant in ("unmerged", "merged"):
        ms.set_seed(seed)
        net = BertEncoder(config)
        for name, param in net.parameters_and_names():
            param.set_data(base[name].copy())
        mindpet.inject(net, "lora", ["*attention.query", "*attention.value"], lora_rank=rank, lora_alpha=2 * rank)
        rng = np.random.default_rng(seed + 1)
        for name, param in net.parameters_and_names():
            if "mindpet_delta_lora_b" in name:
                param.set_data(_array(rng, *param.shape, scale=0.02))
        cells[variant] = net
    mindpet.merge_lora(cells["merged"])
    for cell in cells.values():
        cell.set_train(False)
    return cells


def check(cells: Dict[str, nn.Cell], inputs: Sequence[Tensor]) -> float:
    """Max relative difference merged vs unmerged; raises if the merged graph still runs the LoRA branch."""
    unmerged = cells["unmerged"](*inputs).asnumpy()
    merged = cells["merged"](*inputs).asnumpy()
    rel = float(np.abs(merged - unmerged).max() / max(np.abs(unmerged).max(), 1e-30))
    if rel > 1e-4:
        raise AssertionError(f"merged and unmerged outputs differ: max relative difference {rel:.2e}")
    lora_bs = [p for n, p in cells["merged"].parameters_and_names() if "mindpet_delta_lora_b" in n]
    saved = [p.value().copy() for p in lora_bs]
    for param in lora_bs:
        param.set_data(param.value() * 3.0 + 1.0)
    again = cells["merged"](*inputs).asnumpy()
    for param, value in zip(lora_bs, saved):
        param.set_data(value)
    if not np.array_equal(again, merged):
        raise AssertionError("changing lora_b after merge() changed the output: the LoRA branch still runs")
    return rel


def timed(cells: Dict[str, nn.Cell], inputs: Sequence[Tensor], reps: int, inner: int) -> Dict[str, List[float]]:
    """Per-call milliseconds of every variant, interleaved: ``reps`` rounds, order rotating each round."""
    for cell in cells.values():  # compile and warm up
        for _ in range(2):
            cell(*inputs).asnumpy()
    names = list(cells)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            cell = cells[name]
            start = time.perf_counter()
            for _ in range(inner):
                out = cell(*inputs)
            out.asnumpy()  # wait for the last call (the same small copy for every variant)
            times[name].append((time.perf_counter() - start) * 1000.0 / inner)
    return times


def report(title: str, times: Dict[str, List[float]], rel: float) -> Dict[str, float]:
    med = {name: statistics.median(values) for name, values in times.items()}
    ratios = {"merged/dense": med["merged"] / med["dense"], "unmerged/dense": med["unmerged"] / med["dense"]}
    print(f"\n{title}  (median of {len(times['dense'])} interleaved repetitions; merged vs unmerged max rel "
          f"diff {rel:.1e}; branch skipped after merge: checked)")
    print(f"  {'variant':<10} {'median ms/call':>15} {'min':>9} {'max':>9}")
    for name in VARIANTS:
        print(f"  {name:<10} {med[name]:>15.3f} {min(times[name]):>9.3f} {max(times[name]):>9.3f}")
    print("  " + "   ".join(f"{k} = {v:.3f}" for k, v in ratios.items()) + "   (ratios of medians)")
    print(f"  ratios of minima (least disturbed runs): merged/dense = {min(times['merged']) / min(times['dense']):.3f}"
          f"   unmerged/dense = {min(times['unmerged']) / min(times['dense']):.3f}")
    return ratios


def run_layer(rows: int, cin: int, cout: int, rank: int, reps: int, inner: int) -> Dict[str, float]:
    cells = layer_variants(cin, cout, rank)
    x = _array(np.random.default_rng(1), rows, cin, scale=1.0)
    rel = check(cells, (x,))
    return report(f"Layer forward x[{rows}x{cin}] W[{cout}x{cin}] r={rank}", timed(cells, (x,), reps, inner), rel)


def run_model(batch: int, length: int, rank: int, reps: int, inner: int) -> Dict[str, float]:
    cells = model_variants(rank)
    rng = np.random.default_rng(2)
    inputs = (Tensor(rng.integers(0, 30522, (batch, length)).astype(np.int32)),
              Tensor(np.ones((batch, length), np.int32)), Tensor(np.zeros((batch, length), np.int32)))
    rel = check(cells, inputs)
    return report(f"MiniLM-sized BERT encoder forward, batch {batch}x{length}, LoRA q,v r={rank}",
                  timed(cells, inputs, reps, inner), rel)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.merge_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="layer only, 2048 rows, 7 repetitions")
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--in-channels", type=int, default=1024)
    parser.add_argument("--out-channels", type=int, default=1024)
    parser.add_argument("--ranks", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--reps", type=int, default=15, help="interleaved repetitions (>= 5)")
    parser.add_argument("--inner", type=int, default=1, help="calls per variant per repetition")
    parser.add_argument("--no-model", action="store_true", help="skip the BERT table")
    args = parser.parse_args(argv)
    if args.reps < 5:
        parser.error("--reps must be at least 5")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    rows, reps = (2048, 7) if args.quick else (args.rows, args.reps)
    runs: List[Callable[[], Dict[str, float]]] = [
        lambda r=rank: run_layer(rows, args.in_channels, args.out_channels, r, reps, args.inner)
        for rank in args.ranks]
    if not (args.quick or args.no_model):
        runs.append(lambda: run_model(32, 32, 8, reps, args.inner))
    print(f"mindpet {mindpet.__version__}, MindSpore {ms.__version__}, GRAPH mode, float32, {os.cpu_count()} cores")
    for run in runs:
        run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
