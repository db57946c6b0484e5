"""mindpet: parameter-efficient fine-tuning (delta tuning) for MindSpore, with fused kernels.

Sub-packages:
    mindpet.delta   the delta layers (LoRA, Prefix-Tuning, Adapter, Low-Rank Adapter, R-Drop, Prompt-Tuning)
    mindpet.graph   freezing by delta mode or wildcard, trainable-only checkpoints, evaluation loading
"""
from mindpet._version import __version__

__all__ = ["__version__"]
