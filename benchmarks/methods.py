"""Delta-tuning methods for the benchmark jobs: which dense layers change and what ``freeze_delta`` keeps."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import mindspore as ms
from mindspore import nn

from benchmarks.models.bert import DenseFactory, default_dense


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the attention ``targets`` (roles of :mod:`benchmarks.models.bert`), as in the LoRA paper."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    targets: Sequence[str] = field(default=("query", "value"))

    @property
    def freeze_mode(self) -> str:
        return "lora"

    def dense_factory(self) -> DenseFactory:
        """Builds ``LoRADense`` (float32 compute) for target roles and the plain Dense elsewhere."""
        from mindpet.delta import LoRADense

        def make(*, role: str, layer: int, in_channels: int, out_channels: int) -> nn.Cell:
            if role not in self.targets:
                return default_dense(role=role, layer=layer, in_channels=in_channels, out_channels=out_channels)
            return LoRADense(in_channels, out_channels, lora_rank=self.rank, lora_alpha=self.alpha,
                             lora_dropout=float(self.dropout), param_init_type=ms.float32,
                             compute_dtype=ms.float32)

        return make

    def describe(self) -> dict:
        return {"method": "lora", "rank": self.rank, "alpha": self.alpha, "dropout": self.dropout,
                "targets": list(self.targets)}


METHODS = {"lora": LoraSettings}


def method_from_description(description: dict):
    """Rebuild a method from its :meth:`describe` dictionary (e.g. in another process)."""
    values = dict(description)
    kind = values.pop("method")
    if kind not in METHODS:
        raise ValueError(f"unknown method {kind!r}; known: {sorted(METHODS)}")
    return METHODS[kind](**values)
