"""What both sides of the peer benchmark share: the cases, the model set-up, the batch, and the weights that
are not in the pre-trained file (the classification head and the LoRA matrices), drawn once with numpy so
both frameworks start from identical numbers. Imports numpy only."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

CASES = ("forward", "lora_forward", "full_step", "lora_step")
CASE_LABELS = {
    "forward": "forward (eval, no grad)",
    "lora_forward": "forward of the LoRA model",
    "full_step": "full fine-tuning step",
    "lora_step": "LoRA step",
}
SIDES = ("ours", "theirs")
SIDE_LABELS = {"ours": "MindSpore + mindpet", "theirs": "PyTorch + PEFT"}
BATCH_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels")


@dataclass(frozen=True)
class ModelSetup:
    """Everything a worker needs to build its four models (JSON-able, sent to both workers)."""

    model_dir: str
    """Directory with the HF ``config.json`` and ``model.safetensors``."""
    batch_path: str
    """``.npz`` with int32 ``input_ids``, ``attention_mask``, ``token_type_ids`` [B, L] and ``labels`` [B]."""
    num_classes: int
    seed: int = 0
    rank: int = 8
    alpha: float = 16.0
    lora_dropout: float = 0.1
    targets: Sequence[str] = field(default=("query", "value"))
    lr_full: float = 1e-4
    lr_lora: float = 2e-3
    warmup: int = 2
    """Untimed calls of every case after building (the first MindSpore call compiles the graph)."""

    def to_json(self) -> dict:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d

    @classmethod
    def from_json(cls, values: dict) -> "ModelSetup":
        values = dict(values)
        values["targets"] = tuple(values.get("targets", ("query", "value")))
        return cls(**values)

    def config(self) -> dict:
        return json.loads((Path(self.model_dir) / "config.json").read_text(encoding="utf-8"))


def extra_weights(config: dict, setup: ModelSetup) -> dict:
    """Head and LoRA weights, identical on both sides: ``{"head_weight" [C, H], "head_bias" [C],
    "lora": {(layer, target): (A [r, H], B [H, r])}}``, float32. B is non-zero (unlike a fresh LoRA) so the
    logit comparison also checks the LoRA branch and its scaling ``alpha / r``."""
    rng = np.random.default_rng(setup.seed)
    h = int(config["hidden_size"])
    out = {
        "head_weight": rng.normal(0.0, 1.0 / math.sqrt(h), (setup.num_classes, h)).astype(np.float32),
        "head_bias": rng.normal(0.0, 0.1, (setup.num_classes,)).astype(np.float32),
        "lora": {},
    }
    for layer in range(int(config["num_hidden_layers"])):
        for target in setup.targets:
            a = rng.normal(0.0, 1.0 / math.sqrt(h), (setup.rank, h)).astype(np.float32)
            b = rng.normal(0.0, 0.05, (h, setup.rank)).astype(np.float32)
            out["lora"][(layer, target)] = (a, b)
    return out


def save_batch(path: Path, batch: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: np.ascontiguousarray(batch[k], dtype=np.int32) for k in BATCH_KEYS})
    return path


def load_batch(path: str | Path) -> dict:
    with np.load(path) as z:
        return {k: np.ascontiguousarray(z[k], dtype=np.int32) for k in BATCH_KEYS}


def synthetic_batch(vocab_size: int, batch_size: int, length: int, num_classes: int, seed: int = 0) -> dict:
    """Random token ids with [CLS]-like id 1 first and a different amount of padding (id 0) per row."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, vocab_size, size=(batch_size, length)).astype(np.int32)
    ids[:, 0] = 1
    lengths = rng.integers(max(2, length // 3), length + 1, size=batch_size)
    mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
    ids *= mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
            "labels": rng.integers(0, num_classes, size=batch_size).astype(np.int32)}


def bbc_batch(batch_size: int, max_length: int) -> tuple[dict, int]:
    """The first ``batch_size`` training headlines of the BBC task (the suite's split), and the class count."""
    from benchmarks.lib.assets import minilm_dir
    from benchmarks.lib.tasks import bbc_headlines_task

    task = bbc_headlines_task(minilm_dir() / "tokenizer.json", max_length=max_length)
    if len(task.train) < batch_size:
        raise ValueError(f"batch size {batch_size} exceeds the {len(task.train)} training headlines")
    t = task.train.tokens
    rows = np.arange(batch_size)
    return ({"input_ids": t.input_ids[rows], "attention_mask": t.attention_mask[rows],
             "token_type_ids": t.token_type_ids[rows], "labels": task.train.labels[rows]}, task.num_classes)
