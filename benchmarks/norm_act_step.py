"""MiniLM train step with the LayerNorms and exact GELU fused vs composed, measured side by side.

    python -m benchmarks.norm_act_step [--reps 5] [--steps-per-rep 3] [--methods lora,full]

all-MiniLM-L6-v2 (pre-trained weights) + classifier head, batch 32 x 32 tokens, GRAPH mode, float32,
Adam, dropout on. ``composed`` builds the model with ``benchmarks.models.bert.KERNEL_BACKEND =
'composed'`` (MindSpore ``LayerNorm`` and ``0.5 x (1 + erf(x / sqrt 2))``, i.e. the model before the
fused ops); ``fused`` with ``'auto'`` (fused CPU kernels). Everything else (LoRA kernels, denses,
attention) is identical. Each variant is compiled and warmed up, then the variants run in interleaved
repetitions (order rotating); the table shows the median seconds per step and the ratio. Also
checks that the two models give the same sentence embeddings (eval mode) on the same weights.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Sequence

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from benchmarks.lib.assets import AssetMissing, minilm_dir
from benchmarks.lib.finetune import PretrainedBert, apply_freeze, build_classifier
from benchmarks.lib.methods import FullSettings, LoraSettings
from benchmarks.models import bert as bert_model
from benchmarks.lib.training import ClassifierLoss


def _batch(batch: int, length: int, vocab: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, size=(batch, length)).astype(np.int32)
    mask = np.ones_like(ids)
    for i in range(batch):  # some padding, as in real batches
        mask[i, rng.integers(length // 2, length + 1):] = 0
    return (Tensor(ids), Tensor(mask), Tensor(np.zeros_like(ids)),
            Tensor(rng.integers(0, classes, size=batch).astype(np.int32)))


def build_step(pretrained: PretrainedBert, method, backend: str, classes: int) -> nn.Cell:
    """A ``TrainOneStepCell`` (Adam) of the classifier built with ``KERNEL_BACKEND = backend``."""
    bert_model.KERNEL_BACKEND = backend
    try:
        ms.set_seed(0)
        net = build_classifier(pretrained, classes, method)
    finally:
        bert_model.KERNEL_BACKEND = None
    apply_freeze(net, method)
    step = nn.TrainOneStepCell(ClassifierLoss(net), nn.Adam(net.trainable_params(), learning_rate=1e-4))
    step.set_train(True)
    return step


def embedding_difference(pretrained: PretrainedBert, batch) -> float:
    """max |embedding(fused) - embedding(composed)| in eval mode, same pre-trained weights."""
    from benchmarks.models.hf_weights import load_hf_weights  # pylint: disable=import-outside-toplevel
    outs = []
    for backend in ("composed", "auto"):
        bert_model.KERNEL_BACKEND = backend
        try:
            net = bert_model.SentenceEmbedder(pretrained.config)
        finally:
            bert_model.KERNEL_BACKEND = None
        load_hf_weights(net, pretrained.weights)
        net.set_train(False)
        outs.append(net(*batch[:3]).asnumpy())
    return float(np.abs(outs[0] - outs[1]).max())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.norm_act_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (median)")
    parser.add_argument("--steps-per-rep", type=int, default=3)
    parser.add_argument("--methods", default="lora,full")
    args = parser.parse_args(argv)
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    try:
        pretrained = PretrainedBert.from_dir(minilm_dir(), name="all-MiniLM-L6-v2")
    except AssetMissing as err:
        print(err, file=sys.stderr)
        return 2
    classes = 5
    batch = _batch(32, 32, pretrained.config.vocab_size, classes)
    print(f"max |sentence embedding fused - composed| (eval, MiniLM weights): "
          f"{embedding_difference(pretrained, batch):.2e}")
    methods = {"lora": LoraSettings(), "full": FullSettings()}
    steps = {}
    for name in args.methods.split(","):
        for backend in ("composed", "fused"):
            start = time.perf_counter()
            step = build_step(pretrained, methods[name], "composed" if backend == "composed" else "auto", classes)
            step(*batch)  # compile
            step(*batch)
            print(f"{name}/{backend}: built, compiled and warmed up in {time.perf_counter() - start:.1f} s")
            sys.stdout.flush()
            steps[f"{name}/{backend}"] = step
    samples = {key: [] for key in steps}
    keys = list(steps)
    for rep in range(args.reps):
        for key in keys[rep % len(keys):] + keys[:rep % len(keys)]:
            start = time.perf_counter()
            for _ in range(args.steps_per_rep):
                steps[key](*batch)
            samples[key].append((time.perf_counter() - start) / args.steps_per_rep)
    print(f"\nMiniLM train step, batch 32 x 32, GRAPH float32; median of {args.reps} interleaved reps x "
          f"{args.steps_per_rep} steps (s/step)")
    print(f"{'method':<6} | {'composed':>9} {'fused':>9} {'fused/composed':>15} | per-rep ratio min..max")
    for name in args.methods.split(","):
        cs, fs = samples[f"{name}/composed"], samples[f"{name}/fused"]
        c, f = statistics.median(cs), statistics.median(fs)
        ratios = [b / a for a, b in zip(cs, fs)]
        print(f"{name:<6} | {c:9.3f} {f:9.3f} {f / c:15.2f} | {min(ratios):.2f}..{max(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
