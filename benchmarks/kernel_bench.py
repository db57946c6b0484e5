"""Kernel micro-benchmark: fused vs composed vs plain ``nn.Dense``, measured side by side in one run.

    python -m benchmarks.kernel_bench              # full grid (a few minutes on 2 cores)
    python -m benchmarks.kernel_bench --quick      # M=4096 and M=16 at 1024x1024, r=16 only
    python -m benchmarks.kernel_bench --ops norm_act   # LayerNorm and exact GELU (BERT shapes)
    python -m benchmarks.kernel_bench --load 0,2,6     # LoRA and adapter train steps under background load
    python -m benchmarks.kernel_bench --standalone 5   # LoRADense step without input gradient, fresh processes

GRAPH mode, float32, every core (OpenMP default for the fused kernels, MindSpore's default pool for
the rest). For each shape every variant is compiled and warmed up, then the variants are timed in
interleaved repetitions (variant order rotates each repetition); a repetition runs each variant
``inner`` times (enough for ~30 ms) and records the mean; the table shows the median over
repetitions and ratios of medians.

Variants (``train`` = value of ``sum(y * dy)`` and its gradients w.r.t. the input and the trainable
parameters; ``no dx`` = the same without the input gradient, as for a layer whose input comes from
frozen layers; base weight frozen):
  lora:    fused LoraLinear, composed LoraLinear, plain nn.Dense (frozen: gradient of x only)
  adapter / low_rank_adapter: fused vs composed (the Dense in front is the same for both).
  norm_act: LayerNorm [1024, 384] (gamma/beta trainable; plain, and with the residual add fused vs
    ``x + r`` then MindSpore LayerNorm) and exact GELU [1024, 1536]: fused vs composed (composed =
    what ``nn.LayerNorm`` and ``0.5 x (1 + erf(x / sqrt 2))`` run).
``--load N`` (comma-separated levels): N busy processes (a spinning Python loop) started before and
stopped after each level, so with the benchmark's own two-thread team the run queue holds N + 2
threads on 2 cores: oversubscription (N + 2) / cores, i.e. 2x at N = 2 and 4x at N = 6 on 2 cores.
Each level times the LoRA (M=4096, 1024x1024, r=16) and adapter (M=4096, hidden 1024, B=64) train
steps, fused and composed interleaved. ``--standalone R``: the issue's standalone step, ``LoRADense(1024,
1024, lora_rank=16, lora_alpha=32, lora_dropout=0, compute_dtype=float32)`` after ``freeze_delta(net,
'lora')``, a constant [4096, 1024] input, ``ms.value_and_grad`` over the optimizer's parameters
inside ``ms.jit`` plus SGD; R rounds, each one fresh process per backend (order alternating), started
with the benchmark's own environment (``os.environ``: without the ``OMP_NUM_THREADS=1`` that ``import
mindspore`` puts into the C environment, which would hold the fused kernels to one thread).
Targets (issue): fused/composed <= 1.0 under --load 2 and 6; standalone fused/composed <= 0.85; fused LoRA fwd <= 1.05x Dense fwd and train <= 1.05x frozen-Dense train at M=4096
(i.e. <= 0.85x composed train there); fused LoRA train <= 0.7x composed at M <= 16; fused adapter
train <= 0.8x composed.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, Iterator, List, Sequence

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from mindpet.kernels import Activation, Adapter, LayerNorm, LoraLinear, LowRankAdapter, backend as kbackend
from mindpet.kernels import _library


def _param(rng, shape, trainable, name):
    return Parameter(Tensor((rng.standard_normal(shape) * 0.05).astype(np.float32)), name=name,
                     requires_grad=trainable)


class LoraNet(nn.Cell):
    """``x W^T + b + s (x A^T) B^T`` with W, b frozen."""

    def __init__(self, k, n, r, backend):
        super().__init__()
        rng = np.random.default_rng(0)
        self.weight = _param(rng, (n, k), False, "weight")
        self.bias = _param(rng, (n,), False, "bias")
        self.lora_a = _param(rng, (r, k), True, "lora_a")
        self.lora_b = _param(rng, (n, r), True, "lora_b")
        self.op = LoraLinear(2.0, backend=backend)

    def construct(self, x):
        return self.op(x, self.weight, self.bias, self.lora_a, self.lora_b)


class DenseNet(nn.Cell):
    """Plain frozen ``nn.Dense``."""

    def __init__(self, k, n):
        super().__init__()
        self.dense = nn.Dense(k, n)
        for p in self.dense.get_parameters():
            p.requires_grad = False

    def construct(self, x):
        return self.dense(x)


class AdapterNet(nn.Cell):
    """Adapter (gelu) or low-rank adapter on ``h``; every adapter parameter trainable."""

    def __init__(self, d, b, r, low_rank, backend):
        super().__init__()
        rng = np.random.default_rng(0)
        self.low_rank = low_rank
        if low_rank:
            shapes = [(d, r), (r, b), (b,), (b, r), (r, d), (d,)]
            self.op = LowRankAdapter("gelu", backend=backend)
        else:
            shapes = [(b, d), (b,), (d, b), (d,)]
            self.op = Adapter("gelu", backend=backend)
        self.p = ms.ParameterTuple([_param(rng, s, True, f"p{i}") for i, s in enumerate(shapes)])

    def construct(self, h):
        if self.low_rank:
            return self.op(h, self.p[0], self.p[1], self.p[2], self.p[3], self.p[4], self.p[5])
        return self.op(h, self.p[0], self.p[1], self.p[2], self.p[3])


class NormNet(nn.Cell):
    """``LayerNorm(x)`` or ``LayerNorm(x + r)`` (r a constant), gamma/beta trainable."""

    def __init__(self, d, residual, backend):
        super().__init__()
        self.norm = LayerNorm((d,), epsilon=1e-12, backend=backend)
        self.residual = residual
        self.r = Parameter(Tensor(np.random.default_rng(1).standard_normal((1024, d)).astype(np.float32)),
                           name="r", requires_grad=False)

    def construct(self, x):
        if self.residual:
            return self.norm(x, self.r)
        return self.norm(x)


class _Loss(nn.Cell):
    """``sum(net(x) * dy)``: its gradient feeds ``dy`` into the network's backward."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def construct(self, x, dy):
        return (self.net(x) * dy).sum()


