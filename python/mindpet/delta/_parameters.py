"""The one way the delta layers create a Parameter from an initializer argument.

An initializer argument (``InitType``, as for ``mindspore.nn.Dense``) is a Tensor of the parameter's
shape, an initializer name (``'normal'``, ``'zeros'``, ...), an ``Initializer`` or a number. A Tensor may
be lazily initialised (``Tensor(shape=..., dtype=..., init=One())``, ``has_init`` True): it holds no data
until ``init_data()``, and MindSpore 2.10 crashes the process (segfault) when such a Tensor is cast, so
it is materialised first.
"""
from __future__ import annotations

import numbers
from typing import Union

import mindspore as ms
from mindspore import Parameter, Tensor
from mindspore.common import dtype as mstype
from mindspore.common.initializer import Initializer, initializer

__all__ = ["InitType", "new_parameter", "materialised"]

InitType = Union[Tensor, str, Initializer, numbers.Number]


def materialised(tensor: Tensor) -> Tensor:
    """``tensor`` with its data: a lazily initialised Tensor (``has_init``) through ``init_data()``."""
    return tensor.init_data() if getattr(tensor, "has_init", False) else tensor


def new_parameter(init: InitType, shape: tuple, dtype: ms.dtype.Type, name: str,
                  requires_grad: bool = True) -> Parameter:
    """A Parameter ``name`` of ``shape`` and ``dtype`` from an initializer argument.

    A Tensor (lazy or not) is cast to ``dtype``; its shape is the caller's to check (``check_init``).
    bfloat16 parameters are drawn in float32 and then rounded, so that they start from the values a
    float32 layer draws under the same seed.
    """
    make_dtype = mstype.float32 if dtype == mstype.bfloat16 else dtype
    if isinstance(init, Tensor):
        data = materialised(init).astype(make_dtype)
    else:
        data = initializer(init, shape, make_dtype)
    param = Parameter(data, name=name, requires_grad=requires_grad)
    if dtype == mstype.bfloat16:
        param.set_dtype(mstype.bfloat16)
    return param
