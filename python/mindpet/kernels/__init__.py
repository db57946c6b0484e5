"""Fused ops of mindpet and their backends.

Five ops (and two for LLaMA blocks, below), each with a contract (``ops/CONTRACTS.md``; the Python table
:mod:`mindpet.kernels.contracts`)
and three implementations, selected in one place (:func:`mindpet.kernels.backend.select`, giving a
:class:`Selection`): ``composed`` (MindSpore primitives, one function per op in
:mod:`mindpet.kernels.composed`, which the layers run with their own primitives), ``cpu`` (C++ kernels
through ``ops.Custom(func_type='aot')``) and ``ascend`` (Ascend C kernels). Every op Cell is a
:class:`FusedOp`, which holds the selection and the dtype rule (float32/float16 fused; other dtypes
composed under ``auto``, TypeError under ``fused``).

Cells for layers (GRAPH and PYNATIVE): :class:`LoraLinear`, :class:`Adapter`, :class:`LowRankAdapter`,
:class:`Activation` (elementwise, e.g. exact GELU) and :class:`LayerNorm` (with an optional fused
residual add; CPU kernels only, composed elsewhere). All but :class:`LayerNorm` hold no parameters: a layer keeps its own parameters and passes them (cast to one dtype) at
each call, so parameter names and checkpoints do not depend on the backend. Functions (PYNATIVE
only): :func:`lora_linear`, :func:`adapter`, :func:`low_rank_adapter`, :func:`activation`,
:func:`layer_norm`. :class:`QuantLoraLinear` runs ``lora_linear`` on a quantised frozen base weight
(CPU kernels; composed elsewhere). :class:`LayerNorm` is a drop-in for ``nn.LayerNorm((D,), epsilon=...)`` and owns
``gamma``/``beta`` under the same names.

For LLaMA-family blocks (CPU kernels only, composed elsewhere; ``ops/CONTRACTS.md`` 7-8): :class:`RMSNorm`
(parameter ``weight``; with a residual it returns ``(norm(x + r), x + r)`` from one op) and :class:`SwiGLU`
(``silu(gate) * up``), functions :func:`rms_norm`, :func:`swiglu`.

:class:`DropoutMask` (:func:`dropout_mask`; CPU kernel only, ``ops/CONTRACTS.md`` 10) draws a dropout mask
from a counter hash of the seed and offset of MindSpore's default generator: the LoRA layers' mask on the
fused CPU backend, so that each layer of a shared (``lazy_inline``) block graph draws its own. The layers pass
the fused ops its key instead (:class:`DropoutKey`, :func:`dropout_key`), which generate the same mask inside
the kernel and keep none.

Use from a layer (sketch)::

    # __init__: select once (the layer's .backend reads kernel.impl); the layer owns its primitives,
    # among them the Dropout (seeds, shard strategy) that draws the mask
    self.kernel = LoraLinear(lora_alpha / lora_rank, has_bias=has_bias, backend=backend, dtype=compute_dtype)
    # construct, x2d: [M, in] in the compute dtype, weights cast to it
    if self.kernel.fused:
        mask = None
        if self.training and p > 0.0:
            mask, _ = self.lora_dropout(ones_like(x2d))  # 0 or 1/(1-p)
        # base_frozen: True only when run eagerly with a frozen weight and bias (compiled: False)
        y2d = self.kernel(x2d, weight, bias_or_None, lora_a, lora_b, mask, base_frozen)
    else:  # the same op composed, through the layer's primitives (shard strategies apply)
        y2d = lora_linear_composed(x2d, weight, bias_or_None, lora_a, lora_b, scale, x_d=self.lora_dropout(x2d)[0],
                                   matmul=self.matmul, ...)
    # kernel.use_composed(reason) after shard (the fused op carries no strategies)

    self.kernel = Adapter(non_linearity, backend=backend)           # y = h + adapter(h)
    y2d = self.kernel(h2d, w_down, b_down, w_up, b_up)
    self.kernel = LowRankAdapter(non_linearity, backend=backend)
    y2d = self.kernel(h2d, down_left, down_right, b_down, up_left, up_right, b_up)
"""
from mindpet.kernels.backend import (CHOICES, ENV_VAR, FUSED_DTYPES, FusedBackendUnavailable, Selection, get_backend,
                                     resolve, select, set_backend)
from mindpet.kernels.composed import (adapter_composed, dense_composed, dequantize_composed, layer_norm_composed,
                                      lora_linear_composed, low_rank_adapter_composed, quant_lora_linear_composed)
from mindpet.kernels.composed import rms_norm_composed, swiglu_composed
from mindpet.kernels.fused_op import FusedOp
from mindpet.kernels.adapter import Adapter, LowRankAdapter, adapter, low_rank_adapter
from mindpet.kernels.elementwise import Activation, activation
from mindpet.kernels.elementwise import SwiGLU, swiglu
from mindpet.kernels.lora_linear import LoraLinear, lora_linear
from mindpet.kernels.norm import LayerNorm, layer_norm
from mindpet.kernels.quant_linear import QuantLoraLinear
from mindpet.kernels.attention import Attention, attention_composed
from mindpet.kernels.norm import RMSNorm, rms_norm
from mindpet.kernels.dropout import DropoutKey, DropoutMask, dropout_key, dropout_mask, generator_state

__all__ = [
    "CHOICES", "ENV_VAR", "FUSED_DTYPES", "FusedBackendUnavailable", "Selection", "get_backend", "resolve", "select",
    "set_backend", "FusedOp",
    "dense_composed", "lora_linear_composed", "adapter_composed", "low_rank_adapter_composed",
    "layer_norm_composed",
    "LoraLinear", "lora_linear", "Adapter", "adapter", "LowRankAdapter", "low_rank_adapter",
    "Activation", "activation", "LayerNorm", "layer_norm",
    "QuantLoraLinear", "dequantize_composed", "quant_lora_linear_composed",
    "Attention", "attention_composed",
    "rms_norm_composed", "swiglu_composed", "RMSNorm", "rms_norm", "SwiGLU", "swiglu",
    "DropoutMask", "DropoutKey", "dropout_mask", "dropout_key", "generator_state",
]
