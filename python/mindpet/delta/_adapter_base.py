"""What ``AdapterLayer`` and ``LowRankAdapterLayer`` (and their Dense wrappers) share.

``AdapterBlock`` is the residual bottleneck ``y = x + bottleneck(x)`` on inputs of shape ``(*, hidden_size)``:
the input checks, the dtype rule (input and parameters cast to ``compute_dtype``, where the bottleneck
runs, fused or composed; the residual added in the input's dtype), the fused-or-composed switch read from
the block's kernel (``self.kernel``, which selects the backend) and the common part of ``shard``. A
subclass defines what differs:

- ``composed(h, params, residual)``: its op composed (``mindpet.kernels.composed``) with its own primitives;
- ``delta_parameters()``: its parameters, in the order the fused op takes them;
- ``down_matmuls`` / ``up_matmuls``: ``(strategy argument, primitive attribute)`` of the matmuls of each
  projection, in the order of ``shard``'s arguments.

``DenseWithDelta`` is the frozen ``nn.Dense`` part of ``AdapterDense`` and ``LowRankAdapterDense``, which
hold their ``AdapterBlock`` in the attribute named ``delta_attr``; with ``base=QuantizedDense`` it takes over
that layer's frozen quantised Parameters and computes its part with ``quant_lora_linear`` (no LoRA term).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import mindspore as ms
from mindspore import Tensor, nn, ops

from mindpet._eager import GradSafeCell
from mindpet.delta._activation import activation_shard_plan, resolve_activation
from mindpet.delta._parameters import InitType, new_parameter
from mindpet.delta._strategy import apply_strategies, check_strategies
from mindpet.delta._validation import (check_bool, check_dense_input, check_dtype, check_init, check_positive_int,
                                       check_str)

__all__ = ["AdapterBlock", "DenseWithDelta", "StrategyType", "resolve_residual_alias"]

StrategyType = Optional[tuple]


def _quantized_base():
    """:mod:`mindpet.quant.lora_base`, the quantised-base strategy of the Dense-like delta layers (imported on
    first use)."""
    from mindpet.quant import lora_base  # pylint: disable=import-outside-toplevel
    return lora_base


def resolve_residual_alias(strategy_residual_add: StrategyType, strategy_residential_add: StrategyType,
                           cls_name: str) -> StrategyType:
    """Accept the spelling ``strategy_residential_add`` (used in the user document's examples)."""
    if strategy_residential_add is None:
        return strategy_residual_add
    if strategy_residual_add is not None:
        raise ValueError(f"For '{cls_name}', give only one of 'strategy_residual_add' and its alias "
                         f"'strategy_residential_add'.")
    return strategy_residential_add


class AdapterBlock(GradSafeCell):
    """``y = x + bottleneck(x)`` for ``x: (*, hidden_size)``, fused or composed (see the module docstring).

    A subclass's ``__init__`` sets ``hidden_size`` and ``compute_dtype``, its parameters and matmul
    primitives, then calls :meth:`add_block_primitives` and sets ``self.kernel``, its fused-op Cell
    (:class:`mindpet.kernels.Adapter` / :class:`~mindpet.kernels.LowRankAdapter`: it selects the
    backend; a non-linearity without a fused kernel gives composed under ``'auto'`` and raises
    ``FusedBackendUnavailable`` under ``'fused'``).
    """

    down_matmuls: tuple = ()
    up_matmuls: tuple = ()

    @staticmethod
    def check_block_args(cls_name: str, non_linearity: Any, param_init_type: Any, compute_dtype: Any):
        """Validate the arguments every adapter block has (naming ``cls_name``); return the non-linearity."""
        check_str(non_linearity, "non_linearity", cls_name)
        check_dtype(param_init_type, "param_init_type", cls_name)
        check_dtype(compute_dtype, "compute_dtype", cls_name)
        return resolve_activation(non_linearity, "non_linearity", cls_name, allow_none=False)

    def add_block_primitives(self, non_linearity: nn.Cell) -> None:
        """The primitives besides the matmuls: bias adds, the non-linearity, the residual add, cast, reshape."""
        self.bias_add_down_sampler = ops.BiasAdd()
        self.non_linearity = non_linearity
        self.bias_add_up_sampler = ops.BiasAdd()
        self.residual_add = ops.Add()
        self.cast = ops.Cast()
        self.reshape = ops.Reshape()

    @property
    def backend(self) -> str:
        """The implementation that runs the adapter block: ``'composed'``, ``'cpu'`` or ``'ascend'`` (read-only)."""
        return self.kernel.impl

    def use_composed(self) -> None:
        """Run composed from now on (``shard`` with a strategy); compiled graphs are marked stale."""
        self.kernel.use_composed("a shard strategy is set (the fused op carries none)")

    def composed(self, h: Tensor, params: tuple, residual) -> Tensor:
        """The block's op composed with its own primitives, ``h: (N, d)`` and ``params`` in ``compute_dtype``
        (``residual``: None, or the input in its own dtype); defined by each subclass."""
        raise NotImplementedError

    def delta_parameters(self) -> tuple:
        """The delta parameters in the order the fused op takes them; defined by each subclass."""
        raise NotImplementedError

    def shard_plan(self, cls_name: str, *strategies: StrategyType) -> list:
        """Validate the strategies (errors name ``cls_name``); return ``(primitive, strategy)`` pairs.

        ``strategies`` in the order of ``shard``'s arguments: the down matmuls', the down bias add's, the
        non-linearity's, the up matmuls', the up bias add's, the residual add's.
        """
        n_down, n_up = len(self.down_matmuls), len(self.up_matmuls)
        down, rest = strategies[:n_down], strategies[n_down:]
        bias_down, non_linearity, up, rest = rest[0], rest[1], rest[2:2 + n_up], rest[2 + n_up:]
        bias_up, residual_add = rest
        entries = ([(arg, attr, st, (2, 2)) for (arg, attr), st in zip(self.down_matmuls, down)]
                   + [("strategy_bias_down_sampler", "bias_add_down_sampler", bias_down, (2, 1))]
                   + [(arg, attr, st, (2, 2)) for (arg, attr), st in zip(self.up_matmuls, up)]
                   + [("strategy_bias_up_sampler", "bias_add_up_sampler", bias_up, (2, 1)),
                      ("strategy_residual_add", "residual_add", residual_add, (2, 2))])
        check_strategies(cls_name, {arg: (st, dims) for arg, _, st, dims in entries})
        pairs = activation_shard_plan(self.non_linearity, non_linearity, "non_linearity",
                                      "strategy_non_linearity", cls_name)
        return pairs + [(getattr(self, attr), st) for _, attr, st, _ in entries]

    def construct(self, x: Tensor) -> Tensor:
        check_dense_input(x, self.hidden_size, "hidden_size", self.cls_name)
        x_shape = x.shape
        x2 = self.reshape(x, (-1, x_shape[-1]))
        cdt = self.compute_dtype
        h = self.cast(x2, cdt)
        params = ()
        for param in self.delta_parameters():
            params = params + (self.cast(param, cdt),)
        same_dtype = x.dtype == cdt
        if self.kernel.fused:
            out = self.kernel(h, *params)  # h + bottleneck(h), in compute_dtype
            if not same_dtype:  # the residual in the input's dtype: x + (op(h) - h)
                out = self.residual_add(x2, self.cast(out - h, x.dtype))
        else:
            out = self.composed(h, params, None if same_dtype else x2)
        return self.reshape(out, x_shape)

    def shard_block(self, strategies: tuple, strategy_residual_add: StrategyType,
                    strategy_residential_add: StrategyType) -> "AdapterBlock":
        """``shard`` of the subclass: ``strategies`` are its own, in ``shard_plan`` order, without the residual.

        Everything is validated before anything is attached; any strategy switches the block to composed
        (the fused op carries no strategies).
        """
        cls_name = type(self).__name__
        residual = resolve_residual_alias(strategy_residual_add, strategy_residential_add, cls_name)
        strategies = tuple(strategies) + (residual,)
        pairs = self.shard_plan(cls_name, *strategies)
        if any(st is not None for st in strategies):
            self.use_composed()
        apply_strategies(pairs)
        return self


class DenseWithDelta(GradSafeCell):
    """The frozen dense part shared by ``AdapterDense`` and ``LowRankAdapterDense``.

    ``hidden = activation(x W^T + b)`` with ``weight: (out_channels, in_channels)`` (or ``x W`` with
    ``weight: (in_channels, out_channels)`` when ``transpose_b`` is False) and ``bias: (out_channels,)``,
    named as in ``nn.Dense`` and computed in ``compute_dtype``; ``hidden`` is
    cast back to the input dtype and passed to the delta layer (an :class:`AdapterBlock`, held in the
    attribute named ``delta_attr``).
    """

    delta_attr = ""

    @staticmethod
    def check_dense_args(cls_name: str, in_channels: Any, out_channels: Any, weight_init: Any, bias_init: Any,
                         has_bias: Any, activation: Any, transpose_b: Any = True, base: Any = None,
                         compute_dtype: Any = None):
        """Validate the ``nn.Dense`` arguments (the weight layout, a quantised ``base``); return the resolved
        activation (or None)."""
        check_positive_int(in_channels, "in_channels", cls_name)
        check_positive_int(out_channels, "out_channels", cls_name)
        check_bool(has_bias, "has_bias", cls_name)
        check_bool(transpose_b, "transpose_b", cls_name)
        shape = (out_channels, in_channels) if transpose_b else (in_channels, out_channels)
        check_init(weight_init, "weight_init", cls_name, shape)
        check_init(bias_init, "bias_init", cls_name, (out_channels,))
        if base is not None:
            _quantized_base().check_base(base, in_channels, out_channels, has_bias, transpose_b, compute_dtype,
                                         cls_name)
        return resolve_activation(activation, "activation", cls_name, allow_none=True)

    def build_dense(self, in_channels: int, out_channels: int, weight_init: InitType, bias_init: InitType,
                    has_bias: bool, activation, param_init_type: ms.dtype.Type,
                    compute_dtype: ms.dtype.Type, make_delta: Callable[[], nn.Cell], transpose_b: bool = True,
                    base: Optional[nn.Cell] = None, backend: Optional[str] = None) -> None:
        """Create the dense parameters (or take over a quantised ``base``'s) and primitives, then the delta layer
        from ``make_delta()``."""
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.has_bias = has_bias
        self.compute_dtype = compute_dtype
        self.param_init_type = param_init_type
        self.transpose_b = transpose_b
        self.quantized_base = base is not None
        if self.quantized_base:  # h = x deq(Wq)^T + b: quant_lora_linear without the LoRA term
            _quantized_base().attach_base(self, base)
            self.base_kernel = _quantized_base().base_kernel(self, backend)
        else:
            shape = (out_channels, in_channels) if transpose_b else (in_channels, out_channels)
            self.weight = new_parameter(weight_init, shape, param_init_type, "weight")
            self.bias = new_parameter(bias_init, (out_channels,), param_init_type, "bias") if has_bias else None
        self.matmul = ops.MatMul(transpose_b=transpose_b)
        self.bias_add = ops.BiasAdd()
        self.activation = activation
        self.activation_flag = activation is not None
        self.cast = ops.Cast()
        self.reshape = ops.Reshape()
        setattr(self, self.delta_attr, make_delta())

    def dense(self, x2: Tensor) -> Tensor:
        """``activation(x W^T + b)`` (``x W + b`` if not ``transpose_b``) for ``x2: (N, in)`` in ``compute_dtype``."""
        x2 = self.cast(x2, self.compute_dtype)
        if self.quantized_base:
            bias = self.cast(self.bias, self.compute_dtype) if self.has_bias else None
            offsets = self.weight_offsets if self.quant_has_offsets else self._no_offsets
            h = self.base_kernel(x2, self.weight_codes, self.weight_scales, offsets, self._lut, bias, None, None, None)
        else:
            h = self.matmul(x2, self.cast(self.weight, self.compute_dtype))
            if self.has_bias:
                h = self.bias_add(h, self.cast(self.bias, self.compute_dtype))
        if self.activation_flag:
            h = self.activation(h)
        return h

    def construct(self, x: Tensor) -> Tensor:
        check_dense_input(x, self.in_channels, "in_channels", self.cls_name)
        x_shape = x.shape
        hidden = self.cast(self.dense(self.reshape(x, (-1, x_shape[-1]))), x.dtype)
        out = self.apply_delta(hidden)
        return self.reshape(out, x_shape[:-1] + (self.out_channels,))

    def extend_repr(self) -> str:
        s = f"in_channels={self.in_channels}, out_channels={self.out_channels}, has_bias={self.has_bias}"
        if self.activation_flag:
            s += f", activation={self.activation}"
        if self.quantized_base:
            s += f", base={self.quantized_weight.format}"
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
        if self.quantized_base and any(st is not None for st in (strategy_matmul_org, strategy_bias_org,
                                                                 strategy_activation_org)):
            raise ValueError(f"For '{cls_name}', shard strategies of the dense part are not supported on a quantised "
                             f"base (quant_lora_linear carries none).")
        check_strategies(cls_name, {
            "strategy_matmul_org": (strategy_matmul_org, (2, 2)),
            "strategy_bias_org": (strategy_bias_org, (2, 1)),
        })
        pairs = activation_shard_plan(self.activation, strategy_activation_org, "activation",
                                      "strategy_activation_org", cls_name)
        return pairs + [(self.matmul, strategy_matmul_org), (self.bias_add, strategy_bias_org)]

    def shard_with_delta(self, dense_strategies: tuple, delta_strategies: tuple, strategy_residual_add: StrategyType,
                         strategy_residential_add: StrategyType) -> "DenseWithDelta":
        """``shard`` of the subclass: the dense part's three strategies, then the delta layer's (in its
        ``shard_plan`` order, without the residual). Everything is validated before anything is attached;
        any strategy switches the delta layer to composed.
        """
        cls_name = type(self).__name__
        residual = resolve_residual_alias(strategy_residual_add, strategy_residential_add, cls_name)
        delta_strategies = tuple(delta_strategies) + (residual,)
        pairs = self.shard_dense_plan(*dense_strategies)
        pairs += getattr(self, self.delta_attr).shard_plan(cls_name, *delta_strategies)
        self.shard_delta_composed(tuple(dense_strategies) + delta_strategies)
        apply_strategies(pairs)
        return self
