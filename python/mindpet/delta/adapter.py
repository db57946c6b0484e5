"""Adapter (Houlsby et al., 2019): a residual bottleneck inserted after a dense layer.

``AdapterLayer`` computes, for an input ``x`` of shape ``(*, d)`` (``d = hidden_size``,
``k = bottleneck_size``)::

    y = x + act(x W_down^T + b_down) W_up^T + b_up

with ``W_down: (k, d)``, ``b_down: (k,)``, ``W_up: (d, k)``, ``b_up: (d,)``.  ``AdapterDense`` is a
``nn.Dense`` (parameters ``weight: (out, in)`` and ``bias: (out,)``) followed by an ``AdapterLayer``::

    hidden = activation(x W^T + b),    y = AdapterLayer(hidden)

Parameter names: the delta parameters live on the ``AdapterLayer`` as
``mindpet_delta_adapter_{down,up}_{weight,bias}``; inside an ``AdapterDense`` the layer is the
sub-cell ``adapter``, so a path reads ``<model path>.adapter.mindpet_delta_adapter_down_weight``.
``freeze_delta(model, mode='adapter')`` keeps exactly these trainable.

Initialisation: ``W_down`` uses ``HeUniform(negative_slope=sqrt(5))`` (as ``nn.Dense``), and ``b_down``,
``W_up``, ``b_up`` start at zero, so a freshly inserted adapter is the identity (``y == x``) and a
pre-trained model's output is unchanged.  Gradients still flow: ``dL/dW_up = act(.)^T dL/dy`` is
non-zero at the first step, and the down projection learns as soon as ``W_up`` moves.

Precision: parameters are stored in ``param_init_type``; the input and the parameters are cast to
``compute_dtype``, in which the matmuls, bias adds and non-linearities run (fused or composed); the
residual add runs in the input's dtype, so the output has the input's dtype and shape.

Backends: the keyword-only argument ``backend`` (``'auto'``, ``'fused'``, ``'composed'`` or None for the
global choice: ``mindpet.kernels.set_backend``, else ``MINDPET_KERNEL_BACKEND``, else ``'auto'``) selects
how the adapter block runs. With a fused backend, ``x + act(x W_down^T + b_down) W_up^T + b_up`` runs as
the fused ``adapter`` op (``ops/CONTRACTS.md``) in ``compute_dtype`` (float32 or float16), as the composed
path does; when the input has another dtype its residual is replaced by the input itself
(``y = x + (op(h) - h)``, ``h`` the input in ``compute_dtype``), so the residual is still added in the
input's dtype and a fresh adapter is still exactly the identity. Parameters, their names and checkpoints
do not depend on the backend, and results agree within float rounding. Non-linearities without a fused
kernel (see ``mindpet.kernels.activations``) run composed under ``'auto'`` and raise under ``'fused'``;
``shard`` with a strategy switches the layer to composed (the fused op carries no strategies). The implementation that
runs is the read-only property ``backend`` (``'composed'``, ``'cpu'`` or ``'ascend'``). In
``AdapterDense`` only the adapter is fused; the dense part is composed.

``LowRankAdapterDense`` and ``LowRankAdapterLayer`` (module ``low_rank_adapter``) are also importable
from here, as documented (``mindpet.delta.adapter.LowRankAdapterDense``).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Union

import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import HeUniform

from mindpet.delta._adapter_base import AdapterBlock, DenseWithDelta, StrategyType
from mindpet.delta._parameters import InitType, new_parameter
from mindpet.delta._adapter_base import resolve_residual_alias  # noqa: F401  pylint: disable=unused-import
from mindpet.delta._validation import check_positive_int
from mindpet.delta.registry import register_layer
from mindpet.kernels import Adapter
from mindpet.kernels.composed import adapter_composed

__all__ = ["AdapterLayer", "AdapterDense", "LowRankAdapterLayer", "LowRankAdapterDense"]

@register_layer("adapter", ("hidden_size", "bottleneck_size"))
class AdapterLayer(AdapterBlock):
    r"""Adapter bottleneck with a residual connection.

    .. math::
        y = x + \mathrm{act}(x W_{down}^T + b_{down}) W_{up}^T + b_{up}

    Args:
        hidden_size: ``d``, the last dimension of the input (and of the output).
        bottleneck_size: ``k``, the dimension of the down projection. Default: 64.
        non_linearity: name of the activation after the down projection (see
            ``mindspore.nn.get_activation``). Default: ``'gelu'`` (tanh approximation).
        param_init_type: dtype of the parameters, ``mindspore.float32`` or ``mindspore.float16``.
        compute_dtype: dtype of the matmuls, ``mindspore.float16`` (default) or ``mindspore.float32``.
        backend (keyword-only): ``'auto'``, ``'fused'``, ``'composed'`` or None (global choice); see the
            module docstring. Either backend runs the block in ``compute_dtype``.

    Inputs:
        x: Tensor of shape ``(*, d)``.

    Outputs:
        Tensor of shape ``(*, d)`` and the dtype of ``x``.

    Raises:
        TypeError: ``hidden_size`` or ``bottleneck_size`` not an int; ``non_linearity`` not a str;
            ``param_init_type`` / ``compute_dtype`` not float16/float32; an input ``x`` that is not
            float16/float32/float64/bfloat16 (GRAPH mode: at compile time).
        ValueError: ``hidden_size`` or ``bottleneck_size`` <= 0; unknown ``non_linearity``; unknown
            ``backend``.
        mindpet.kernels.FusedBackendUnavailable: ``backend='fused'`` where no fused kernel can run (library
            not built, no kernels for the device, or a non-linearity without a fused kernel).
    """

    down_matmuls = (("strategy_matmul_down_sampler", "matmul_down_sampler"),)
    up_matmuls = (("strategy_matmul_up_sampler", "matmul_up_sampler"),)

    def __init__(self,
                 hidden_size: int,
                 bottleneck_size: int = 64,
                 non_linearity: str = "gelu",
                 param_init_type: ms.dtype.Type = ms.float32,
                 compute_dtype: ms.dtype.Type = ms.float16,
                 *,
                 backend: Optional[str] = None):
        cls_name = type(self).__name__
        non_linear = self.check_args(cls_name, hidden_size, bottleneck_size, non_linearity,
                                     param_init_type, compute_dtype)
        super().__init__()
        self.hidden_size = hidden_size
        self.bottleneck_size = bottleneck_size
        self.compute_dtype = compute_dtype
        self.param_init_type = param_init_type

        d, k = hidden_size, bottleneck_size
        self.mindpet_delta_adapter_down_weight = new_parameter(
            HeUniform(negative_slope=math.sqrt(5)), (k, d), param_init_type, "mindpet_delta_adapter_down_weight")
        self.mindpet_delta_adapter_down_bias = new_parameter(
            "zeros", (k,), param_init_type, "mindpet_delta_adapter_down_bias")
        self.mindpet_delta_adapter_up_weight = new_parameter(
            "zeros", (d, k), param_init_type, "mindpet_delta_adapter_up_weight")
        self.mindpet_delta_adapter_up_bias = new_parameter(
            "zeros", (d,), param_init_type, "mindpet_delta_adapter_up_bias")

        self.matmul_down_sampler = ops.MatMul(transpose_b=True)
        self.matmul_up_sampler = ops.MatMul(transpose_b=True)
        self.add_block_primitives(non_linear)
        self.kernel = Adapter(non_linear, backend=backend)

    @staticmethod
    def check_args(cls_name: str, hidden_size: Any, bottleneck_size: Any, non_linearity: Any,
                   param_init_type: Any, compute_dtype: Any):
        """Validate the arguments (naming ``cls_name``); return the resolved non-linearity."""
        check_positive_int(hidden_size, "hidden_size", cls_name)
        check_positive_int(bottleneck_size, "bottleneck_size", cls_name)
        return AdapterBlock.check_block_args(cls_name, non_linearity, param_init_type, compute_dtype)

    def composed(self, h: Tensor, params: tuple, residual) -> Tensor:
        """``r + act(h W_down^T + b_down) W_up^T + b_up`` (:func:`~mindpet.kernels.composed.adapter_composed`)
        through the layer's primitives."""
        w_down, b_down, w_up, b_up = params
        return adapter_composed(h, w_down, b_down, w_up, b_up, self.non_linearity, residual,
                                matmul_down=self.matmul_down_sampler, bias_add_down=self.bias_add_down_sampler,
                                matmul_up=self.matmul_up_sampler, bias_add_up=self.bias_add_up_sampler,
                                residual_add=self.residual_add)

    def delta_parameters(self) -> tuple:
        """``(W_down, b_down, W_up, b_up)``, the fused ``adapter`` op's parameter inputs."""
        return (self.mindpet_delta_adapter_down_weight, self.mindpet_delta_adapter_down_bias,
                self.mindpet_delta_adapter_up_weight, self.mindpet_delta_adapter_up_bias)

    def extend_repr(self) -> str:
        return (f"hidden_size={self.hidden_size}, bottleneck_size={self.bottleneck_size}, "
                f"compute_dtype={self.compute_dtype}, backend={self.backend}")

    def shard(self,
              strategy_matmul_down_sampler: StrategyType = None,
              strategy_bias_down_sampler: StrategyType = None,
              strategy_non_linearity: StrategyType = None,
              strategy_matmul_up_sampler: StrategyType = None,
              strategy_bias_up_sampler: StrategyType = None,
              strategy_residual_add: StrategyType = None,
              *,
              strategy_residential_add: StrategyType = None) -> "AdapterLayer":
        """Set the parallel strategy of each primitive (None keeps data parallel).

        Each strategy is a tuple with one tuple per input of its primitive (inputs are 2-D:
        leading dims are flattened). ``strategy_residential_add`` is an alias of
        ``strategy_residual_add``. Setting any strategy switches the layer to the composed backend
        (the fused op carries no strategies).

        Raises:
            TypeError / ValueError: a malformed strategy, naming it.
            ValueError: a LogSoftmax non-linearity under (semi-)auto parallel.
        """
        return self.shard_block((strategy_matmul_down_sampler, strategy_bias_down_sampler, strategy_non_linearity,
                                 strategy_matmul_up_sampler, strategy_bias_up_sampler),
                                strategy_residual_add, strategy_residential_add)


