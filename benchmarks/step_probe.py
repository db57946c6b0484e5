"""Plain and LoRA forward, full fine-tuning step and LoRA step of the benchmark MiniLM, side by side.

    python -m benchmarks.step_probe [label]              # REPS=8 alternating repetitions (environment)
    OMP_WAIT_POLICY=PASSIVE python -m benchmarks.step_probe passive

Our side of the peer benchmark (``benchmarks.peer.ms_side.OursSide``: GRAPH mode, LoRA r=8 alpha=16
dropout 0.1 on query/value with the default kernel backend, Adam) without PyTorch, in this process, so
that environment settings of MindSpore's threads can be compared. Batch: 32 x 32 random token ids in
[1000, 20000), no padding. Prints the medians (ms) and the ratios LoRA forward / plain forward, LoRA step
/ full step, LoRA step / LoRA forward. Needs the offline MiniLM package (``make setup-assets``).
Results: benchmarks/RESULTS.md, "MindSpore CPU threads".
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.assets import minilm_dir
from benchmarks.peer.common import ModelSetup, save_batch
from benchmarks.peer.ms_side import OursSide

BATCH, LENGTH, CLASSES = 32, 32, 5


def probe_batch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(1000, 20000, (BATCH, LENGTH)), "attention_mask": np.ones((BATCH, LENGTH)),
            "token_type_ids": np.zeros((BATCH, LENGTH)), "labels": rng.integers(0, CLASSES, (BATCH,))}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = save_batch(Path(tmp) / "batch.npz", probe_batch())
        side = OursSide(ModelSetup(model_dir=str(minilm_dir()), batch_path=str(path), num_classes=CLASSES))
    for case in side.cases.values():  # compile and warm up
        for _ in range(2):
            case()
    times = {k: [] for k in side.cases}
    for _ in range(int(os.environ.get("REPS", "8"))):
        for k, case in side.cases.items():
            start = time.perf_counter()
            case()
            times[k].append(time.perf_counter() - start)
    m = {k: np.median(v) * 1e3 for k, v in times.items()}
    label = sys.argv[1] if len(sys.argv) > 1 else "run"
    print(f"{label}: " + "  ".join(f"{k} {v:.0f}" for k, v in m.items())
          + f"  | lora_fwd/fwd {m['lora_forward'] / m['forward']:.3f}"
          + f"  lora_step/full {m['lora_step'] / m['full_step']:.3f}"
          + f"  lora_step/lora_fwd {m['lora_step'] / m['lora_forward']:.2f}", flush=True)


if __name__ == "__main__":
    main()