class TrainStep(nn.Cell):
    """Loss value and gradients of the input and of the trainable parameters (forward runs once;
    returning the value keeps GRAPH mode from pruning the forward of a frozen layer)."""

    def __init__(self, net):
        super().__init__()
        self.loss = _Loss(net)
        self.weights = ms.ParameterTuple(net.trainable_params())
        self.grad = ops.GradOperation(get_all=True, get_by_list=bool(self.weights))

    def construct(self, x, dy):
        value = self.loss(x, dy)
        if self.weights:
            return value, self.grad(self.loss, self.weights)(x, dy)
        return value, self.grad(self.loss)(x, dy)


class WeightsStep(nn.Cell):
    """Loss value and gradients of the trainable parameters only: the input needs no gradient."""

    def __init__(self, net):
        super().__init__()
        self.loss = _Loss(net)
        self.weights = ms.ParameterTuple(net.trainable_params())
        self.grad = ops.GradOperation(get_by_list=True)

    def construct(self, x, dy):
        return self.loss(x, dy), self.grad(self.loss, self.weights)(x, dy)


def _runner(cell: nn.Cell, args: Sequence[Tensor]) -> Callable[[int], float]:
    """A function timing ``n`` calls of ``cell(*args)``; returns seconds per call."""
    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            cell(*args)  # CPU graph execution returns when the graph has run
        return (time.perf_counter() - start) / n
    return run


def measure(runners: Dict[str, Callable[[int], float]], reps: int, target_s: float = 0.03) -> Dict[str, float]:
    """Median seconds per call of each runner over ``reps`` interleaved repetitions."""
    inner = {}
    for name, run in runners.items():
        run(2)  # compile + warm up
        once = max(run(1), 1e-6)
        inner[name] = max(1, min(200, int(target_s / once)))
    samples: Dict[str, List[float]] = {name: [] for name in runners}
    names = list(runners)
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            samples[name].append(runners[name](inner[name]))
    return {name: statistics.median(v) for name, v in samples.items()}


def _inputs(m, k, n, rng):
    return (Tensor(rng.standard_normal((m, k)).astype(np.float32)),
            Tensor(rng.standard_normal((m, n)).astype(np.float32)))


