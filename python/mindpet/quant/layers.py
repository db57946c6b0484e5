"""``QuantizedDense``: a frozen ``nn.Dense`` whose weight is stored quantised (int8, nf4, q4_0, q4_1, q5_0, q5_1,
q8_0)."""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype
from mindspore.ops import Primitive

from mindpet._eager import GradSafeCell
from mindpet._mindspore import constexpr
from mindpet.delta._activation import resolve_activation
from mindpet.delta._parameters import InitType, new_parameter
from mindpet.delta._validation import FLOAT_DTYPES, check_bool, check_dense_input, check_dtype, check_init, \
    check_positive_int
from mindpet.quant import _weight
from mindpet.quant.formats import QuantizedTensor

__all__ = ["QuantizedDense"]


class _Meta:  # what check_dense_input reads of a Tensor, rebuilt from the compile-time shape and dtype
    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype


@constexpr(check=False)
def _check_input(shape, dtype, in_channels) -> bool:
    """``check_dense_input`` as a ``constexpr``: evaluated in Python at compile time in GRAPH mode, so its checks
    add no nodes to each layer's graph (as plain code ~3 MiB of compiled-graph memory per layer, measured)."""
    check_dense_input(_Meta(shape, dtype), in_channels, "in_channels", "QuantizedDense")
    return True


def quant_kernel(weight: _weight.QuantizedWeight, has_bias: bool, has_lora: bool, scale: float = 1.0,
                 backend: Optional[str] = None, dtype: Any = None):
    """The ``quant_lora_linear`` op Cell for ``weight`` (the one place a layer on a quantised base builds it)."""
    from mindpet.kernels.quant_linear import QuantLoraLinear  # pylint: disable=import-outside-toplevel
    return QuantLoraLinear(weight.bits, weight.group_size, weight.has_offsets, has_bias, has_lora, scale=scale,
                           backend=backend, dtype=dtype, quant_format=weight.format)


