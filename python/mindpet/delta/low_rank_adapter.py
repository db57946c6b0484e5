"""Low-Rank Adapter (Compacter paper, Mahabadi et al., 2021): an adapter whose projections are rank-r products.

``LowRankAdapterLayer`` computes, for ``x`` of shape ``(*, d)`` (``d = hidden_size``,
``k = hidden_size // reduction_factor``, ``r = low_rank_size``)::

    W_down = W_down_left W_down_right        W_down_left: (d, r), W_down_right: (r, k)
    W_up   = W_up_left W_up_right            W_up_left:   (k, r), W_up_right:   (r, d)
    y = x + act(x W_down + b_down) W_up + b_up        b_down: (k,), b_up: (d,)

Order of the products: the full ``(d, k)`` / ``(k, d)`` projections are never materialised.
``x W_down`` is computed as ``(x W_down_left) W_down_right`` (and the same for the up projection),
which is the same product and costs ``N r (d + k)`` multiply-adds instead of ``d r k + N d k``; it is
cheaper for every batch size ``N`` unless ``r`` is close to ``d k / (d + k)``. Each of the four matmuls
is its own primitive (``transpose_b=False``) and carries its own ``shard`` strategy:

- ``strategy_matmul_down_sampler_input``: ``x (N, d) @ W_down_left (d, r)``
- ``strategy_matmul_down_sampler_weight``: ``(x W_down_left) (N, r) @ W_down_right (r, k)``
- ``strategy_matmul_up_sampler_input``: ``a (N, k) @ W_up_left (k, r)``
- ``strategy_matmul_up_sampler_weight``: ``(a W_up_left) (N, r) @ W_up_right (r, d)``

so a data-parallel strategy for a ``*_weight`` matmul is ``((dp, 1), (1, 1))``.

Parameter names: ``mindpet_delta_low_rank_adapter_{down,up}_{left,right,bias}`` on the layer; inside a
``LowRankAdapterDense`` the layer is the sub-cell ``low_rank_adapter``. None of them contains
``mindpet_delta_adapter``, so ``freeze_delta(mode='adapter')`` never selects them.

Initialisation: ``W_down_left``, ``W_down_right`` and ``W_up_left`` use ``low_rank_w_init``;
``W_up_right`` and both biases start at zero, so a freshly inserted layer is the identity (``y == x``).
Gradients still flow: ``dL/dW_up_right = (a W_up_left)^T dL/dy`` is non-zero since ``W_up_left`` is.

Backends: as for the adapter (``mindpet.delta.adapter``), the keyword-only argument ``backend``
(``'auto'``, ``'fused'``, ``'composed'`` or None for the global choice) selects how the block runs; with a
fused backend the whole block, residual included, is the fused ``low_rank_adapter`` op
(``ops/CONTRACTS.md``, the factors never multiplied out) in ``compute_dtype``, the residual in the
input's dtype. Parameters, names and checkpoints do not depend on it; non-fusable non-linearities run
composed under ``'auto'`` and raise under ``'fused'``; ``shard`` with a strategy switches the
layer to composed. The read-only property ``backend`` tells which implementation runs.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import Initializer

from mindpet.delta._adapter_base import AdapterBlock, DenseWithDelta, StrategyType
from mindpet.delta._parameters import InitType, new_parameter
from mindpet.delta._validation import check_init, check_positive_int
from mindpet.delta.registry import register_layer
from mindpet.kernels import LowRankAdapter
from mindpet.kernels.composed import low_rank_adapter_composed
from mindpet.methods import param_prefix

__all__ = ["LowRankAdapterLayer", "LowRankAdapterDense"]

_PREFIX = param_prefix("low_rank_adapter")


@register_layer("low_rank_adapter", ("hidden_size", "reduction_factor", "low_rank_size", "bottleneck_size"))
class LowRankAdapterLayer(AdapterBlock):
    r"""Adapter bottleneck whose projections are rank-``low_rank_size`` products, with a residual.

    .. math::
        y = x + \mathrm{act}(x W_{dl} W_{dr} + b_{down}) W_{ul} W_{ur} + b_{up}

    Args:
        hidden_size: ``d``, the last dimension of the input (and of the output).
        reduction_factor: ``k = hidden_size // reduction_factor`` is the bottleneck size. Default: 1.
        low_rank_size: ``r``, the rank of each projection. Default: 1.
        low_rank_w_init: initializer (name or ``Initializer``) of ``W_down_left``, ``W_down_right`` and
            ``W_up_left``; ``W_up_right`` starts at zero. Default: ``'xavier_uniform'``.
        non_linearity: activation name after the down projection. Default: ``'gelu'`` (tanh approximation).
        param_init_type: dtype of the parameters, float32 (default) or float16.
        compute_dtype: dtype of the matmuls, float16 (default) or float32.
        backend (keyword-only): ``'auto'``, ``'fused'``, ``'composed'`` or None (global choice); see the
            module docstring. Either backend runs the block in ``compute_dtype``.

    Inputs:
        x: Tensor of shape ``(*, d)``.

    Outputs:
        Tensor of shape ``(*, d)`` and the dtype of ``x``.

    Raises:
        TypeError: ``hidden_size``, ``reduction_factor`` or ``low_rank_size`` not an int;
            ``low_rank_w_init`` neither a str nor an Initializer; ``non_linearity`` not a str;
            a dtype not float16/float32; an input ``x`` that is not float16/float32/float64/bfloat16 (GRAPH
            mode: at compile time).
        ValueError: a size <= 0; ``reduction_factor > hidden_size``; unknown ``low_rank_w_init`` name;
            unknown ``non_linearity``; unknown ``backend``.
        mindpet.kernels.FusedBackendUnavailable: ``backend='fused'`` where no fused kernel can run.
    """

    down_matmuls = (("strategy_matmul_down_sampler_weight", "matmul_down_sampler_weight"),
                    ("strategy_matmul_down_sampler_input", "matmul_down_sampler_input"))
    up_matmuls = (("strategy_matmul_up_sampler_weight", "matmul_up_sampler_weight"),
                  ("strategy_matmul_up_sampler_input", "matmul_up_sampler_input"))

    def __init__(self,
                 hidden_size: int,
                 reduction_factor: int = 1,
                 low_rank_size: int = 1,
                 low_rank_w_init: Union[str, Initializer] = "xavier_uniform",
                 non_linearity: str = "gelu",
                 param_init_type: ms.dtype.Type = ms.float32,
                 compute_dtype: ms.dtype.Type = ms.float16,
                 *,
                 backend: Optional[str] = None):
        cls_name = type(self).__name__
        non_linear = self.check_args(cls_name, hidden_size, "hidden_size", reduction_factor, low_rank_size,
                                     low_rank_w_init, non_linearity, param_init_type, compute_dtype)
        super().__init__()
        d, r = hidden_size, low_rank_size
        k = hidden_size // reduction_factor
        self.hidden_size = hidden_size
        self.reduction_factor = reduction_factor
        self.bottleneck_size = k
        self.low_rank_size = r
        self.compute_dtype = compute_dtype
        self.param_init_type = param_init_type

        pit = param_init_type
        self.mindpet_delta_low_rank_adapter_down_left = new_parameter(low_rank_w_init, (d, r), pit,
                                                                      _PREFIX + "down_left")
        self.mindpet_delta_low_rank_adapter_down_right = new_parameter(low_rank_w_init, (r, k), pit,
                                                                       _PREFIX + "down_right")
        self.mindpet_delta_low_rank_adapter_down_bias = new_parameter("zeros", (k,), pit, _PREFIX + "down_bias")
        self.mindpet_delta_low_rank_adapter_up_left = new_parameter(low_rank_w_init, (k, r), pit,
                                                                    _PREFIX + "up_left")
        self.mindpet_delta_low_rank_adapter_up_right = new_parameter("zeros", (r, d), pit, _PREFIX + "up_right")
        self.mindpet_delta_low_rank_adapter_up_bias = new_parameter("zeros", (d,), pit, _PREFIX + "up_bias")

        self.matmul_down_sampler_input = ops.MatMul()
        self.matmul_down_sampler_weight = ops.MatMul()
        self.matmul_up_sampler_input = ops.MatMul()
        self.matmul_up_sampler_weight = ops.MatMul()
        self.add_block_primitives(non_linear)
        self.kernel = LowRankAdapter(non_linear, backend=backend)

    @staticmethod
    def check_args(cls_name: str, hidden_size: Any, hidden_name: str, reduction_factor: Any, low_rank_size: Any,
                   low_rank_w_init: Any, non_linearity: Any, param_init_type: Any, compute_dtype: Any):
        """Validate the arguments (naming ``cls_name``; ``hidden_name`` is the argument that sets ``d``)."""
        check_positive_int(hidden_size, hidden_name, cls_name)
        check_positive_int(reduction_factor, "reduction_factor", cls_name)
        check_positive_int(low_rank_size, "low_rank_size", cls_name)
        if reduction_factor > hidden_size:
            raise ValueError(f"For '{cls_name}', 'reduction_factor' ({reduction_factor}) must not be greater than "
                             f"'{hidden_name}' ({hidden_size}): the bottleneck would be empty.")
        if not isinstance(low_rank_w_init, (str, Initializer)):
            raise TypeError(f"For '{cls_name}', 'low_rank_w_init' must be a str or Initializer, but got "
                            f"{type(low_rank_w_init).__name__}.")
        check_init(low_rank_w_init, "low_rank_w_init", cls_name)
        return AdapterBlock.check_block_args(cls_name, non_linearity, param_init_type, compute_dtype)

    def composed(self, h: Tensor, params: tuple, residual) -> Tensor:
        """``r + act(h W_dl W_dr + b_down) W_ul W_ur + b_up``
        (:func:`~mindpet.kernels.composed.low_rank_adapter_composed`) through the layer's primitives."""
        down_left, down_right, b_down, up_left, up_right, b_up = params
        return low_rank_adapter_composed(
            h, down_left, down_right, b_down, up_left, up_right, b_up, self.non_linearity, residual,
            matmul_down_input=self.matmul_down_sampler_input, matmul_down_weight=self.matmul_down_sampler_weight,
            bias_add_down=self.bias_add_down_sampler, matmul_up_input=self.matmul_up_sampler_input,
            matmul_up_weight=self.matmul_up_sampler_weight, bias_add_up=self.bias_add_up_sampler,
            residual_add=self.residual_add)

    def delta_parameters(self) -> tuple:
        """The six factors and biases in the order the fused ``low_rank_adapter`` op takes them."""
        return (self.mindpet_delta_low_rank_adapter_down_left, self.mindpet_delta_low_rank_adapter_down_right,
                self.mindpet_delta_low_rank_adapter_down_bias, self.mindpet_delta_low_rank_adapter_up_left,
                self.mindpet_delta_low_rank_adapter_up_right, self.mindpet_delta_low_rank_adapter_up_bias)

    def extend_repr(self) -> str:
        return (f"hidden_size={self.hidden_size}, reduction_factor={self.reduction_factor}, "
                f"low_rank_size={self.low_rank_size}, compute_dtype={self.compute_dtype}, backend={self.backend}")

    def shard(self,
              strategy_matmul_down_sampler_weight: StrategyType = None,
              strategy_matmul_down_sampler_input: StrategyType = None,
              strategy_bias_down_sampler: StrategyType = None,
              strategy_non_linearity: StrategyType = None,
              strategy_matmul_up_sampler_weight: StrategyType = None,
              strategy_matmul_up_sampler_input: StrategyType = None,
              strategy_bias_up_sampler: StrategyType = None,
              strategy_residual_add: StrategyType = None,
              *,
              strategy_residential_add: StrategyType = None) -> "LowRankAdapterLayer":
        """Set the parallel strategy of each primitive (None keeps data parallel).

        See the module docstring for which matmul each ``*_input`` / ``*_weight`` strategy reaches.
        ``strategy_residential_add`` is an alias of ``strategy_residual_add``. Setting any strategy
        switches the layer to the composed backend (the fused op carries no strategies).

        Raises:
            TypeError / ValueError: a malformed strategy, naming it.
            ValueError: a LogSoftmax non-linearity under (semi-)auto parallel.
        """
        return self.shard_block((strategy_matmul_down_sampler_weight, strategy_matmul_down_sampler_input,
                                 strategy_bias_down_sampler, strategy_non_linearity, strategy_matmul_up_sampler_weight,
                                 strategy_matmul_up_sampler_input, strategy_bias_up_sampler),
                                strategy_residual_add, strategy_residential_add)


