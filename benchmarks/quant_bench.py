"""Kernel benchmark of LoRA on a quantised frozen base (issue #16 (1)): fused ``QuantLoraLinear`` against
the float32 fused ``LoraLinear`` and against the composed dequantise + matmul, side by side in one run.

    python -m benchmarks.quant_bench               # M in {1, 16, 256, 4096} x {1024x1024, SmolLM2 576->1536}
    python -m benchmarks.quant_bench --quick       # M in {16, 256} at 1024x1024 only
    python -m benchmarks.quant_bench --m 256 --shapes 1024x1024 --reps 9
    python -m benchmarks.quant_bench --clock cpu   # process CPU time instead of wall time (a loaded machine)

GRAPH mode, float32 activations, rank 16, every core. Per shape (K = in, N = out) the variants are
compiled, warmed up, then timed in interleaved repetitions (``kernel_bench.measure``: median of
repetitions, order rotating); the table gives ratios of medians, which is what a shared machine allows.
Variants: ``f32`` fused LoraLinear on a float32 base; ``q4_0`` (4-bit, lut c - 8, G 32), ``nf4`` (4-bit NF4 lut, G
64), ``q8_0`` (8-bit, G 32) and ``q5_0`` (5-bit, lut c - 16, G 32) fused QuantLoraLinear; ``q4_0 composed``
(dequantise with MindSpore ops, then the composed LoRA). ``fwd`` = forward; ``train`` = value of ``sum(y * dy)`` and
its gradients w.r.t. the input and A, B (base frozen). Codes and scales are random: the kernels' time does not
depend on the values. Target (issue): 4-bit train <= 1.2x the float32-base train at M = 256.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn

from benchmarks.kernel_bench import LoraNet, TrainStep, measure
from mindpet.kernels import QuantLoraLinear

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], np.float32)
# format -> (bits, group size, lut)
FORMATS = {"q4_0": (4, 32, np.arange(16, dtype=np.float32) - 8.0), "nf4": (4, 64, NF4), "q8_0": (8, 32, None),
           "q5_0": (5, 32, np.arange(32, dtype=np.float32) - 16.0)}
SHAPES = {"1024x1024": (1024, 1024), "576x1536": (576, 1536)}
RANK = 16


class QuantNet(nn.Cell):
    """``x deq(W)^T + b + s (x A^T) B^T`` with the quantised W and b frozen, A and B trainable."""

    def __init__(self, k, n, r, fmt, backend):
        super().__init__()
        bits, group, lut = FORMATS[fmt]
        rng = np.random.default_rng(0)
        codes = (rng.integers(0, 256, (n, k // 2 + (k // 8 if bits == 5 else 0)), dtype=np.uint8) if bits != 8
                 else rng.integers(-127, 128, (n, k), dtype=np.int8))
        self.codes = Parameter(Tensor(codes), name="codes", requires_grad=False)
        scales = (rng.uniform(0.5, 1.5, (n, k // group)) * 0.01).astype(np.float16)
        self.scales = Parameter(Tensor(scales), name="scales", requires_grad=False)
        self.offsets = Tensor(np.zeros(1, np.float16))
        self.lut = Tensor(lut if lut is not None else np.zeros(1, np.float32))
        self.bias = Parameter(Tensor((rng.standard_normal(n) * 0.05).astype(np.float32)), name="bias",
                              requires_grad=False)
        self.lora_a = Parameter(Tensor((rng.standard_normal((r, k)) * 0.05).astype(np.float32)), name="lora_a")
        self.lora_b = Parameter(Tensor((rng.standard_normal((n, r)) * 0.05).astype(np.float32)), name="lora_b")
        self.op = QuantLoraLinear(bits, group, False, True, True, 2.0, backend=backend)

    def construct(self, x):
        return self.op(x, self.codes, self.scales, self.offsets, self.lut, self.bias, self.lora_a, self.lora_b)


VARIANTS = ("f32", "q4_0", "nf4", "q8_0", "q5_0", "q4_0 composed")


def _net(variant: str, k: int, n: int) -> nn.Cell:
    if variant == "f32":
        return LoraNet(k, n, RANK, "fused")
    fmt, _, how = variant.partition(" ")
    return QuantNet(k, n, RANK, fmt, "composed" if how == "composed" else "fused")


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _runner(cell: nn.Cell, args, clock) -> Callable[[int], float]:
    """A function timing ``n`` calls of ``cell(*args)`` on ``clock``; returns seconds per call."""
    def run(n: int) -> float:
        start = clock()
        for _ in range(n):
            cell(*args)
        return (clock() - start) / n
    return run


def bench_shape(m: int, k: int, n: int, reps: int, rng, clock=time.perf_counter) -> Dict[str, float]:
    x = Tensor(rng.standard_normal((m, k)).astype(np.float32))
    dy = Tensor(rng.standard_normal((m, n)).astype(np.float32))
    runners = {}
    for variant in VARIANTS:
        net = _net(variant, k, n)
        runners[f"fwd/{variant}"] = _runner(net, (x,), clock)
        runners[f"train/{variant}"] = _runner(TrainStep(net), (x, dy), clock)
    return measure(runners, reps)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def run(grid: List[Tuple[str, int]], reps: int, clock: str = "wall") -> None:
    rng = np.random.default_rng(0)
    print(f"quant_bench: commit {_commit()}, {len(os.sched_getaffinity(0))} cores, load average at start "
          f"{os.getloadavg()[0]:.2f}; ratios of medians of {reps} interleaved repetitions, {clock} clock")
    quant = [v for v in VARIANTS if v != "f32"]
    header = " ".join(f"{v + '/f32':>10}" for v in quant[:4]) + f" {'q4_0 F/C':>9}"
    print(f"{'shape KxN':<10} {'M':>5} {'kind':<6} {'f32 ms':>8} {header}")
    for shape, m in grid:
        k, n = SHAPES[shape]
        t = bench_shape(m, k, n, reps, rng, CLOCKS[clock])
        for kind in ("fwd", "train"):
            base = t[f"{kind}/f32"]
            ratios = " ".join(f"{t[f'{kind}/{v}'] / base:10.2f}" for v in quant[:4])
            fc = t[f"{kind}/q4_0"] / t[f"{kind}/q4_0 composed"]
            print(f"{shape:<10} {m:>5} {kind:<6} {1e3 * base:8.2f} {ratios} {fc:9.2f}")
        sys.stdout.flush()
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="M in {16, 256} at 1024x1024 only")
    parser.add_argument("--m", default=None, help="comma-separated row counts (default 1,16,256,4096)")
    parser.add_argument("--shapes", default=None, help=f"comma-separated, of {sorted(SHAPES)}")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or the process's CPU time (all threads: less sensitive to other load)")
    args = parser.parse_args(argv)
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    ms_list = [16, 256] if args.quick else [1, 16, 256, 4096]
    shapes = ["1024x1024"] if args.quick else list(SHAPES)
    if args.m:
        ms_list = [int(v) for v in args.m.split(",")]
    if args.shapes:
        shapes = args.shapes.split(",")
        unknown = set(shapes) - set(SHAPES)
        if unknown:
            parser.error(f"--shapes: unknown {sorted(unknown)}; known {sorted(SHAPES)}")
    run([(s, m) for s in shapes for m in ms_list], args.reps, args.clock)


if __name__ == "__main__":
    main()
