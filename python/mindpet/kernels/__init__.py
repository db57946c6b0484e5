"""Fused ops of mindpet and their backends.

Five ops, each with a contract (``ops/CONTRACTS.md``) and three implementations selected in
:mod:`mindpet.kernels.backend`: ``composed`` (MindSpore primitives, :mod:`mindpet.kernels.composed`),
``cpu`` (C++ kernels through ``ops.Custom(func_type='aot')``) and ``ascend`` (Ascend C kernels).

Cells for layers (GRAPH and PYNATIVE): :class:`LoraLinear`, :class:`Adapter`, :class:`LowRankAdapter`,
:class:`Activation` (elementwise, e.g. exact GELU) and :class:`LayerNorm` (with an optional fused
residual add; CPU kernels only, composed elsewhere). All but :class:`LayerNorm` hold no parameters: a layer keeps its own parameters and passes them (cast to one dtype) at
each call, so parameter names and checkpoints do not depend on the backend. Functions (PYNATIVE
only): :func:`lora_linear`, :func:`adapter`, :func:`low_rank_adapter`, :func:`activation`,
:func:`layer_norm`. :class:`LayerNorm` is a drop-in for ``nn.LayerNorm((D,), epsilon=...)`` and owns
``gamma``/``beta`` under the same names.

Use from a layer (sketch)::

    # __init__: resolve once; the layer owns the Dropout primitive (seeds, shard strategy) and the mask
    self.lora_kernel = LoraLinear(lora_alpha / lora_rank, has_bias=has_bias, backend=backend)
    # construct, x2d: [M, in] in the compute dtype, weights cast to it
    mask = None
    if self.training and p > 0.0:
        mask, _ = self.lora_dropout(ones_like(x2d))      # 0 or 1/(1-p)
    # base_frozen: True only when run eagerly with a frozen weight and bias (compiled: False)
    y2d = self.lora_kernel(x2d, weight, bias_or_None, lora_a, lora_b, mask, base_frozen)

    self.adapter_kernel = Adapter(non_linearity, backend=backend)           # y = h + adapter(h)
    y2d = self.adapter_kernel(h2d, w_down, b_down, w_up, b_up)
    self.lra_kernel = LowRankAdapter(non_linearity, backend=backend)
    y2d = self.lra_kernel(h2d, down_left, down_right, b_down, up_left, up_right, b_up)
"""
from mindpet.kernels.backend import (CHOICES, ENV_VAR, FusedBackendUnavailable, get_backend, resolve,
                                     set_backend)
from mindpet.kernels.composed import (adapter_composed, layer_norm_composed, lora_linear_composed,
                                      low_rank_adapter_composed)
from mindpet.kernels.adapter import Adapter, LowRankAdapter, adapter, low_rank_adapter
from mindpet.kernels.elementwise import Activation, activation
from mindpet.kernels.lora_linear import LoraLinear, lora_linear
from mindpet.kernels.norm import LayerNorm, layer_norm

__all__ = [
    "CHOICES", "ENV_VAR", "FusedBackendUnavailable", "get_backend", "resolve", "set_backend",
    "lora_linear_composed", "adapter_composed", "low_rank_adapter_composed",
    "layer_norm_composed",
    "LoraLinear", "lora_linear", "Adapter", "adapter", "LowRankAdapter", "low_rank_adapter",
    "Activation", "activation", "LayerNorm", "layer_norm",
]
