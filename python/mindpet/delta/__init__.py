"""Delta layers: the trainable additions of each delta-tuning algorithm."""
from mindpet.delta.lora import LoRADense

__all__ = ["LoRADense"]
