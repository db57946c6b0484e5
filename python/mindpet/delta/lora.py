"""LoRA: a Dense layer plus a trainable low-rank update, built from MindSpore primitives."""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype
from mindspore.common.initializer import HeUniform
from mindspore.ops import Primitive

from mindpet._eager import GradSafeCell
from mindpet._mindspore import compiling, graph_seeds, invalidate_compiled_graphs
from mindpet.delta._activation import activation_shard_plan, resolve_activation
from mindpet.delta._parameters import InitType, new_parameter
from mindpet.delta._strategy import apply_strategies, check_strategies
from mindpet.delta._validation import (FLOAT_DTYPES_WITH_BF16, check_bool, check_dtype, check_dense_input,
                                       check_float_in_range, check_init, check_number, check_positive_int)
from mindpet.delta.registry import register_layer
from mindpet.kernels import DropoutKey, LoraLinear
from mindpet.kernels.composed import dense_composed, lora_linear_composed

Strategy = Optional[tuple]

__all__ = ["LoRADense"]


def quantized_base():
    """:mod:`mindpet.quant.lora_base`, the quantised-base strategy of LoRADense (imported on first use: the
    quant package builds on the delta layers)."""
    from mindpet.quant import lora_base  # pylint: disable=import-outside-toplevel
    return lora_base


def _as_float64(param: Parameter) -> np.ndarray:
    """A float64 host copy of ``param`` (any float dtype, bfloat16 included)."""
    return param.astype(mstype.float32).asnumpy().astype(np.float64)


def _assign(param: Parameter, value: np.ndarray) -> None:
    """Set ``param`` to ``value`` rounded to the parameter's dtype."""
    if param.dtype == mstype.float16:
        param.set_data(Tensor(value.astype(np.float16)))
    else:  # float32; bfloat16 through float32
        param.set_data(Tensor(value.astype(np.float32)).astype(param.dtype))


class Dropout(ops.Dropout):
    """``ops.Dropout``, also reachable as ``.dropout``: mindformers' parallel code shards LoRA's dropout as
    ``layer.lora_dropout.dropout.shard(...)`` (mindpet 1.0.4 held an ``nn.Dropout`` there). The class keeps
    the name ``Dropout``, by which MindSpore finds the operator; a deep copy keeps the alias."""

    @property
    def dropout(self) -> "Dropout":
        return self


@register_layer("lora", ("in_channels", "out_channels", "has_bias", "lora_rank", "lora_alpha",
                         ("lora_dropout", "lora_dropout_p")), injectable=True, inject_defaults={"lora_dropout": 0.0})