def bench_lora(m, k, n, r, reps, rng) -> dict:
    x, dy = _inputs(m, k, n, rng)
    nets = {"fused": LoraNet(k, n, r, "fused"), "composed": LoraNet(k, n, r, "composed"), "dense": DenseNet(k, n)}
    runners = {}
    for name, net in nets.items():
        runners[f"fwd/{name}"] = _runner(net, (x,))
        runners[f"train/{name}"] = _runner(TrainStep(net), (x, dy))
        if name != "dense":
            runners[f"nodx/{name}"] = _runner(WeightsStep(net), (x, dy))
    return measure(runners, reps)


class BaselineNet(nn.Cell):
    """The LoRA or adapter op of LoraNet / AdapterNet run by another build of the CPU kernel library
    (its one-pass backward), to compare two builds side by side in one process."""

    def __init__(self, op, lib, net):
        super().__init__()
        import ctypes  # pylint: disable=import-outside-toplevel
        from mindpet.kernels import _primitives  # pylint: disable=import-outside-toplevel
        ctypes.CDLL(lib).MindpetSetBlasLibrary(str(_library._default_blas()).encode())  # pylint: disable=protected-access

        def custom(name, bprop=None):
            symbol, out_shape = _primitives._CPU_SPECS[name]  # pylint: disable=protected-access
            return ops.Custom(f"{lib}:{symbol}", out_shape=out_shape, out_dtype=_primitives._out_dtype(name),  # pylint: disable=protected-access
                              func_type="aot", bprop=bprop)
        zeros_like = ops.ZerosLike()
        self.net, self.lora = net, op == "lora"
        self.absent = Tensor(np.zeros(1, np.float32))
        if self.lora:
            bwd = custom("lora_linear_bwd")

            def bprop(x, w, bias, a, b, mask, scale, has_bias, has_mask, out, dout):
                dx, d_a, d_b = bwd(dout[0], x, w, a, b, out[1], mask, scale, has_mask)
                return dx, zeros_like(w), zeros_like(bias), d_a, d_b, zeros_like(mask), scale * 0, has_bias * 0, \
                    has_mask * 0
            self.fwd = custom("lora_linear_fwd", bprop)
        else:
            bwd = custom("adapter_bwd")

            def bprop(h, w_down, b_down, w_up, b_up, activation, out, dout):
                dh, d_wd, d_bd, d_wu, d_bu = bwd(dout[0], h, w_down, w_up, out[1], activation)
                return dh, d_wd, d_bd, d_wu, d_bu, activation * 0
            self.fwd = custom("adapter_fwd", bprop)

    def construct(self, x):
        n = self.net
        if self.lora:
            return self.fwd(x, n.weight, n.bias, n.lora_a, n.lora_b, self.absent, 2.0, 1, 0)[0]
        return self.fwd(x, n.p[0], n.p[1], n.p[2], n.p[3], 2)[0]


def bench_train_pair(op: str, reps: int, rng, baseline_lib: str = None) -> dict:
    """Train steps (with and without the input gradient) of the issue's shapes, fused vs composed
    (and ``baseline``: the fused op from another build, when ``baseline_lib`` is given):
    ``lora`` M=4096, 1024x1024, r=16; ``adapter`` M=4096, hidden 1024, bottleneck 64."""
    x, dy = _inputs(4096, 1024, 1024, rng)
    runners = {}
    for name in ("fused", "composed") + (("baseline",) if baseline_lib else ()):
        backend = "fused" if name == "baseline" else name
        net = LoraNet(1024, 1024, 16, backend) if op == "lora" else AdapterNet(1024, 64, 1, False, backend)
        if name == "baseline":
            net = BaselineNet(op, baseline_lib, net)
        runners[f"train/{name}"] = _runner(TrainStep(net), (x, dy))
        runners[f"nodx/{name}"] = _runner(WeightsStep(net), (x, dy))
    return measure(runners, reps)


