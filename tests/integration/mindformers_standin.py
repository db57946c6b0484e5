"""A stand-in for the parts of mindformers (2.0/2.1) that drive mindpet, written from their documented
behaviour (mindformers itself cannot be installed from PyPI here):

- ``StandInLinear``: the layout of ``mindformers.modules.layers.Linear(in_channels, out_channels,
  weight_init, bias_init, has_bias, activation, transpose_b=True, param_init_type, compute_dtype)``:
  ``weight`` [out, in] when ``transpose_b`` else [in, out], ``bias`` [out], attributes ``matmul``
  (``MatMul(transpose_b)``), ``bias_add`` (``Add``), ``activation`` (a Cell or None),
  ``activation_flag``, ``has_bias``, ``transpose_b``, ``param_init_type``, ``dtype`` (the compute dtype);
  ``y = activation(cast(x) @ W(^T) + b)`` in the compute dtype, cast back to the input's dtype.
- ``replace_with_lora``: the call pattern of mindformers' ``LoraAdapter.get_pet_model(model,
  LoraConfig(...))``: walk ``net._cells``; a child whose *attribute name* ``re.match``es
  ``target_modules`` (and none of ``exclude_layers``) and is a Dense or Linear is replaced by
  ``mindpet.delta.lora.LoRADense(in_channels=, out_channels=, lora_rank=, lora_alpha=, lora_dropout=,
  param_init_type=, compute_dtype=, has_bias=, activation=cell.activation)``, then the new cell takes over
  the old ``matmul``, ``weight`` and (with a bias) ``bias`` and ``bias_add``; other children are searched
  recursively; finally ``model.update_parameters_name()``.
- ``PetType``: mindformers passes this ``(str, Enum)`` member to ``freeze_delta``.
"""
from __future__ import annotations

import enum
import re

from mindspore import Parameter, nn, ops
from mindspore.common import dtype as mstype
from mindspore.common.initializer import Normal, initializer

from mindpet.delta.lora import LoRADense


class PetType(str, enum.Enum):
    LORA = "lora"
    P_TUNING_V2 = "ptuning2"


class StandInLinear(nn.Cell):
    """mindformers' Linear layout (module docstring)."""

    def __init__(self, in_channels, out_channels, weight_init="normal", bias_init="zeros", has_bias=True,
                 activation=None, transpose_b=True, param_init_type=mstype.float32,
                 compute_dtype=mstype.float16):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.transpose_b, self.has_bias = transpose_b, has_bias
        if weight_init == "normal":
            weight_init = Normal(sigma=0.01)
        shape = [out_channels, in_channels] if transpose_b else [in_channels, out_channels]
        self.weight = Parameter(initializer(weight_init, shape, param_init_type), name="weight")
        self.matmul = ops.MatMul(transpose_b=transpose_b)
        self.bias = None
        if has_bias:
            self.bias = Parameter(initializer(bias_init, [out_channels], param_init_type), name="bias")
            self.bias_add = ops.Add()
        self.activation = activation() if isinstance(activation, type) else activation
        self.activation_flag = self.activation is not None
        self.param_init_type, self.dtype = param_init_type, compute_dtype
        self.cast = ops.Cast()

    def construct(self, x):
        out_shape = x.shape[:-1] + (self.out_channels,)
        x2d = x.reshape(-1, self.in_channels)
        out = self.matmul(self.cast(x2d, self.dtype), self.cast(self.weight, self.dtype))
        if self.has_bias:
            out = self.bias_add(out, self.cast(self.bias, self.dtype))
        if self.activation_flag:
            out = self.activation(out)
        return self.cast(out, x.dtype).reshape(out_shape)


def _dtypes(cell, param_init_type, compute_dtype):
    """mindformers' get_dtype: the config's dtypes, else the replaced cell's."""
    if isinstance(cell, nn.Dense):
        return param_init_type or cell.weight.dtype, compute_dtype or cell.weight.dtype
    return param_init_type or cell.param_init_type, compute_dtype or cell.dtype


def _matches_any(name, patterns):
    return any(re.match(p, name) for p in patterns or ())


def replace_with_lora(net, target_modules, lora_rank=8, lora_alpha=16, lora_dropout=0.01,
                      exclude_layers=None, param_init_type=None, compute_dtype=None, _top=True):
    """The replacement walk of mindformers' LoraAdapter.get_pet_model (module docstring)."""
    for name, cell in list(net._cells.items()):  # pylint: disable=protected-access
        if cell is None or _matches_any(name, exclude_layers):
            continue
        if re.match(target_modules, name):
            if not isinstance(cell, (nn.Dense, StandInLinear)):
                continue
            p_type, c_type = _dtypes(cell, param_init_type, compute_dtype)
            dest = LoRADense(in_channels=cell.in_channels, out_channels=cell.out_channels, lora_rank=lora_rank,
                             lora_alpha=lora_alpha, lora_dropout=lora_dropout, param_init_type=p_type,
                             compute_dtype=c_type, has_bias=cell.has_bias, activation=cell.activation)
            dest.matmul = cell.matmul
            dest.weight = cell.weight
            if cell.has_bias:
                dest.bias = cell.bias
                dest.bias_add = cell.bias_add
            net._cells[name] = dest  # pylint: disable=protected-access
        else:
            replace_with_lora(cell, target_modules, lora_rank, lora_alpha, lora_dropout, exclude_layers,
                              param_init_type, compute_dtype, _top=False)
    if _top:
        net.update_parameters_name()
    return net