class LoRADense(GradSafeCell):
    r"""Dense layer with a LoRA branch (Hu et al., 2021), as one fused op or composed from MindSpore primitives.

    .. math::
        y = \mathrm{activation}\big(X W^T + b + s \cdot \mathrm{dropout}(X) A^T B^T\big),
        \qquad s = \mathrm{lora\_alpha} / \mathrm{lora\_rank}

    Shapes: ``X`` (*, in_channels); ``weight`` W (out_channels, in_channels), or (in_channels,
    out_channels) with ``transpose_b=False`` (then the layer computes ``X W``, the weight used as laid out);
    ``bias`` b (out_channels,); ``mindpet_delta_lora_a`` A (lora_rank, in_channels); ``mindpet_delta_lora_b``
    B (out_channels, lora_rank) in either layout; ``y`` (*, out_channels). ``weight``/``bias`` carry the
    names of ``nn.Dense``, so a pre-trained Dense checkpoint loads unchanged; with the default
    ``lora_b_init`` (zeros) the layer starts equal to that Dense. Dropout acts only in training mode
    (``set_train()``).

    Precision: parameters are stored in ``param_init_type``; the input and parameters are cast to
    ``compute_dtype``, in which the matmuls, bias add, scaling, sum and activation run; the output is
    cast back to the input's dtype. bfloat16 is accepted for both. When the layer is built with
    ``device_target='CPU'`` (where MatMul has no bfloat16 kernel), a bfloat16 ``compute_dtype`` is
    emulated: every matmul operand and the output are rounded to bfloat16, the arithmetic runs in
    float32 (float32 accumulation, as bfloat16 hardware does). Elsewhere bfloat16 runs natively.

    Args:
        in_channels: size of the last input dimension.
        out_channels: size of the last output dimension.
        lora_rank: rank r of the update (rows of A, columns of B).
        lora_alpha: non-zero scale numerator; the update is scaled by ``lora_alpha / lora_rank``.
        lora_dropout: dropout probability on the LoRA branch's input, a float in [0, 1).
        lora_a_init, lora_b_init, weight_init, bias_init: Tensor (of the parameter's shape), initializer
            name, Initializer or number. A Tensor (also a lazily initialised one) is cast to ``param_init_type``.
        param_init_type: parameter dtype (float16, float32 or bfloat16).
        compute_dtype: computation dtype (float16, float32 or bfloat16).
        has_bias: whether to add ``bias``.
        activation: name (``'relu'``, ``'gelu'``: tanh approximation), Cell, Primitive or None.
        backend (keyword-only): ``'auto'``, ``'fused'``, ``'composed'`` or None (the global choice:
            ``mindpet.kernels.set_backend``, else the environment variable ``MINDPET_KERNEL_BACKEND``,
            else ``'auto'``). With a fused backend, ``x W^T + b + s dropout(x) A^T B^T`` runs as the
            fused ``lora_linear`` op (``ops/CONTRACTS.md``) in ``compute_dtype`` (the activation stays
            outside). The dropout mask (0 or ``1/(1-p)``) comes from the source named by the read-only
            property :attr:`dropout_mask_source`: ``'generator'`` when the layer runs the CPU kernels (the
            ``dropout_mask`` op's mask, ``ops/CONTRACTS.md`` 10, of a key from MindSpore's default generator,
            generated inside the kernel in the forward and again in the backward, so no mask tensor is kept:
            every call site, also each layer of a shared ``lazy_inline`` block graph, draws its own mask;
            reproducible under ``mindspore.set_seed``, see the README), else ``'primitive'`` (the layer's own Dropout
            primitive ``lora_dropout``, which also serves the composed path and its shard strategy). Parameters, their
            names and checkpoints do not depend on the backend, and the results agree within float
            rounding (the fused op rounds once, the composed path after each matmul). A bfloat16
            ``compute_dtype`` has no fused kernel: ``'auto'`` runs composed, ``'fused'`` raises.
            :meth:`shard` switches the layer to composed (the fused op carries no strategies).
            The implementation that runs is the read-only property :attr:`backend`.
        transpose_b (keyword-only): the layout of ``weight``: True (default) ``(out_channels,
            in_channels)`` as ``nn.Dense``; False ``(in_channels, out_channels)``, as a mindformers ``Linear``
            built with ``transpose_b=False``. The fused kernels take the first layout only, so False runs
            composed (``'fused'`` raises). Assigning a ``matmul`` primitive (``layer.matmul =
            ops.MatMul(transpose_b=...)``, as mindformers' ``get_pet_model`` does together with the replaced
            Linear's ``weight``) sets the layout from the primitive's ``transpose_b``.
        base (keyword-only): None (default: the layer's own float ``weight``), or a
            :class:`mindpet.quant.QuantizedDense` of the same ``in_channels``, ``out_channels`` and ``has_bias``:
            the layer then runs on that frozen quantised base (QLoRA), taking over its Parameters
            (``weight_codes``, ``weight_scales``[, ``weight_offsets``], ``bias``: same objects and names, never
            trainable; ``weight`` is None, ``weight_init``/``bias_init``/``param_init_type`` of the base are not
            used), through the ``quant_lora_linear`` op: ``y = x deq(W_q)^T + b + s (x_d A^T) B^T`` (fused on
            CPU, composed elsewhere). ``compute_dtype`` float32 or float16; ``transpose_b`` True; no ``shard``;
            :meth:`merge` raises ValueError (merging into a quantised weight is lossy: see
            ``mindpet.merge_and_unload(model, dequantize=True)``). ``inject`` on a
            :func:`mindpet.quant.quantize_dense` model builds these layers.

    Raises:
        TypeError: ``in_channels``, ``out_channels`` or ``lora_rank`` not an int (bool included);
            ``lora_alpha`` not an int or float; ``lora_dropout`` not a float; ``has_bias`` not a bool;
            ``activation`` not a str, Cell, Primitive or None; a dtype not float16/float32/bfloat16;
            an init of another type; an input ``x`` that is not float16/float32/float64/bfloat16 (GRAPH
            mode: at compile time).
        ValueError: a non-positive channel count or rank; ``lora_alpha`` zero or not finite;
            ``lora_dropout`` outside [0, 1); a Tensor init of the wrong shape; an unknown
            initializer or activation name; an input whose last dimension is not ``in_channels``;
            an unknown ``backend``.
        mindpet.kernels.FusedBackendUnavailable: ``backend='fused'`` where no fused kernel can run
            (library not built, no kernels for the device, a bfloat16 ``compute_dtype``, or
            ``transpose_b=False``).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 lora_rank: int,
                 lora_alpha: Union[int, float],
                 lora_dropout: float,
                 lora_a_init: InitType = HeUniform(negative_slope=math.sqrt(5)),
                 lora_b_init: InitType = 'zero',
                 param_init_type=mstype.float32,
                 compute_dtype=mstype.float16,
                 weight_init: InitType = 'normal',
                 bias_init: InitType = 'zeros',
                 has_bias: bool = True,
                 activation: Union[str, nn.Cell, Primitive, None] = None,
                 *,
                 backend: Optional[str] = None,
                 transpose_b: bool = True,
                 base: Optional[nn.Cell] = None):
        super().__init__()
        cls = self.cls_name
        # Validate every argument before building anything.
        check_positive_int(in_channels, "in_channels", cls)
        check_positive_int(out_channels, "out_channels", cls)
        check_positive_int(lora_rank, "lora_rank", cls)
        check_number(lora_alpha, "lora_alpha", cls)
        if lora_alpha == 0 or not math.isfinite(lora_alpha):
            raise ValueError(f"For '{cls}', 'lora_alpha' must be a finite non-zero number, but got {lora_alpha}.")
        check_float_in_range(lora_dropout, "lora_dropout", cls, 0.0, 1.0)
        check_dtype(param_init_type, "param_init_type", cls, FLOAT_DTYPES_WITH_BF16)
        check_dtype(compute_dtype, "compute_dtype", cls, FLOAT_DTYPES_WITH_BF16)
        check_bool(has_bias, "has_bias", cls)
        check_bool(transpose_b, "transpose_b", cls)
        weight_shape = (out_channels, in_channels) if transpose_b else (in_channels, out_channels)
        check_init(weight_init, "weight_init", cls, weight_shape)
        if has_bias:
            check_init(bias_init, "bias_init", cls, (out_channels,))
        check_init(lora_a_init, "lora_a_init", cls, (lora_rank, in_channels))
        check_init(lora_b_init, "lora_b_init", cls, (out_channels, lora_rank))
        activation = resolve_activation(activation, "activation", cls)
        if base is not None:
            quantized_base().check_base(base, in_channels, out_channels, has_bias, transpose_b, compute_dtype, cls)

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.lora_dropout_p = lora_dropout
        self.scaling = lora_alpha / lora_rank
        self.has_bias = has_bias
        self.param_init_type = param_init_type
        self.compute_dtype = compute_dtype
        # CPU has no bfloat16 MatMul: round operands to bfloat16, compute in float32.
        self._emulate_bf16 = (compute_dtype == mstype.bfloat16
                              and ms.get_context("device_target") == "CPU")
        self._op_dtype = mstype.float32 if self._emulate_bf16 else compute_dtype
        self._round_to = mstype.bfloat16 if self._emulate_bf16 else None

        # The base: a float weight (and bias) of the layer's own, or the frozen Parameters of a QuantizedDense
        # taken over (the same objects and names: 'weight_codes', 'weight_scales'[, 'weight_offsets'], 'bias').
        self.quantized_base = base is not None
        if self.quantized_base:
            quantized_base().attach_base(self, base)
        else:
            self.weight = new_parameter(weight_init, weight_shape, param_init_type, "weight")
            self.bias = new_parameter(bias_init, (out_channels,), param_init_type, "bias") if has_bias else None
        self.mindpet_delta_lora_a = new_parameter(lora_a_init, (lora_rank, in_channels), param_init_type,
                                                  "mindpet_delta_lora_a")
        self.mindpet_delta_lora_b = new_parameter(lora_b_init, (out_channels, lora_rank), param_init_type,
                                                  "mindpet_delta_lora_b")
        self._scaling = Tensor(self.scaling, self._op_dtype)

        # One primitive per documented shard strategy.
        self.transpose_b = transpose_b
        self.bias_add = ops.BiasAdd()
        seed0, seed1 = graph_seeds("dropout")
        self.lora_dropout = Dropout(1.0 - lora_dropout, seed0, seed1)
        self.lora_a_matmul = ops.MatMul(transpose_b=True)
        self.lora_b_matmul = ops.MatMul(transpose_b=True)
        self.mul = ops.Mul()
        self.add = ops.Add()
        self.activation = activation
        self.activation_flag = activation is not None
        self.cast = ops.Cast()
        self.reshape = ops.Reshape()
        self.shape_op = ops.Shape()
        self.dtype_op = ops.DType()
        self.ones_like = ops.OnesLike()
        # The lora_linear op; it selects the backend (a bfloat16 compute dtype or the [in, out] layout has no
        # fused kernel) and holds no parameters: the layer passes its own at each call.
        if self.quantized_base:  # y = x deq(Wq)^T + b + s (x_d A^T) B^T: quant_lora_linear
            self.kernel = quantized_base().lora_kernel(self, backend)
        else:
            self.kernel = LoraLinear(self.scaling, has_bias=has_bias, backend=backend, dtype=compute_dtype,
                                     transpose_b=transpose_b)
        # the seed of generator masks: the primitive's graph seeds (ms.set_seed); none set: random
        self._mask_stream = (seed0 << 31) ^ seed1 if (seed0, seed1) != (0, 0) else None
        self._select_mask_source()
        self.matmul = ops.MatMul(transpose_b=transpose_b)
        # merge(): W holds W + s B A and construct skips the LoRA branch; the saved (A, B) undo it.
        self.merged = False
        self._merged_factors = None
        # A new Cell has phase 'train' but training False: in GRAPH mode a first (eval) call would be
        # cached under the 'train' key and reused after set_train(True), silently without dropout.
        self.set_train(False)

    def __setattr__(self, name, value):
        # The layout follows an assigned MatMul (mindformers' get_pet_model hands over the replaced Linear's
        # 'matmul' and 'weight'): one layout for the base matmul, the kernel selection and merge().
        if name == "matmul" and isinstance(value, ops.MatMul) and "kernel" in self.__dict__.get("_cells", {}):
            self._set_layout(bool(value.attrs.get("transpose_b", False)))
        super().__setattr__(name, value)

    def _set_layout(self, transpose_b: bool) -> None:
        """Switch the weight layout (``transpose_b``): the kernel is selected again for it (FusedBackendUnavailable
        under ``backend='fused'`` for ``False``); compiled graphs are marked stale."""
        if transpose_b == self.transpose_b:
            return
        if self.quantized_base:
            raise ValueError(f"For '{self.cls_name}', a quantised base is laid out [out_channels, in_channels]; "
                             f"its layout cannot change.")
        if self.merged:
            raise RuntimeError(f"For '{self.cls_name}', the weight layout cannot change while the layer is merged; "
                               f"call unmerge() first.")
        self.kernel = LoraLinear(self.scaling, has_bias=self.has_bias, backend=self.kernel.choice,
                                 dtype=self.compute_dtype, transpose_b=transpose_b)
        self._select_mask_source()
        self.transpose_b = transpose_b
        invalidate_compiled_graphs()

    def _select_mask_source(self) -> None:
        """The mask source for the kernel just selected: the generator on the CPU kernels, the Dropout primitive
        otherwise. From the generator the kernel takes the mask's dropout key (a ``DropoutKey``: the generator
        steps as for a ``DropoutMask``) and generates ``dropout_mask``'s mask itself, storing none for its
        backward."""
        self._generator_masks = self.kernel.impl == "cpu"
        if self._generator_masks:
            self.generator_dropout = DropoutKey(self.lora_dropout_p, stream=self._mask_stream)
        elif "generator_dropout" in self._cells:
            del self.generator_dropout

    def _base_frozen_eagerly(self) -> bool:
        """Run eagerly: whether weight and bias are both frozen (the fused op then skips both base
        gradients). Compiled: False (the graph drops unused base gradients itself, and stays correct
        if the base is unfrozen later)."""
        if compiling() or self.quantized_base:
            return False
        return not self.weight.requires_grad and (self.bias is None or not self.bias.requires_grad)

    @property
    def backend(self) -> str:
        """The implementation that runs the layer: ``'composed'``, ``'cpu'`` or ``'ascend'`` (read-only)."""
        return self.kernel.impl

    @property
    def dropout_mask_source(self) -> str:
        """Where the LoRA-dropout mask of a training call comes from (read-only): ``'generator'``
        (``dropout_mask``'s mask of a key from MindSpore's default generator, generated inside the CPU kernel) or
        ``'primitive'`` (the layer's own Dropout primitive ``lora_dropout``)."""
        return "generator" if self._generator_masks else "primitive"

    def _dropout_mask(self, x2d):
        """The mask of ``x2d`` (0 or ``1/(1-p)``) for the fused ops from the Dropout primitive (the ``'primitive'``
        source; the ``'generator'`` source passes the kernel a dropout key instead)."""
        return self.lora_dropout(self.ones_like(x2d))[0]

    def _lora(self, x2d):
        """x W^T + b + s dropout(x) A^T B^T in the compute dtype: the fused op, or the same op composed
        through the layer's own primitives (their shard strategies apply)."""
        bias = self._to_compute(self.bias) if self.has_bias else None
        lora_a = self._to_compute(self.mindpet_delta_lora_a)
        lora_b = self._to_compute(self.mindpet_delta_lora_b)
        dropout = self.training and self.lora_dropout_p > 0.0
        if self.quantized_base:  # the quantised op, fused or composed inside it; the layer draws the mask (key)
            offsets = self.weight_offsets if self.quant_has_offsets else self._no_offsets
            if dropout and self._generator_masks:  # the kernel generates the mask from its key
                return self.kernel(x2d, self.weight_codes, self.weight_scales, offsets, self._lut, bias, lora_a,
                                   lora_b, None, self.generator_dropout(x2d))
            mask = self._dropout_mask(x2d) if dropout else None
            return self.kernel(x2d, self.weight_codes, self.weight_scales, offsets, self._lut, bias, lora_a, lora_b,
                               mask)
        if self.kernel.fused:
            weight = self._to_compute(self.weight)
            if dropout and self._generator_masks:  # the kernel generates the mask from its key
                return self.kernel(x2d, weight, bias, lora_a, lora_b, None, self._base_frozen_eagerly(),
                                   self.generator_dropout(x2d))
            mask = self._dropout_mask(x2d) if dropout else None
            return self.kernel(x2d, weight, bias, lora_a, lora_b, mask, self._base_frozen_eagerly())
        x_d = x2d
        if dropout:
            x_d, _ = self.lora_dropout(x2d)
        return lora_linear_composed(x2d, self._to_compute(self.weight), bias, lora_a, lora_b, self._scaling, x_d=x_d, matmul=self.matmul,
                                    bias_add=self.bias_add, lora_a_matmul=self.lora_a_matmul,
                                    lora_b_matmul=self.lora_b_matmul, mul=self.mul, add=self.add,
                                    round_to=self._round_to)

    def _to_compute(self, t):
        """Cast to the compute dtype (bfloat16 on CPU: round to bfloat16, carry as float32)."""
        if self._emulate_bf16:
            return self.cast(self.cast(t, mstype.bfloat16), mstype.float32)
        return self.cast(t, self.compute_dtype)

    def _round(self, t):
        """Round an intermediate result to the compute dtype (a no-op unless bfloat16 is emulated)."""
        if self._emulate_bf16:
            return self.cast(self.cast(t, mstype.bfloat16), mstype.float32)
        return t

    def construct(self, x):
        check_dense_input(x, self.in_channels, "in_channels", "LoRADense")
        x_shape = self.shape_op(x)
        ori_dtype = self.dtype_op(x)
        x2d = x
        if len(x_shape) != 2:
            x2d = self.reshape(x, (-1, self.in_channels))
        x2d = self._to_compute(x2d)
        if self.merged:  # W already holds W + s B A (merge()): exactly the nn.Dense computation
            if self.training:
                raise RuntimeError("For 'LoRADense', the layer is merged (merge()) and its LoRA branch is skipped, "
                                   "so it cannot train: call unmerge() before set_train(True).")
            bias = self._to_compute(self.bias) if self.has_bias else None
            out = dense_composed(x2d, self._to_compute(self.weight), bias, self.matmul, self.bias_add, self._round_to)
        else:
            out = self._lora(x2d)
        if self.activation_flag:
            out = self.activation(out)
        out = self.cast(self._round(out), ori_dtype)
        if len(x_shape) != 2:
            out = self.reshape(out, x_shape[:-1] + (self.out_channels,))
        return out

    def merge(self) -> bool:
        r"""Fold the LoRA update into the weight, so that the layer costs what ``nn.Dense`` costs.

        .. math::
            W \leftarrow W + s\,B A, \qquad s = \mathrm{lora\_alpha} / \mathrm{lora\_rank}

        (``W^T += s (B A)^T`` for a ``transpose_b=False`` weight, in place: no transposed copy of ``W`` is
        kept). ``B A`` is computed in float64 and the sum rounded to the weight's dtype. While merged,
        the layer computes ``activation(x W^T + b)`` without the LoRA branch (A and B are not read, so
        changing them has no effect until ``unmerge()``), and calling it in training mode raises
        RuntimeError (the skipped branch would get no gradient). Compiled GRAPH-mode graphs are marked
        stale, so the next call recompiles once and really skips the branch.

        Returns:
            True if the layer was merged now; False if it was already merged (merging twice is a
            no-op: the update is never added twice).
        """
        if self.merged:
            return False
        if self.quantized_base:
            raise quantized_base().merge_error(self, "merge")
        a = _as_float64(self.mindpet_delta_lora_a)
        b = _as_float64(self.mindpet_delta_lora_b)
        _assign(self.weight, _as_float64(self.weight) + self.scaling * self._laid_out(b @ a))
        self._merged_factors = (a, b)
        self.merged = True
        invalidate_compiled_graphs()
        return True

    def _laid_out(self, update: np.ndarray) -> np.ndarray:
        """An ``[out, in]`` update in the weight's layout (a view of the host array)."""
        return update if self.transpose_b else update.T

    def unmerge(self) -> bool:
        r"""Undo :meth:`merge`: :math:`W \leftarrow W - s\,B_0 A_0`, and run the LoRA branch again.

        ``A_0, B_0`` are the values that ``merge()`` added (saved then), so ``W`` returns to its value
        before the merge even if A or B were changed while merged, within two roundings to the weight's
        dtype: :math:`|W_{restored} - W| \le u\,(|W + s B_0 A_0| + |W|)` per entry, ``u = 2^{-24}``
        for float32 (``2^{-11}`` float16, ``2^{-8}`` bfloat16). Compiled graphs are marked stale.

        Returns:
            True if the layer was unmerged now; False if it was not merged (a no-op).
        """
        if not self.merged:
            return False
        a, b = self._merged_factors
        _assign(self.weight, _as_float64(self.weight) - self.scaling * self._laid_out(b @ a))
        self._merged_factors = None
        self.merged = False
        invalidate_compiled_graphs()
        return True

    def shard(self,
              strategy_org_dense_matmul: Strategy = None,
              strategy_org_bias_add: Strategy = None,
              strategy_lora_dropout: Strategy = None,
              strategy_lora_a_matmul: Strategy = None,
              strategy_lora_b_matmul: Strategy = None,
              strategy_lora_mul: Strategy = None,
              strategy_lora_add: Strategy = None,
              strategy_activation: Strategy = None) -> "LoRADense":
        """Attach a parallel strategy to each primitive (effective in semi-auto/auto parallel mode).

        Setting any strategy switches the layer to the composed backend (the fused op carries no
        strategies); calling it with every strategy None changes nothing. Each strategy is a tuple
        with one tuple of ints per input (see ``Primitive.shard``); None
        keeps the default (data parallel). The matmuls of A and B use ``transpose_b=True``, the one of W the
        layer's ``transpose_b``.
        ``strategy_activation`` has one entry per input of the activation, which runs on 2-D data:
        ``((n, c),)`` (PReLU: ``((n, c), (1,))`` for data and weight); every activation name has
        primitives to carry it. Without activation it has no effect (entries of 2 dims are accepted).
        Everything is validated before any strategy is attached.

        Raises:
            TypeError: a strategy that is not a tuple of tuples.
            ValueError: non-positive entries or a wrong number/length of entries; LogSoftmax
                activation under semi-auto or auto parallel mode; an activation Cell without primitive
                (or with primitives of different inputs).
        """
        cls = self.cls_name
        plan = {
            "strategy_org_dense_matmul": (self.matmul, strategy_org_dense_matmul, (2, 2)),
            "strategy_org_bias_add": (self.bias_add, strategy_org_bias_add, (2, 1)),
            "strategy_lora_dropout": (self.lora_dropout, strategy_lora_dropout, (2,)),
            "strategy_lora_a_matmul": (self.lora_a_matmul, strategy_lora_a_matmul, (2, 2)),
            "strategy_lora_b_matmul": (self.lora_b_matmul, strategy_lora_b_matmul, (2, 2)),
            "strategy_lora_mul": (self.mul, strategy_lora_mul, (2, 0)),
            "strategy_lora_add": (self.add, strategy_lora_add, (2, 2)),
        }
        check_strategies(cls, {name: (strategy, ranks) for name, (_, strategy, ranks) in plan.items()})
        act_pairs = activation_shard_plan(self.activation, strategy_activation, "activation",
                                          "strategy_activation", cls)
        if any(strategy is not None for _, strategy, _ in plan.values()) or strategy_activation is not None:
            if self.quantized_base:
                raise ValueError(f"For '{cls}', shard strategies are not supported on a quantised base (the "
                                 f"quant_lora_linear op carries none).")
            self.kernel.use_composed("a shard strategy is set (the fused op carries none)")
            self._select_mask_source()  # composed: the Dropout primitive, which carries the strategy
        apply_strategies([(prim, strategy) for prim, strategy, _ in plan.values()] + act_pairs)
        return self

    def extend_repr(self) -> str:
        s = (f"in_channels={self.in_channels}, out_channels={self.out_channels}, lora_rank={self.lora_rank}, "
             f"lora_alpha={self.lora_alpha}, lora_dropout={self.lora_dropout_p}, has_bias={self.has_bias}, "
             f"compute_dtype={self.compute_dtype}")
        if not self.transpose_b:
            s += ", transpose_b=False"
        if self.quantized_base:
            s += f", base={self.quantized_weight.format}"
        if self.activation_flag:
            s += f", activation={self.activation}"
        return s + f", backend={self.backend}"
