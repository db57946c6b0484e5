"""Tokenised classification tasks: the data a benchmark job trains and evaluates on."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.data.tokenize import EncodedBatch


@dataclass(frozen=True)
class LabelledTokens:
    tokens: EncodedBatch
    labels: np.ndarray

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.labels):
            raise ValueError(f"{len(self.tokens)} token rows but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ClassificationTask:
    name: str
    classes: tuple[str, ...]
    train: LabelledTokens
    test: LabelledTokens

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        return {"name": self.name, "classes": list(self.classes), "train": len(self.train), "test": len(self.test),
                "max_length": int(self.train.tokens.input_ids.shape[1])}


def bbc_headlines_task(tokenizer_path: Path, max_length: int = 32, test_fraction: float = 0.2,
                       seed: int = 0) -> ClassificationTask:
    """BBC News headlines (de-duplicated, fixed stratified split) tokenised to ``max_length``."""
    from benchmarks.data.bbc import load_headlines
    from benchmarks.data.tokenize import encode, load_tokenizer

    split = load_headlines(test_fraction=test_fraction, seed=seed)
    tokenizer = load_tokenizer(tokenizer_path, max_length)
    return ClassificationTask(
        name="bbc_headlines",
        classes=split.train.classes,
        train=LabelledTokens(encode(tokenizer, split.train.texts), split.train.labels),
        test=LabelledTokens(encode(tokenizer, split.test.texts), split.test.labels),
    )