@contextlib.contextmanager
def background_load(n: int) -> Iterator[None]:
    """``n`` busy processes (one spinning Python loop each) for the duration of the block."""
    # each spins until it is stopped or its parent (this benchmark) is gone
    spin = "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(n)]
    try:
        time.sleep(1.0 if n else 0.0)  # let the scheduler spread them
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def run_load(levels: Sequence[int], reps: int, rng, ops_wanted=("lora", "adapter"), baseline_lib=None) -> None:
    """The LoRA and adapter train steps at each background-load level, fused/composed side by side."""
    cores = len(os.sched_getaffinity(0))
    print(f"\nbackground load: N busy processes + this benchmark's 2 threads on {cores} cores; "
          f"oversubscription (N + 2) / {cores}; load average at start {os.getloadavg()[0]:.2f}")
    print(f"{'N':>3} {'over':>5} {'op':<8} | {'train F':>8} {'train C':>8} {'F/C':>10} | {'no dx F':>8} "
          f"{'no dx C':>8} {'F/C':>10}" + (f" | {'base/C':>6} {'no dx base/C':>12}" if baseline_lib else ""))
    for n in levels:
        with background_load(n):
            for op in [o for o in ("lora", "adapter") if o in ops_wanted]:
                t = bench_train_pair(op, reps, rng, baseline_lib)
                tr = t["train/fused"] / t["train/composed"]
                nd = t["nodx/fused"] / t["nodx/composed"]
                print(f"{n:>3} {(n + 2) / cores:5.1f} {op:<8} | {1e3 * t['train/fused']:8.1f} "
                      f"{1e3 * t['train/composed']:8.1f} {_fmt_ratio(tr, 1.0 if n else None):>10} | "
                      f"{1e3 * t['nodx/fused']:8.1f} {1e3 * t['nodx/composed']:8.1f} "
                      f"{_fmt_ratio(nd, 1.0 if n else None):>10}" +
                      (f" | {t['train/baseline'] / t['train/composed']:6.2f} "
                       f"{t['nodx/baseline'] / t['nodx/composed']:12.2f}" if baseline_lib else ""))
                sys.stdout.flush()
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


def standalone_step_seconds(backend: str, steps: int = 10, warmup: int = 3) -> float:
    """Median seconds per step of the issue's standalone LoRADense step (no input gradient)."""
    from mindpet.delta import LoRADense  # pylint: disable=import-outside-toplevel
    from mindpet.graph import freeze_delta  # pylint: disable=import-outside-toplevel

    ms.set_seed(0)
    net = LoRADense(1024, 1024, lora_rank=16, lora_alpha=32, lora_dropout=0.0, compute_dtype=ms.float32,
                    backend=backend)
    freeze_delta(net, "lora")
    optimizer = nn.SGD(net.trainable_params(), learning_rate=1e-3)
    x = Tensor(np.random.default_rng(0).standard_normal((4096, 1024)).astype(np.float32))

    def loss_fn(inp):
        return net(inp).sum()

    grad_fn = ms.value_and_grad(loss_fn, None, optimizer.parameters)

    @ms.jit
    def step(inp):
        loss, grads = grad_fn(inp)
        optimizer(grads)
        return loss

    for _ in range(warmup):
        step(x).asnumpy()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(x).asnumpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fused_threads() -> int:
    """Threads a fused CPU kernel call of this process may use (the kernels' team size, ops/cpu/parallel.h)."""
    import ctypes  # pylint: disable=import-outside-toplevel
    return int(ctypes.CDLL(_library.load()).MindpetMaxThreads())


def standalone_worker(backend: str, steps: int = 10, warmup: int = 3) -> dict:
    """One worker's result: median step seconds, ``OMP_NUM_THREADS`` as the worker started, and the fused
    kernels' team size (fused backend only)."""
    started_with = os.environ.get("OMP_NUM_THREADS")  # os.environ: read at interpreter start
    seconds = standalone_step_seconds(backend, steps, warmup)
    return {"backend": backend, "seconds": seconds, "omp_num_threads": started_with,
            "fused_threads": fused_threads() if backend == "fused" else None}