@register_layer("adapter", ("in_channels", "out_channels", "has_bias", "bottleneck_size"), injectable=True)
class AdapterDense(DenseWithDelta):
    r"""A dense layer followed by an adapter.

    .. math::
        h = \mathrm{activation}(x W^T + b), \qquad y = h + \mathrm{act}(h W_{down}^T + b_{down}) W_{up}^T + b_{up}

    Args:
        in_channels: last dimension of the input.
        out_channels: last dimension of the output (the adapter's ``hidden_size``).
        weight_init: initializer of ``weight: (out_channels, in_channels)``. Default: ``'normal'``.
        bias_init: initializer of ``bias: (out_channels,)``. Default: ``'zeros'``.
        has_bias: whether the dense layer has ``bias``. Default: True.
        activation: activation of the dense layer (str, Cell, Primitive or None). Default: None.
        bottleneck_size: the adapter's down-projection dimension. Default: 64.
        non_linearity: the adapter's activation name. Default: ``'gelu'``.
        param_init_type: dtype of all parameters (float32 default, or float16).
        compute_dtype: dtype of the matmuls (float16 default, or float32).
        transpose_b (keyword-only): the layout of ``weight``: True (default) ``(out_channels, in_channels)``;
            False ``(in_channels, out_channels)`` (``x W``, e.g. a mindformers ``Linear`` built so).
        backend (keyword-only): backend of the adapter (see ``AdapterLayer``); the dense part is composed.
        base (keyword-only): None (default: the layer's own float ``weight``), or a
            :class:`mindpet.quant.QuantizedDense` with these channels and bias: the dense part then runs on that
            frozen quantised base (``quant_lora_linear`` without a LoRA term, fused on CPU), taking over its
            Parameters (same objects and names); ``weight`` is None and ``weight_init``/``bias_init`` are not
            used; ``transpose_b`` must be True and ``compute_dtype`` float16 or float32.

    Inputs:
        x: Tensor of shape ``(*, in_channels)``.

    Outputs:
        Tensor of shape ``(*, out_channels)`` and the dtype of ``x``.

    Raises:
        TypeError: a size not an int; ``has_bias`` not a bool; ``activation`` not a str, Cell, Primitive
            or None; ``non_linearity`` not a str; a dtype not float16/float32; an init of another type;
            an input ``x`` that is not float16/float32/float64/bfloat16.
        ValueError: a size <= 0; an unknown initializer name; a Tensor init of the wrong shape;
            unknown ``non_linearity``; unknown ``backend``.
        KeyError: unknown ``activation`` name.
        mindpet.kernels.FusedBackendUnavailable: as ``AdapterLayer``.
    """

    delta_attr = "adapter"

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 weight_init: InitType = "normal",
                 bias_init: InitType = "zeros",
                 has_bias: bool = True,
                 activation: Union[str, nn.Cell, ops.Primitive, None] = None,
                 bottleneck_size: int = 64,
                 non_linearity: str = "gelu",
                 param_init_type: ms.dtype.Type = ms.float32,
                 compute_dtype: ms.dtype.Type = ms.float16,
                 *,
                 backend: Optional[str] = None,
                 transpose_b: bool = True,
                 base: Optional[nn.Cell] = None):
        cls_name = type(self).__name__
        act = self.check_dense_args(cls_name, in_channels, out_channels, weight_init, bias_init, has_bias,
                                    activation, transpose_b, base, compute_dtype)
        AdapterLayer.check_args(cls_name, out_channels, bottleneck_size, non_linearity, param_init_type,
                                compute_dtype)
        super().__init__()
        self.bottleneck_size = bottleneck_size
        self.build_dense(in_channels, out_channels, weight_init, bias_init, has_bias, act, param_init_type,
                         compute_dtype,
                         lambda: AdapterLayer(out_channels, bottleneck_size, non_linearity, param_init_type,
                                              compute_dtype, backend=backend),
                         transpose_b, base, backend)

    def shard(self,
              strategy_matmul_org: StrategyType = None,
              strategy_bias_org: StrategyType = None,
              strategy_activation_org: StrategyType = None,
              strategy_matmul_down_sampler: StrategyType = None,
              strategy_bias_down_sampler: StrategyType = None,
              strategy_non_linearity: StrategyType = None,
              strategy_matmul_up_sampler: StrategyType = None,
              strategy_bias_up_sampler: StrategyType = None,
              strategy_residual_add: StrategyType = None,
              *,
              strategy_residential_add: StrategyType = None) -> "AdapterDense":
        """Set the parallel strategy of each primitive (see ``AdapterLayer.shard``).

        ``strategy_matmul_org`` / ``strategy_bias_org`` / ``strategy_activation_org`` go to the dense
        layer's ``matmul`` (transpose_b=True), ``bias_add`` and activation; the last two have no effect
        on a layer without bias or activation. Everything is validated before anything is attached.
        Setting any strategy switches the adapter to the composed backend.
        """
        return self.shard_with_delta((strategy_matmul_org, strategy_bias_org, strategy_activation_org),
                                     (strategy_matmul_down_sampler, strategy_bias_down_sampler, strategy_non_linearity,
                                      strategy_matmul_up_sampler, strategy_bias_up_sampler),
                                     strategy_residual_add, strategy_residential_add)

    def apply_delta(self, hidden: Tensor) -> Tensor:
        return self.adapter(hidden)


def __getattr__(name: str):
    """Lazily re-export the low-rank adapter (documented under ``mindpet.delta.adapter``)."""
    if name in ("LowRankAdapterDense", "LowRankAdapterLayer"):
        from mindpet.delta import low_rank_adapter  # pylint: disable=import-outside-toplevel
        return getattr(low_rank_adapter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
