"""LLaMA LoRA train step with the attention core fused vs composed, measured side by side (interleaved).

    python -m benchmarks.attention_step [--layers 4] [--seq 256] [--reps 5] [--steps-per-rep 2] [--threads 1] [--core-only]

A LLaMA of SmolLM2-135M's block shape (hidden 576, 9 heads, 3 KV heads, head_dim 64, SwiGLU 1536;
random weights, vocabulary 8192, ``--layers`` blocks), LoRA r = 8 on q and v (dropout 0), batch 1 x
``--seq``, Adam, GRAPH mode, float32. ``composed`` sets ``LlamaConfig.attention_backend = 'composed'``
(the MindSpore transposes, rotary broadcasts, repeat_kv, mask add and softmax of ``LlamaAttention``),
``fused`` the fused CPU kernel (``mindpet.kernels.Attention``); both get the same weights and must give
the same first loss. Each is compiled and warmed up, then they run in interleaved repetitions (order
rotating); the table shows median CPU seconds (``time.process_time``, all threads) and wall seconds per
step and the ratio. ``--threads``: MindSpore's and mindpet's CPU threads (MINDPET_NUM_THREADS).
``--core-only``: the attention core alone (``mindpet.kernels.Attention``, batch 1 x ``--seq``, SmolLM2's
heads), forward and forward + backward (dq, dk, dv), interleaved the same way."""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from typing import Sequence

import numpy as np


def build_step(config, backend: str, params=None):
    """``(TrainOneStepCell, net)`` of the LoRA LLaMA with the attention core on ``backend``."""
    import mindspore as ms
    from mindspore import nn
    from mindpet.delta import LoRADense
    from mindpet.graph import freeze_delta
    from benchmarks.lib.lm_training import mean_loss_cell
    from benchmarks.models.llama import LlamaLM, default_dense

    def factory(*, role, layer, in_channels, out_channels):
        if role not in ("q", "v"):
            return default_dense(role=role, layer=layer, in_channels=in_channels, out_channels=out_channels)
        return LoRADense(in_channels, out_channels, lora_rank=8, lora_alpha=16.0, lora_dropout=0.0, has_bias=False,
                         param_init_type=ms.float32, compute_dtype=ms.float32)

    ms.set_seed(0)
    net = LlamaLM(dataclasses.replace(config, attention_backend=backend), factory)
    if params is not None:
        ms.load_param_into_net(net, params, strict_load=True)
    freeze_delta(net, "lora")
    step = nn.TrainOneStepCell(mean_loss_cell()(net), nn.Adam(net.trainable_params(), learning_rate=1e-3))
    step.set_train(True)
    return step, net


def _interleaved(cells: dict, args, *inputs) -> dict:
    """Median CPU seconds per call of each cell, interleaved reps (order rotating)."""
    samples = {key: [] for key in cells}
    keys = list(cells)
    for rep in range(args.reps):
        for key in keys[rep % len(keys):] + keys[:rep % len(keys)]:
            c0 = time.process_time()
            for _ in range(args.steps_per_rep):
                out = cells[key](*inputs)
                (out[0] if isinstance(out, tuple) else out).asnumpy()
            samples[key].append((time.process_time() - c0) / args.steps_per_rep)
    return {key: statistics.median(values) for key, values in samples.items()}


