"""Delta layers: the trainable additions of each delta-tuning algorithm."""
from mindpet.delta.lora import LoRADense

__all__ = ["LoRADense"]
from mindpet.delta.adapter import AdapterDense, AdapterLayer
from mindpet.delta.low_rank_adapter import LowRankAdapterDense, LowRankAdapterLayer

__all__ += ["AdapterDense", "AdapterLayer", "LowRankAdapterDense", "LowRankAdapterLayer"]
from mindpet.delta.prefix_layer import PrefixLayer
from mindpet.delta.prefix_attention import PrefixEncoder, extend_attention_mask
from mindpet.delta.prompt_tuning import PromptTuning, prepend_prompt
from mindpet.delta.r_drop import RDropLoss, rdrop_repeat

__all__ += ["PrefixLayer", "PrefixEncoder", "extend_attention_mask", "PromptTuning", "prepend_prompt",
            "RDropLoss", "rdrop_repeat"]