class QuantizedDense(GradSafeCell):
    r"""A frozen Dense layer with a quantised weight: ``y = activation(x\,\mathrm{deq}(W_q)^T + b)``.

    ``deq(W_q) [out_channels, in_channels]`` is the float32 weight the stored codes stand for
    (``v(n, k) * scale + offset`` per group of ``G`` consecutive inputs; formats in
    :mod:`mindpet.quant.formats`); it is never materialised: the fused CPU kernel dequantises tile by tile,
    the composed path (other devices) dequantises with MindSpore ops inside the op.

    Parameters (all ``requires_grad=False``; the freezing utilities never make them trainable):
    ``weight_codes`` (int8 ``[N, K]``, uint8 ``[N, K/2]`` or, 5-bit, ``[N, K/2 + K/8]``), ``weight_scales``
    (float16 ``[N, K/G]``), ``weight_offsets`` (float16 ``[N, K/G]``, ``q4_1``, ``q5_1`` only), ``bias``
    (``[N]``, ``has_bias`` only, in ``compute_dtype``). Build one from a float layer with :meth:`from_dense`, from a
    :class:`~mindpet.quant.formats.QuantizedTensor` (a GGUF file: no float weight ever) with
    :meth:`from_quantized`, or for a whole model with :func:`mindpet.quant.quantize_dense`. A new layer
    built by the constructor holds zero codes (load a checkpoint into it).

    Args:
        in_channels, out_channels: K and N, positive ints; K must be a multiple of the format's group size
            (32 for q4_0/q4_1/q5_0/q5_1/q8_0, 64 for nf4; int8 is per output channel).
        format: ``'int8'``, ``'nf4'``, ``'q4_0'``, ``'q4_1'``, ``'q5_0'``, ``'q5_1'`` or ``'q8_0'``.
        has_bias: whether ``bias`` is added. bias_init: its initializer (as ``nn.Dense``).
        activation: as ``nn.Dense`` (a name, Cell, Primitive or None), applied after the bias.
        compute_dtype: float32 (default) or float16: the dtype ``x``, the dequantised weight and the
            result are computed in; the output has the input's dtype.
        backend (keyword-only): ``'auto'``, ``'fused'``, ``'composed'`` or None, as for ``LoRADense``.

    Raises:
        TypeError: a channel count not an int, ``format`` not a str, ``has_bias`` not a bool, a dtype that is
            not float16/float32, a bad activation or init.
        ValueError: a non-positive channel count, an unknown format, ``in_channels`` not a multiple of the
            group size, an input whose last dimension is not ``in_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, format: str,  # pylint: disable=redefined-builtin
                 has_bias: bool = True, activation: Union[str, nn.Cell, Primitive, None] = None,
                 compute_dtype=mstype.float32, bias_init: InitType = "zeros", *, backend: Optional[str] = None):
        super().__init__()
        cls = self.cls_name
        check_positive_int(in_channels, "in_channels", cls)
        check_positive_int(out_channels, "out_channels", cls)
        _weight.check_format(format, cls)
        check_bool(has_bias, "has_bias", cls)
        check_dtype(compute_dtype, "compute_dtype", cls, FLOAT_DTYPES)
        if has_bias:
            check_init(bias_init, "bias_init", cls, (out_channels,))
        weight = _weight.QuantizedWeight(format, out_channels, in_channels).check(cls)
        activation = resolve_activation(activation, "activation", cls)

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.has_bias = has_bias
        self.compute_dtype = compute_dtype
        _weight.attach(self, weight)
        self.bias = None
        if has_bias:
            self.bias = new_parameter(bias_init, (out_channels,), compute_dtype, "bias", requires_grad=False)
        self.activation = activation
        self.activation_flag = activation is not None
        self.kernel = quant_kernel(weight, has_bias, has_lora=False, backend=backend, dtype=compute_dtype)
        self.cast = ops.Cast()

    @property
    def format(self) -> str:
        return self.quantized_weight.format

    @property
    def backend(self) -> str:
        """The implementation that runs the layer (``'composed'``, ``'cpu'``, ``'ascend'``; read-only)."""
        return self.kernel.impl

    @property
    def nbytes(self) -> int:
        """Static bytes of the quantised weight (codes, scales, offsets; the bias not counted)."""
        return self.quantized_weight.nbytes

    @classmethod
    def from_quantized(cls, weight: QuantizedTensor, bias: Any = None,
                       activation: Union[str, nn.Cell, Primitive, None] = None, compute_dtype=mstype.float32,
                       *, backend: Optional[str] = None) -> "QuantizedDense":
        """A layer holding ``weight`` (a QuantizedTensor, copied bit-exact; no float weight is ever made) and
        ``bias`` (None, or a Tensor/array/Parameter ``[out]``; a Parameter of ``compute_dtype`` is taken over
        as is, frozen)."""
        if not isinstance(weight, QuantizedTensor):
            raise TypeError(f"For 'QuantizedDense.from_quantized', 'weight' must be a QuantizedTensor, but got "
                            f"{type(weight).__name__}.")
        out_channels, in_channels = (int(d) for d in weight.shape)
        if isinstance(bias, np.ndarray):
            bias = Tensor(bias)
        layer = cls(in_channels, out_channels, weight.format, has_bias=bias is not None, activation=activation,
                    compute_dtype=compute_dtype, bias_init=bias if bias is not None else "zeros", backend=backend)
        _weight.assign(layer, weight, "QuantizedDense.from_quantized")
        if isinstance(bias, Parameter) and bias.dtype == compute_dtype:
            bias.requires_grad = False
            layer.bias = bias
        return layer

    @classmethod
    def from_dense(cls, dense: nn.Cell, format: str, *,  # pylint: disable=redefined-builtin
                   backend: Optional[str] = None) -> "QuantizedDense":
        """The quantised replacement of a Linear-like cell (``nn.Dense``, or a class :mod:`mindpet.linear_adapters`
        reads): its weight quantised (one float copy of this weight only), its bias Parameter, activation and
        compute dtype (bfloat16 computes in float32) taken over. See :func:`mindpet.quant.quantize_dense`."""
        from mindpet.quant.convert import quantize_cell  # pylint: disable=import-outside-toplevel
        return quantize_cell(dense, format, "QuantizedDense.from_dense", backend=backend)

    def quantized_tensor(self) -> QuantizedTensor:
        """A host copy of the quantised weight (for :mod:`mindpet.quant.storage`)."""
        return _weight.read(self)

    def quantized_tensors(self) -> dict:
        """``{"weight": QuantizedTensor, "bias": array}``: the hook of :func:`mindpet.quant.save_quantized`
        (``save_quantized(layer, path)``); a whole model: :func:`mindpet.quant.quantized_tensors`."""
        from mindpet.quant.state import quantized_tensors  # pylint: disable=import-outside-toplevel
        return quantized_tensors(self)

    def load_quantized_tensor(self, weight: QuantizedTensor) -> None:
        """Set the weight from ``weight`` bit-exact (same format and shape; ValueError otherwise)."""
        _weight.assign(self, weight, "QuantizedDense.load_quantized_tensor")

    def frozen_parameters(self):
        """The Parameters that stay frozen whatever the freezing utilities are asked (codes, scales, offsets, bias)."""
        return _weight.frozen_parameters(self)

    def dequantized_weight(self, dtype=np.float32) -> np.ndarray:
        """``deq(W_q) [out_channels, in_channels]`` on the host (for checks and merging into a float layer)."""
        return _weight.dequantized(self, dtype)

    def construct(self, x):
        _check_input(x.shape, x.dtype, self.in_channels)
        ori_dtype = x.dtype
        offsets = self.weight_offsets if self.quant_has_offsets else self._no_offsets
        # the kernel op flattens x [*, K] to rows and restores the leading dimensions
        y = self.kernel(self.cast(x, self.compute_dtype), self.weight_codes, self.weight_scales, offsets, self._lut,
                        self.bias, None, None, None)
        if self.activation_flag:
            y = self.activation(y)
        return self.cast(y, ori_dtype)

    def extend_repr(self) -> str:
        s = (f"in_channels={self.in_channels}, out_channels={self.out_channels}, format={self.format}, "
             f"has_bias={self.has_bias}, compute_dtype={self.compute_dtype}")
        if self.activation_flag:
            s += f", activation={self.activation}"
        return s + f", backend={self.backend}"

