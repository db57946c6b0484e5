"""Delta layers: the trainable additions of each delta-tuning algorithm."""
from mindpet.delta.lora import LoRADense

__all__ = ["LoRADense"]
from mindpet.delta.adapter import AdapterDense, AdapterLayer
from mindpet.delta.low_rank_adapter import LowRankAdapterDense, LowRankAdapterLayer

__all__ += ["AdapterDense", "AdapterLayer", "LowRankAdapterDense", "LowRankAdapterLayer"]
