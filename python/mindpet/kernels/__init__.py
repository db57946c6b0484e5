"""Fused ops of mindpet and their backends.

Three ops, each with a contract (``ops/CONTRACTS.md``) and three implementations selected in
:mod:`mindpet.kernels.backend`: ``composed`` (MindSpore primitives, :mod:`mindpet.kernels.composed`),
``cpu`` (C++ kernels through ``ops.Custom(func_type='aot')``) and ``ascend`` (Ascend C kernels).

Cells for layers (GRAPH and PYNATIVE): :class:`LoraLinear`, :class:`Adapter`, :class:`LowRankAdapter`.
Functions (PYNATIVE): :func:`lora_linear`, :func:`adapter`, :func:`low_rank_adapter`.
"""
from mindpet.kernels.backend import (CHOICES, ENV_VAR, FusedBackendUnavailable, get_backend, resolve,
                                     set_backend)
from mindpet.kernels.composed import adapter_composed, lora_linear_composed, low_rank_adapter_composed
from mindpet.kernels.adapter import Adapter, LowRankAdapter, adapter, low_rank_adapter
from mindpet.kernels.lora_linear import LoraLinear, lora_linear

__all__ = [
    "CHOICES", "ENV_VAR", "FusedBackendUnavailable", "get_backend", "resolve", "set_backend",
    "lora_linear_composed", "adapter_composed", "low_rank_adapter_composed",
    "LoraLinear", "lora_linear", "Adapter", "adapter", "LowRankAdapter", "low_rank_adapter",
]