@register_layer("low_rank_adapter", ("in_channels", "out_channels", "has_bias", "reduction_factor",
                                     "low_rank_size"), injectable=True)
class LowRankAdapterDense(DenseWithDelta):
    r"""A dense layer followed by a low-rank adapter.

    .. math::
        h = \mathrm{activation}(x W^T + b), \qquad y = \mathrm{LowRankAdapterLayer}(h)

    Args:
        in_channels: last dimension of the input.
        out_channels: last dimension of the output (the adapter's ``hidden_size``).
        weight_init: initializer of ``weight: (out_channels, in_channels)``. Default: ``'normal'``.
        bias_init: initializer of ``bias: (out_channels,)``. Default: ``'zeros'``.
        has_bias: whether the dense layer has ``bias``. Default: True.
        activation: activation of the dense layer (str, Cell, Primitive or None). Default: None.
        reduction_factor: bottleneck ``k = out_channels // reduction_factor``. Default: 1.
        low_rank_size: rank ``r`` of each projection. Default: 1.
        low_rank_w_init: initializer of the non-zero factors. Default: ``'xavier_uniform'``.
        non_linearity: the adapter's activation name. Default: ``'gelu'``.
        param_init_type: dtype of all parameters (float32 default, or float16).
        compute_dtype: dtype of the matmuls (float16 default, or float32).
        transpose_b (keyword-only): the layout of ``weight``: True (default) ``(out_channels, in_channels)``;
            False ``(in_channels, out_channels)`` (``x W``, e.g. a mindformers ``Linear`` built so).
        backend (keyword-only): backend of the low-rank adapter (see ``LowRankAdapterLayer``); the dense
            part is composed.
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
            or None; ``weight_init`` / ``bias_init`` of another type; ``low_rank_w_init`` neither a str nor
            an Initializer; ``non_linearity`` not a str; a dtype not float16/float32; an input ``x`` that
            is not float16/float32/float64/bfloat16.
        ValueError: a size <= 0; ``reduction_factor > out_channels``; an unknown initializer name; a
            Tensor init of the wrong shape; unknown ``non_linearity``; unknown ``backend``.
        KeyError: unknown ``activation`` name.
        mindpet.kernels.FusedBackendUnavailable: as ``LowRankAdapterLayer``.
    """

    delta_attr = "low_rank_adapter"

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 weight_init: InitType = "normal",
                 bias_init: InitType = "zeros",
                 has_bias: bool = True,
                 activation: Union[str, nn.Cell, ops.Primitive, None] = None,
                 reduction_factor: int = 1,
                 low_rank_size: int = 1,
                 low_rank_w_init: Union[str, Initializer] = "xavier_uniform",
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
        LowRankAdapterLayer.check_args(cls_name, out_channels, "out_channels", reduction_factor, low_rank_size,
                                       low_rank_w_init, non_linearity, param_init_type, compute_dtype)
        super().__init__()
        self.reduction_factor = reduction_factor
        self.low_rank_size = low_rank_size
        self.build_dense(in_channels, out_channels, weight_init, bias_init, has_bias, act, param_init_type,
                         compute_dtype,
                         lambda: LowRankAdapterLayer(out_channels, reduction_factor, low_rank_size, low_rank_w_init,
                                                     non_linearity, param_init_type, compute_dtype,
                                                     backend=backend),
                         transpose_b, base, backend)

    def apply_delta(self, hidden: Tensor) -> Tensor:
        return self.low_rank_adapter(hidden)

    def shard(self,
              strategy_matmul_org: StrategyType = None,
              strategy_bias_org: StrategyType = None,
              strategy_activation_org: StrategyType = None,
              strategy_matmul_down_sampler_weight: StrategyType = None,
              strategy_matmul_down_sampler_input: StrategyType = None,
              strategy_bias_down_sampler: StrategyType = None,
              strategy_non_linearity: StrategyType = None,
              strategy_matmul_up_sampler_weight: StrategyType = None,
              strategy_matmul_up_sampler_input: StrategyType = None,
              strategy_bias_up_sampler: StrategyType = None,
              strategy_residual_add: StrategyType = None,
              *,
              strategy_residential_add: StrategyType = None) -> "LowRankAdapterDense":
        """Set the parallel strategy of each primitive (see ``LowRankAdapterLayer.shard``).

        ``strategy_matmul_org`` / ``strategy_bias_org`` / ``strategy_activation_org`` go to the dense
        layer's ``matmul`` (transpose_b=True), ``bias_add`` and activation; the last two have no effect
        on a layer without bias or activation. Everything is validated before anything is attached.
        Setting any strategy switches the low-rank adapter to the composed backend.
        """
        return self.shard_with_delta((strategy_matmul_org, strategy_bias_org, strategy_activation_org),
                                     (strategy_matmul_down_sampler_weight, strategy_matmul_down_sampler_input,
                                      strategy_bias_down_sampler, strategy_non_linearity,
                                      strategy_matmul_up_sampler_weight, strategy_matmul_up_sampler_input,
                                      strategy_bias_up_sampler),
                                     strategy_residual_add, strategy_residential_add)
