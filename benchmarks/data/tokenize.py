"""Fixed-length BERT inputs from a HuggingFace ``tokenizer.json`` (the ``tokenizers`` library)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Tokenizer


@dataclass(frozen=True)
class EncodedBatch:
    """Token ids, attention mask (1 = real token) and token type ids, each int32 ``[n, max_length]``."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def take(self, index: np.ndarray) -> "EncodedBatch":
        return EncodedBatch(self.input_ids[index], self.attention_mask[index], self.token_type_ids[index])


def load_tokenizer(path: str | Path, max_length: int) -> Tokenizer:
    """The tokenizer of ``path`` set to truncate and pad every text to exactly ``max_length`` tokens."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_length)
    pad_id = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_padding(length=max_length, pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
    return tokenizer


def encode(tokenizer: Tokenizer, texts: Sequence[str]) -> EncodedBatch:
    """Encode ``texts`` (special tokens added) with a tokenizer prepared by :func:`load_tokenizer`."""
    encodings = tokenizer.encode_batch(list(texts))

    def stack(field: str) -> np.ndarray:
        return np.asarray([getattr(e, field) for e in encodings], dtype=np.int32)

    return EncodedBatch(stack("ids"), stack("attention_mask"), stack("type_ids"))
