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

Precision: parameters are stored in ``param_init_type``; the matmuls, bias adds and non-linearities
run in ``compute_dtype``; the residual add runs in the input's dtype, so the output has the input's
dtype and shape.

Backends: the keyword-only argument ``backend`` (``'auto'``, ``'fused'``, ``'composed'`` or None for the
global choice: ``mindpet.kernels.set_backend``, else ``MINDPET_KERNEL_BACKEND``, else ``'auto'``) selects
how the adapter block runs. With a fused backend, ``x + act(x W_down^T + b_down) W_up^T + b_up`` runs as
the fused ``adapter`` op (``ops/CONTRACTS.md``) in the input's dtype (float32 or float16; the parameters
are cast to it), so the residual is still added in the input's dtype and a fresh adapter is still exactly
the identity. Parameters, their names and checkpoints do not depend on the backend, and results agree
within float rounding. Non-linearities without a fused kernel (see ``mindpet.kernels.activations``) and
inputs of other dtypes run composed under ``'auto'`` and raise under ``'fused'``; ``shard`` with a
strategy switches the layer to composed (the fused op carries no strategies). The implementation that
runs is the read-only property ``backend`` (``'composed'``, ``'cpu'`` or ``'ascend'``). In
``AdapterDense`` only the adapter is fused; the dense part is composed.