def core_only(args) -> int:
    """The attention core alone, fused vs composed, forward and forward + backward."""
    from mindspore import Tensor, nn, ops
    from mindpet.kernels import Attention

    heads, kv_heads, head_dim, length = 9, 3, 64, args.seq
    rng = np.random.default_rng(0)
    q = Tensor(rng.standard_normal((1, length, heads * head_dim)).astype(np.float32))
    k = Tensor(rng.standard_normal((1, length, kv_heads * head_dim)).astype(np.float32))
    v = Tensor(rng.standard_normal((1, length, kv_heads * head_dim)).astype(np.float32))
    angles = rng.standard_normal((length, head_dim)).astype(np.float32)
    cos, sin = Tensor(np.cos(angles)), Tensor(np.sin(angles))

    class Grads(nn.Cell):
        def __init__(self, op):
            super().__init__()
            self.op = op
            self.grad = ops.GradOperation(get_all=True)

        def construct(self, *inputs):
            return self.grad(self.op)(*inputs)

    cells = {}
    for backend in ("composed", "fused"):
        op = Attention(heads, head_dim, kv_heads, backend=backend)
        cells[f"{backend} forward"] = op
        cells[f"{backend} forward+backward"] = Grads(op)
    for cell in cells.values():
        cell(q, k, v, cos, sin)
    times = _interleaved(cells, args, q, k, v, cos, sin)
    print(f"attention core, batch 1 x {length}, 9 heads, 3 KV heads, head_dim 64, {args.threads} thread(s); "
          f"median CPU ms of {args.reps} interleaved reps x {args.steps_per_rep} calls")
    for part in ("forward", "forward+backward"):
        c, f = times[f"composed {part}"], times[f"fused {part}"]
        print(f"{part:<17} | composed {c * 1e3:8.2f} | fused {f * 1e3:8.2f} | fused/composed {f / c:.2f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attention_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (median)")
    parser.add_argument("--steps-per-rep", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--core-only", action="store_true", help="time the attention core alone")
    args = parser.parse_args(argv)
    os.environ["MINDPET_NUM_THREADS"] = str(args.threads)
    import mindspore as ms
    from mindspore import Tensor
    from benchmarks.models.llama import LlamaConfig
    from benchmarks.peer.ms_side import configure_threads

    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    configure_threads(args.threads)
    if args.core_only:
        return core_only(args)
    config = LlamaConfig(vocab_size=8192, hidden_size=576, intermediate_size=1536, num_layers=args.layers,
                         num_heads=9, num_kv_heads=3, max_positions=args.seq)
    ids = Tensor(np.random.default_rng(0).integers(0, config.vocab_size, (1, args.seq)).astype(np.int32))
    steps, first_loss = {}, {}
    params = None
    for backend in ("composed", "fused"):
        start = time.perf_counter()
        step, net = build_step(config, backend, params)
        if params is None:
            params = {p.name: p.clone() for p in net.get_parameters()}
        first_loss[backend] = float(step(ids).asnumpy())
        step(ids)
        print(f"{backend}: built, compiled and warmed up in {time.perf_counter() - start:.1f} s; "
              f"first loss {first_loss[backend]:.6f}", flush=True)
        steps[backend] = step
    cpu = {key: [] for key in steps}
    wall = {key: [] for key in steps}
    keys = list(steps)
    for rep in range(args.reps):
        for key in keys[rep % len(keys):] + keys[:rep % len(keys)]:
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(args.steps_per_rep):
                steps[key](ids).asnumpy()
            cpu[key].append((time.process_time() - c0) / args.steps_per_rep)
            wall[key].append((time.perf_counter() - w0) / args.steps_per_rep)
    print(f"\nLLaMA LoRA step ({args.layers} SmolLM2-shaped blocks, batch 1 x {args.seq}, {args.threads} thread(s)); "
          f"median of {args.reps} interleaved reps x {args.steps_per_rep} steps")
    print(f"{'':<10} | {'composed':>9} {'fused':>9} {'fused/composed':>15} | per-rep ratio min..max")
    for name, samples in (("CPU s", cpu), ("wall s", wall)):
        c, f = statistics.median(samples["composed"]), statistics.median(samples["fused"])
        ratios = [b / a for a, b in zip(samples["composed"], samples["fused"])]
        print(f"{name:<10} | {c:9.3f} {f:9.3f} {f / c:15.2f} | {min(ratios):.2f}..{max(ratios):.2f}")
    print(f"first loss composed {first_loss['composed']:.6f}, fused {first_loss['fused']:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
