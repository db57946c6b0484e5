"""Fine-tuning methods of the benchmark jobs: how the classifier is built and what ``freeze_delta`` keeps.

Every method has ``freeze_mode`` (None = train everything), ``dense_factory()`` (the encoder's denses),
``build(config, num_classes)`` (the classifier; prefix and prompt swap the encoder) and ``describe()``
(a JSON dictionary from which :func:`method_from_description` rebuilds it in another process).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import mindspore as ms
from mindspore import nn

from benchmarks.models.bert import (BertClassifier, BertConfig, DenseFactory, PrefixBertEncoder,
                                    PromptBertEncoder, default_dense)


class _Method:
    """Shared behaviour: plain encoder built from ``dense_factory``; ``describe`` from the dataclass fields."""

    kind = ""
    freeze_mode: str | None = None

    def dense_factory(self) -> DenseFactory:
        return default_dense

    def build(self, config: BertConfig, num_classes: int) -> BertClassifier:
        return BertClassifier(config, num_classes, self.dense_factory())

    def describe(self) -> dict:
        values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
        return {"method": self.kind, **values}

    def hyperparameters(self) -> str:
        """Short text for the tables."""
        return ", ".join(f"{k}={'/'.join(v) if isinstance(v, (list, tuple)) else v}"
                         for k, v in asdict(self).items()) or "-"


def _factory_for(targets: Sequence[str], make) -> DenseFactory:
    def factory(*, role: str, layer: int, in_channels: int, out_channels: int) -> nn.Cell:
        if role not in targets:
            return default_dense(role=role, layer=layer, in_channels=in_channels, out_channels=out_channels)
        return make(in_channels, out_channels)

    return factory


@dataclass(frozen=True)
class FullSettings(_Method):
    """Full fine-tuning: every parameter trains (no ``freeze_delta``)."""

    kind = "full"


@dataclass(frozen=True)
class LoraSettings(_Method):
    """LoRA on the attention ``targets`` (roles of :mod:`benchmarks.models.bert`), as in the LoRA paper."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    targets: Sequence[str] = field(default=("query", "value"))
    kind = "lora"
    freeze_mode = "lora"

    def dense_factory(self) -> DenseFactory:
        """Builds ``LoRADense`` (float32 compute) for target roles and the plain Dense elsewhere."""
        from mindpet.delta import LoRADense

        return _factory_for(self.targets, lambda i, o: LoRADense(
            i, o, lora_rank=self.rank, lora_alpha=self.alpha, lora_dropout=float(self.dropout),
            param_init_type=ms.float32, compute_dtype=ms.float32))


@dataclass(frozen=True)
class AdapterSettings(_Method):
    """Bottleneck adapter (``AdapterDense``) after the dense layers of ``targets`` (default: the FFN output,
    one adapter per layer as in Pfeiffer et al.; adding ``attention_output`` gives Houlsby's two)."""

    bottleneck: int = 64
    targets: Sequence[str] = field(default=("output",))
    kind = "adapter"
    freeze_mode = "adapter"

    def dense_factory(self) -> DenseFactory:
        from mindpet.delta import AdapterDense

        return _factory_for(self.targets, lambda i, o: AdapterDense(
            i, o, bottleneck_size=self.bottleneck, param_init_type=ms.float32, compute_dtype=ms.float32))


@dataclass(frozen=True)
class LowRankAdapterSettings(_Method):
    """Low-rank adapter (Compacter-style, ``LowRankAdapterDense``): bottleneck ``hidden / reduction_factor``,
    each projection a rank-``rank`` product; after the attention output and FFN output denses."""

    reduction_factor: int = 32
    rank: int = 1
    targets: Sequence[str] = field(default=("attention_output", "output"))
    kind = "low_rank_adapter"
    freeze_mode = "low_rank_adapter"

    def dense_factory(self) -> DenseFactory:
        from mindpet.delta import LowRankAdapterDense

        return _factory_for(self.targets, lambda i, o: LowRankAdapterDense(
            i, o, reduction_factor=self.reduction_factor, low_rank_size=self.rank, param_init_type=ms.float32,
            compute_dtype=ms.float32))


@dataclass(frozen=True)
class BitFitSettings(_Method):
    """BitFit: only the biases (dense ``bias`` and LayerNorm ``beta``) train."""

    kind = "bitfit"
    freeze_mode = "bitfit"


@dataclass(frozen=True)
class PrefixSettings(_Method):
    """Prefix-tuning: ``prefix_len`` key/value positions per layer from ``PrefixEncoder`` (an MLP of width
    ``mid_dim`` over a ``prefix_len`` x hidden embedding, as in Li & Liang)."""

    prefix_len: int = 10
    mid_dim: int = 128
    kind = "prefix"
    freeze_mode = "prefix"

    def build(self, config: BertConfig, num_classes: int) -> BertClassifier:
        encoder = PrefixBertEncoder(config, default_dense, prefix_len=self.prefix_len, mid_dim=self.mid_dim)
        return BertClassifier(config, num_classes, encoder=encoder)


@dataclass(frozen=True)
class PromptSettings(_Method):
    """Prompt-tuning: ``num_virtual_tokens`` trainable vectors in front of the token embeddings."""

    num_virtual_tokens: int = 20
    kind = "prompt"
    freeze_mode = "prompttuning"

    def build(self, config: BertConfig, num_classes: int) -> BertClassifier:
        encoder = PromptBertEncoder(config, default_dense, num_virtual_tokens=self.num_virtual_tokens)
        return BertClassifier(config, num_classes, encoder=encoder)


METHODS = {cls.kind: cls for cls in (FullSettings, LoraSettings, AdapterSettings, LowRankAdapterSettings,
                                     BitFitSettings, PrefixSettings, PromptSettings)}


def method_from_description(description: dict):
    """Rebuild a method from its :meth:`describe` dictionary (e.g. in another process)."""
    values = dict(description)
    kind = values.pop("method")
    if kind not in METHODS:
        raise ValueError(f"unknown method {kind!r}; known: {sorted(METHODS)}")
    return METHODS[kind](**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