``LowRankAdapterDense`` and ``LowRankAdapterLayer`` (module ``low_rank_adapter``) are also importable
from here, as documented (``mindpet.delta.adapter.LowRankAdapterDense``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Union

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype
from mindspore.common.initializer import HeUniform, Initializer, initializer

from mindpet.delta._activation import activation_shard_plan, resolve_activation
from mindpet.delta._graph_cache import invalidate_compiled_graphs
from mindpet.delta._strategy import apply_strategies, check_strategies
from mindpet.delta._validation import (check_bool, check_dtype, check_float_input, check_init, check_positive_int,
                                       check_str)
from mindpet.kernels import Adapter
from mindpet.kernels import backend as _kernel_backend
from mindpet.kernels.activations import activation_code

__all__ = ["AdapterLayer", "AdapterDense", "LowRankAdapterLayer", "LowRankAdapterDense"]

InitType = Union[Tensor, str, Initializer, float, int]
StrategyType = Optional[tuple]


def make_param(init: Any, shape: tuple, dtype: ms.dtype.Type, name: str) -> Parameter:
    """A Parameter of ``shape`` and ``dtype`` from an initializer (a Tensor is cast to ``dtype``)."""
    if isinstance(init, Tensor):
        return Parameter(init.astype(dtype), name=name)
    return Parameter(initializer(init, shape, dtype), name=name)


def resolve_residual_alias(strategy_residual_add: StrategyType, strategy_residential_add: StrategyType,
                           cls_name: str) -> StrategyType:
    """Accept the spelling ``strategy_residential_add`` (used in the user document's examples)."""
    if strategy_residential_add is None:
        return strategy_residual_add
    if strategy_residual_add is not None:
        raise ValueError(f"For '{cls_name}', give only one of 'strategy_residual_add' and its alias "
                         f"'strategy_residential_add'.")
    return strategy_residential_add


def build_kernel(layer: nn.Cell, kernel_cls: type, op: str, activation: Any, backend: Optional[str]) -> None:
    """Resolve the backend of an adapter-type ``layer`` and attach its fused op (``layer.delta_kernel``).

    ``activation`` is the layer's resolved non-linearity; one without a fused kernel gives composed
    under ``'auto'`` and raises ``FusedBackendUnavailable`` under ``'fused'``. The fused op (a Cell
    without parameters) is built only when it runs, so parameters and names never depend on it.
    """
    choice = _kernel_backend.check_choice(backend) or _kernel_backend.get_backend()
    layer.backend_choice = choice
    if activation_code(activation) is None:
        _kernel_backend.resolve(choice, op, supported=False, unsupported_reason=(
            f"the non-linearity {type(activation).__name__} has no fused implementation (fusable: "
            f"identity, relu, gelu, gelu_erf, sigmoid, tanh, silu)"))
        layer.delta_kernel = None
        layer.kernel_impl = "composed"
    elif _kernel_backend.resolve(choice, op) == "composed":
        layer.delta_kernel = None
        layer.kernel_impl = "composed"
    else:
        layer.delta_kernel = kernel_cls(activation, backend=choice)
        layer.kernel_impl = layer.delta_kernel.impl
    layer.use_fused = layer.kernel_impl != "composed"


class FusableDelta:
    """Backend bookkeeping shared by ``AdapterLayer`` and ``LowRankAdapterLayer`` (a mixin of nn.Cell)."""

    @property
    def backend(self) -> str:
        """The implementation that runs the adapter block: ``'composed'``, ``'cpu'`` or ``'ascend'`` (read-only)."""
        return self.kernel_impl if self.use_fused else "composed"

    def use_composed(self) -> None:
        """Run composed from now on (``shard`` with a strategy); compiled graphs are marked stale."""
        if self.use_fused:
            self.use_fused = False
            invalidate_compiled_graphs()

    def fusable_input(self, x: Tensor) -> bool:
        """Whether the fused op takes ``x``'s dtype (float32/float16); TypeError under ``'fused'`` if not."""
        if x.dtype == mstype.float32 or x.dtype == mstype.float16:
            return True
        if self.backend_choice == "fused":
            raise TypeError("The fused adapter kernels (backend='fused') take float32 or float16 inputs; "
                            "use backend='composed' or 'auto' for other input dtypes.")
        return False


class AdapterLayer(FusableDelta, nn.Cell):
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
            module docstring. With a fused backend the block runs in the input's dtype.

    Inputs:
        x: Tensor of shape ``(*, d)``.

    Outputs:
        Tensor of shape ``(*, d)`` and the dtype of ``x``.

    Raises:
        TypeError: ``hidden_size`` or ``bottleneck_size`` not an int; ``non_linearity`` not a str;
            ``param_init_type`` / ``compute_dtype`` not float16/float32; an input ``x`` that is not
            float16/float32/float64/bfloat16 (GRAPH mode: at compile time); under ``backend='fused'``, an
            input neither float32 nor float16.
        ValueError: ``hidden_size`` or ``bottleneck_size`` <= 0; unknown ``non_linearity``; unknown
            ``backend``.
        mindpet.kernels.FusedBackendUnavailable: ``backend='fused'`` where no fused kernel can run (library
            not built, no kernels for the device, or a non-linearity without a fused kernel).
    """

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
        self.mindpet_delta_adapter_down_weight = make_param(
            HeUniform(negative_slope=math.sqrt(5)), (k, d), param_init_type, "mindpet_delta_adapter_down_weight")
        self.mindpet_delta_adapter_down_bias = make_param(
            "zeros", (k,), param_init_type, "mindpet_delta_adapter_down_bias")
        self.mindpet_delta_adapter_up_weight = make_param(
            "zeros", (d, k), param_init_type, "mindpet_delta_adapter_up_weight")
        self.mindpet_delta_adapter_up_bias = make_param(
            "zeros", (d,), param_init_type, "mindpet_delta_adapter_up_bias")

        self.matmul_down_sampler = ops.MatMul(transpose_b=True)
        self.bias_add_down_sampler = ops.BiasAdd()
        self.non_linearity = non_linear
        self.matmul_up_sampler = ops.MatMul(transpose_b=True)
        self.bias_add_up_sampler = ops.BiasAdd()
        self.residual_add = ops.Add()
        self.cast = ops.Cast()
        self.reshape = ops.Reshape()
        build_kernel(self, Adapter, "adapter", non_linear, backend)

    @staticmethod
    def check_args(cls_name: str, hidden_size: Any, bottleneck_size: Any, non_linearity: Any,
                   param_init_type: Any, compute_dtype: Any):
        """Validate the arguments (naming ``cls_name``); return the resolved non-linearity."""
        check_positive_int(hidden_size, "hidden_size", cls_name)
        check_positive_int(bottleneck_size, "bottleneck_size", cls_name)
        check_str(non_linearity, "non_linearity", cls_name)
        check_dtype(param_init_type, "param_init_type", cls_name)
        check_dtype(compute_dtype, "compute_dtype", cls_name)
        return resolve_activation(non_linearity, "non_linearity", cls_name, allow_none=False)

    def bottleneck(self, h: Tensor) -> Tensor:
        """``act(h W_down^T + b_down) W_up^T + b_up`` for ``h: (N, d)`` in ``compute_dtype``."""
        cdt = self.compute_dtype
        z = self.matmul_down_sampler(h, self.cast(self.mindpet_delta_adapter_down_weight, cdt))
        z = self.bias_add_down_sampler(z, self.cast(self.mindpet_delta_adapter_down_bias, cdt))
        z = self.non_linearity(z)
        z = self.matmul_up_sampler(z, self.cast(self.mindpet_delta_adapter_up_weight, cdt))
        return self.bias_add_up_sampler(z, self.cast(self.mindpet_delta_adapter_up_bias, cdt))

    def construct(self, x: Tensor) -> Tensor:
        check_float_input(x, "x", "AdapterLayer")
        x_shape = x.shape
        if not x_shape:
            raise ValueError("For 'AdapterLayer', the input must have shape (*, hidden_size), but got a scalar.")
        if x_shape[-1] != self.hidden_size:
            raise ValueError(f"For 'AdapterLayer', the last dimension of the input must equal 'hidden_size' "
                             f"({self.hidden_size}), but got input shape {x_shape}.")
        x2 = self.reshape(x, (-1, x_shape[-1]))
        if self.use_fused and self.fusable_input(x):
            # the whole block, residual included, as the fused adapter op in the input's dtype
            dt = x.dtype
            out = self.delta_kernel(x2, self.cast(self.mindpet_delta_adapter_down_weight, dt),
                                    self.cast(self.mindpet_delta_adapter_down_bias, dt),
                                    self.cast(self.mindpet_delta_adapter_up_weight, dt),
                                    self.cast(self.mindpet_delta_adapter_up_bias, dt))
        else:
            delta = self.bottleneck(self.cast(x2, self.compute_dtype))
            out = self.residual_add(x2, self.cast(delta, x.dtype))
        return self.reshape(out, x_shape)

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
        cls_name = type(self).__name__
        residual = resolve_residual_alias(strategy_residual_add, strategy_residential_add, cls_name)
        strategies = (strategy_matmul_down_sampler, strategy_bias_down_sampler, strategy_non_linearity,
                      strategy_matmul_up_sampler, strategy_bias_up_sampler, residual)
        pairs = self.shard_plan(cls_name, *strategies)
        if any(st is not None for st in strategies):
            self.use_composed()
        apply_strategies(pairs)
        return self

    def shard_plan(self, cls_name: str, matmul_down: StrategyType, bias_down: StrategyType,
                   non_linearity: StrategyType, matmul_up: StrategyType, bias_up: StrategyType,
                   residual_add: StrategyType) -> list:
        """Validate the strategies (errors name ``cls_name``); return ``(primitive, strategy)`` pairs."""
        check_strategies(cls_name, {
            "strategy_matmul_down_sampler": (matmul_down, (2, 2)),
            "strategy_bias_down_sampler": (bias_down, (2, 1)),
            "strategy_matmul_up_sampler": (matmul_up, (2, 2)),
            "strategy_bias_up_sampler": (bias_up, (2, 1)),
            "strategy_residual_add": (residual_add, (2, 2)),
        })
        pairs = activation_shard_plan(self.non_linearity, non_linearity, "non_linearity",
                                      "strategy_non_linearity", cls_name)
        return pairs + [(self.matmul_down_sampler, matmul_down), (self.bias_add_down_sampler, bias_down),
                        (self.matmul_up_sampler, matmul_up), (self.bias_add_up_sampler, bias_up),
                        (self.residual_add, residual_add)]


class DenseWithDelta(nn.Cell):
    """The frozen dense part shared by ``AdapterDense`` and ``LowRankAdapterDense``.

    ``hidden = activation(x W^T + b)`` with ``weight: (out_channels, in_channels)`` and
    ``bias: (out_channels,)``, named as in ``nn.Dense`` and computed in ``compute_dtype``; ``hidden`` is
    cast back to the input dtype and passed to ``apply_delta`` (the subclass's delta layer, held in the
    attribute named ``delta_attr``).
    """

    delta_attr = ""

    @staticmethod
    def check_dense_args(cls_name: str, in_channels: Any, out_channels: Any, weight_init: Any, bias_init: Any,
                         has_bias: Any, activation: Any):
        """Validate the ``nn.Dense`` arguments; return the resolved activation (or None)."""
        check_positive_int(in_channels, "in_channels", cls_name)
        check_positive_int(out_channels, "out_channels", cls_name)
        check_bool(has_bias, "has_bias", cls_name)
        check_init(weight_init, "weight_init", cls_name, (out_channels, in_channels))
        check_init(bias_init, "bias_init", cls_name, (out_channels,))
        return resolve_activation(activation, "activation", cls_name, allow_none=True)

    def build_dense(self, in_channels: int, out_channels: int, weight_init: InitType, bias_init: InitType,
                    has_bias: bool, activation, param_init_type: ms.dtype.Type,
                    compute_dtype: ms.dtype.Type, make_delta: Callable[[], nn.Cell]) -> None:
        """Create the dense parameters and primitives, then the delta layer from ``make_delta()``."""
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.has_bias = has_bias
        self.compute_dtype = compute_dtype
        self.param_init_type = param_init_type
        self.weight = make_param(weight_init, (out_channels, in_channels), param_init_type, "weight")
        self.bias = make_param(bias_init, (out_channels,), param_init_type, "bias") if has_bias else None
        self.matmul = ops.MatMul(transpose_b=True)
        self.bias_add = ops.BiasAdd()
        self.activation = activation
        self.activation_flag = activation is not None
        self.cast = ops.Cast()
        self.reshape = ops.Reshape()
        setattr(self, self.delta_attr, make_delta())

    def dense(self, x2: Tensor) -> Tensor:
        """``activation(x W^T + b)`` for ``x2: (N, in)`` in ``compute_dtype``."""
        h = self.matmul(self.cast(x2, self.compute_dtype), self.cast(self.weight, self.compute_dtype))
        if self.has_bias:
            h = self.bias_add(h, self.cast(self.bias, self.compute_dtype))
        if self.activation_flag:
            h = self.activation(h)
        return h

    def construct(self, x: Tensor) -> Tensor:
        check_float_input(x, "x", self.cls_name)
        x_shape = x.shape
        if not x_shape:
            raise ValueError(f"For '{self.cls_name}', the input must have shape (*, in_channels), but got a scalar.")
        if x_shape[-1] != self.in_channels:
            raise ValueError(f"For '{self.cls_name}', the last dimension of the input must equal 'in_channels' "
                             f"({self.in_channels}), but got input shape {x_shape}.")
        hidden = self.cast(self.dense(self.reshape(x, (-1, x_shape[-1]))), x.dtype)
        out = self.apply_delta(hidden)
        return self.reshape(out, x_shape[:-1] + (self.out_channels,))

    def extend_repr(self) -> str:
        s = f"in_channels={self.in_channels}, out_channels={self.out_channels}, has_bias={self.has_bias}"
        if self.activation_flag:
            s += f", activation={self.activation}"
        return s + f", backend={self.backend}"

    @property
    def backend(self) -> str:
        """The implementation that runs the delta layer: ``'composed'``, ``'cpu'`` or ``'ascend'`` (read-only).

        The dense part always runs composed.
        """
        return getattr(self, self.delta_attr).backend

    def shard_delta_composed(self, strategies: tuple) -> None:
        """Switch the delta layer to composed when ``shard`` sets any strategy (fused ops carry none)."""
        if any(st is not None for st in strategies):
            getattr(self, self.delta_attr).use_composed()

    def apply_delta(self, hidden: Tensor) -> Tensor:
        """The delta layer applied to ``hidden: (N, out_channels)``; defined by each subclass."""
        raise NotImplementedError

    def shard_dense_plan(self, strategy_matmul_org: StrategyType, strategy_bias_org: StrategyType,
                         strategy_activation_org: StrategyType) -> list:
        """Validate the dense strategies; return the ``(primitive, strategy)`` pairs to apply.

        A (valid) ``strategy_bias_org`` without bias or ``strategy_activation_org`` without activation
        attaches to a primitive that never runs, so it has no effect (the documented examples pass all
        three for a layer built with ``activation=None``).
        """
        cls_name = type(self).__name__
        check_strategies(cls_name, {
            "strategy_matmul_org": (strategy_matmul_org, (2, 2)),
            "strategy_bias_org": (strategy_bias_org, (2, 1)),
        })
        pairs = activation_shard_plan(self.activation, strategy_activation_org, "activation",
                                      "strategy_activation_org", cls_name)
        return pairs + [(self.matmul, strategy_matmul_org), (self.bias_add, strategy_bias_org)]


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
        backend (keyword-only): backend of the adapter (see ``AdapterLayer``); the dense part is composed.

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
                 backend: Optional[str] = None):
        cls_name = type(self).__name__
        act = self.check_dense_args(cls_name, in_channels, out_channels, weight_init, bias_init, has_bias,
                                    activation)
        AdapterLayer.check_args(cls_name, out_channels, bottleneck_size, non_linearity, param_init_type,
                                compute_dtype)
        super().__init__()
        self.bottleneck_size = bottleneck_size
        self.build_dense(in_channels, out_channels, weight_init, bias_init, has_bias, act, param_init_type,
                         compute_dtype,
                         lambda: AdapterLayer(out_channels, bottleneck_size, non_linearity, param_init_type,
                                              compute_dtype, backend=backend))

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
        cls_name = type(self).__name__
        residual = resolve_residual_alias(strategy_residual_add, strategy_residential_add, cls_name)
        pairs = self.shard_dense_plan(strategy_matmul_org, strategy_bias_org, strategy_activation_org)
        pairs += self.adapter.shard_plan(cls_name, strategy_matmul_down_sampler, strategy_bias_down_sampler,
                                         strategy_non_linearity, strategy_matmul_up_sampler,
                                         strategy_bias_up_sampler, residual)
        self.shard_delta_composed((strategy_matmul_org, strategy_bias_org, strategy_activation_org,
                                   strategy_matmul_down_sampler, strategy_bias_down_sampler, strategy_non_linearity,
                                   strategy_matmul_up_sampler, strategy_bias_up_sampler, residual))
        apply_strategies(pairs)
        return self

    def apply_delta(self, hidden: Tensor) -> Tensor:
        return self.adapter(hidden)


def __getattr__(name: str):
    """Lazily re-export the low-rank adapter (documented under ``mindpet.delta.adapter``)."""
    if name in ("LowRankAdapterDense", "LowRankAdapterLayer"):
        from mindpet.delta import low_rank_adapter  # pylint: disable=import-outside-toplevel
        return getattr(low_rank_adapter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