def run_standalone_worker(backend: str, steps: int = 10, warmup: int = 3) -> dict:
    """:func:`standalone_worker` in a fresh process started with this process's ``os.environ``.

    ``os.environ`` is the environment the benchmark was started with: ``import mindspore`` then sets
    ``OMP_NUM_THREADS=1`` in the C environment only, and a child started without ``env`` inherits it, which
    limits its fused kernels to one thread (MindSpore's own operators ignore the variable)."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--standalone-worker", backend,
                          "--standalone-steps", str(steps), "--standalone-warmup", str(warmup)],
                         env=dict(os.environ), check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_standalone(rounds: int) -> None:
    """``rounds`` rounds of the standalone step, one fresh process per backend (order alternating)."""
    print(f"\nstandalone LoRADense step, no input gradient (fresh process per backend, {rounds} rounds); "
          f"load average at start {os.getloadavg()[0]:.2f}")
    samples: Dict[str, List[float]] = {"fused": [], "composed": []}
    for i in range(rounds):
        for backend in (("fused", "composed") if i % 2 == 0 else ("composed", "fused")):
            result = run_standalone_worker(backend)
            samples[backend].append(result["seconds"])
            if backend == "fused":
                team = result["fused_threads"]
        print(f"round {i}: fused {1e3 * samples['fused'][-1]:.1f} ms ({team} threads), "
              f"composed {1e3 * samples['composed'][-1]:.1f} ms")
        sys.stdout.flush()
    f, c = statistics.median(samples["fused"]), statistics.median(samples["composed"])
    ratios = [a / b for a, b in zip(samples["fused"], samples["composed"])]
    print(f"median: fused {1e3 * f:.1f} ms, composed {1e3 * c:.1f} ms, fused/composed {_fmt_ratio(f / c, 0.85)} "
          f"(per round {min(ratios):.2f}-{max(ratios):.2f}); load average at the end {os.getloadavg()[0]:.2f}")


def bench_adapter(m, d, b, r, low_rank, reps, rng) -> dict:
    h, dy = _inputs(m, d, d, rng)
    runners = {}
    for name in ("fused", "composed"):
        net = AdapterNet(d, b, r, low_rank, name)
        runners[f"fwd/{name}"] = _runner(net, (h,))
        runners[f"train/{name}"] = _runner(TrainStep(net), (h, dy))
        runners[f"nodx/{name}"] = _runner(WeightsStep(net), (h, dy))
    return measure(runners, reps)


def bench_norm_act(reps, rng) -> dict:
    """fused vs composed LayerNorm [1024, 384] (plain and residual) and exact GELU [1024, 1536]."""
    runners = {}
    x, dy = _inputs(1024, 384, 384, rng)
    for residual in (False, True):
        for name in ("fused", "composed"):
            net = NormNet(384, residual, name)
            key = f"ln{'+res' if residual else ''}"
            runners[f"{key}/fwd/{name}"] = _runner(net, (x,))
            runners[f"{key}/train/{name}"] = _runner(TrainStep(net), (x, dy))
    x, dy = _inputs(1024, 1536, 1536, rng)
    for name in ("fused", "composed"):
        net = Activation("gelu_erf", backend=name)
        runners[f"gelu/fwd/{name}"] = _runner(net, (x,))
        runners[f"gelu/train/{name}"] = _runner(TrainStep(net), (x, dy))
    return measure(runners, reps)


def _fmt_ratio(value: float, target: float = None) -> str:
    mark = "" if target is None else (" ok" if value <= target else " MISS")
    return f"{value:5.2f}{mark}"


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (median), >= 5")
    parser.add_argument("--quick", action="store_true", help="a small subset of the grid")
    parser.add_argument("--ops", default="lora,adapter,low_rank_adapter")
    parser.add_argument("--load", help="background-load levels N (comma-separated busy-process counts), "
                        "e.g. 0,2,6; runs only the load table")
    parser.add_argument("--baseline-lib", help="with --load: also time the fused ops of this other build of "
                        "libmindpet_cpu_kernels.so (one-pass backward), side by side")
    parser.add_argument("--standalone", type=int, metavar="ROUNDS",
                        help="runs only the standalone no-input-gradient LoRADense step, ROUNDS rounds")
    parser.add_argument("--standalone-worker", choices=("fused", "composed"), help=argparse.SUPPRESS)
    parser.add_argument("--standalone-steps", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--standalone-warmup", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    if args.standalone_worker:
        print(json.dumps(standalone_worker(args.standalone_worker, args.standalone_steps, args.standalone_warmup)))
        return 0
    if kbackend.fused_implementation("CPU")[0] != "cpu":
        print("fused CPU kernels unavailable:", kbackend.fused_implementation("CPU")[1])
        return 1
    rng = np.random.default_rng(0)
    reps = max(5, args.reps)
    ops_wanted = set(args.ops.split(","))
    print(f"mindpet kernel benchmark: GRAPH, float32, {os.cpu_count()} cpus, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'default')}, BLAS: {_library.blas_description()}, "
          f"median of {reps} interleaved reps; times in ms, ratios of medians; "
          f"load average {os.getloadavg()[0]:.2f}")
    if args.standalone:
        run_standalone(args.standalone)
        return 0
    if args.load is not None:
        run_load([int(v) for v in args.load.split(",")], reps, rng, ops_wanted, args.baseline_lib)
        return 0

    if "lora" in ops_wanted:
        ms_list = (4096, 16) if args.quick else (1, 16, 4096)
        shapes = ((1024, 1024),) if args.quick else ((768, 768), (1024, 1024), (1024, 4096))
        ranks = (16,) if args.quick else (8, 16, 64)
        print("\nlora_linear (fused F, composed C, plain frozen Dense D)")
        print(f"{'M':>5} {'in':>5} {'out':>5} {'r':>3} | {'fwd F':>8} {'fwd D':>8} {'F/D':>9} {'C/D':>5} "
              f"{'F/C':>5} | {'train F':>8} {'train D':>8} {'F/D':>9} {'C/D':>5} {'F/C':>10} | {'no dx F/C':>9}")
        for m, (k, n), r in itertools.product(ms_list, shapes, ranks):
            t = bench_lora(m, k, n, r, reps, rng)
            fwd_fd = t["fwd/fused"] / t["fwd/dense"]
            tr_fd = t["train/fused"] / t["train/dense"]
            tr_fc = t["train/fused"] / t["train/composed"]
            big = m >= 4096
            print(f"{m:>5} {k:>5} {n:>5} {r:>3} | {1e3 * t['fwd/fused']:8.3f} {1e3 * t['fwd/dense']:8.3f} "
                  f"{_fmt_ratio(fwd_fd, 1.05 if big else None):>9} {t['fwd/composed'] / t['fwd/dense']:5.2f} "
                  f"{t['fwd/fused'] / t['fwd/composed']:5.2f} | {1e3 * t['train/fused']:8.3f} "
                  f"{1e3 * t['train/dense']:8.3f} {_fmt_ratio(tr_fd, 1.05 if big else None):>9} "
                  f"{t['train/composed'] / t['train/dense']:5.2f} {_fmt_ratio(tr_fc, 0.85 if big else 0.7):>10} | "
                  f"{t['nodx/fused'] / t['nodx/composed']:9.2f}")
            sys.stdout.flush()

    for op in ("adapter", "low_rank_adapter"):
        if op not in ops_wanted:
            continue
        low_rank = op == "low_rank_adapter"
        ms_list = (4096, 16) if args.quick else (1, 16, 4096)
        dims = ((1024,),) if args.quick else ((768,), (1024,))
        # adapter: bottleneck 64 (spec default); low-rank: reduction_factor 32, low_rank_size 1
        print(f"\n{op} (fused F, composed C){'; bottleneck = hidden/32, rank 1' if low_rank else '; bottleneck 64'}")
        print(f"{'M':>5} {'hidden':>6} {'B':>4} | {'fwd F':>8} {'fwd C':>8} {'F/C':>5} | {'train F':>8} "
              f"{'train C':>8} {'F/C':>10} | {'no dx F/C':>9}")
        for m, (d,) in itertools.product(ms_list, dims):
            b = d // 32 if low_rank else 64
            t = bench_adapter(m, d, b, 1, low_rank, reps, rng)
            print(f"{m:>5} {d:>6} {b:>4} | {1e3 * t['fwd/fused']:8.3f} {1e3 * t['fwd/composed']:8.3f} "
                  f"{t['fwd/fused'] / t['fwd/composed']:5.2f} | {1e3 * t['train/fused']:8.3f} "
                  f"{1e3 * t['train/composed']:8.3f} "
                  f"{_fmt_ratio(t['train/fused'] / t['train/composed'], None if low_rank else 0.8):>10} | "
                  f"{t['nodx/fused'] / t['nodx/composed']:9.2f}")
            sys.stdout.flush()
    if "norm_act" in ops_wanted:
        t = bench_norm_act(reps, rng)
        print("\nLayerNorm [1024, 384] and exact GELU [1024, 1536] (fused F, composed C)")
        print(f"{'op':<22} | {'fwd F':>8} {'fwd C':>8} {'F/C':>5} | {'train F':>8} {'train C':>8} {'F/C':>5}")
        for key, label in (("ln", "LayerNorm"), ("ln+res", "LayerNorm(x + r)"), ("gelu", "GELU (erf)")):
            f, c = t[f"{key}/fwd/fused"], t[f"{key}/fwd/composed"]
            tf, tc = t[f"{key}/train/fused"], t[f"{key}/train/composed"]
            print(f"{label:<22} | {1e3 * f:8.3f} {1e3 * c:8.3f} {f / c:5.2f} | {1e3 * tf:8.3f} {1e3 * tc:8.3f} "
                  f"{tf / tc:5.2f}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
