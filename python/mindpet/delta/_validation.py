"""Argument checks shared by every delta layer.

Each check raises *before* anything is built, with a message that names the class, the argument and
what was expected (the same style as ``mindspore.nn.Dense``).  ``bool`` is never accepted as an int.
"""
from __future__ import annotations

import numbers
from typing import Any, Iterable

import mindspore as ms
from mindspore import Tensor, ops
from mindspore.common.initializer import Initializer

from mindpet._mindspore import compiling, constexpr, initializer_names

FLOAT_DTYPES = (ms.float16, ms.float32)
FLOAT_DTYPES_WITH_BF16 = (ms.float16, ms.float32, ms.bfloat16)
# Input dtypes the Dense-like layers take (the fused kernels take float16/float32; others run composed).
INPUT_FLOAT_DTYPES = (ms.float16, ms.float32, ms.float64, ms.bfloat16)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(value: Any, name: str, cls_name: str) -> int:
    """TypeError unless ``value`` is an int (not a bool)."""
    if not _is_int(value):
        raise TypeError(f"For '{cls_name}', '{name}' must be an int, but got {value!r} "
                        f"of type {type(value).__name__}.")
    return value


def check_positive_int(value: Any, name: str, cls_name: str, negative_error: type = ValueError) -> int:
    """TypeError unless an int; ``negative_error`` (ValueError by default) unless > 0."""
    check_int(value, name, cls_name)
    if value <= 0:
        raise negative_error(f"For '{cls_name}', '{name}' must be a positive int, but got {value}.")
    return value


def check_bool(value: Any, name: str, cls_name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"For '{cls_name}', '{name}' must be a bool, but got {value!r} "
                        f"of type {type(value).__name__}.")
    return value


def check_number(value: Any, name: str, cls_name: str) -> float:
    """TypeError unless an int or float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"For '{cls_name}', '{name}' must be an int or float, but got {value!r} "
                        f"of type {type(value).__name__}.")
    return value


def check_float_in_range(value: Any, name: str, cls_name: str, low: float = 0.0, high: float = 1.0) -> float:
    """TypeError unless a float; ValueError unless ``low <= value < high``."""
    if not isinstance(value, float):
        raise TypeError(f"For '{cls_name}', '{name}' must be a float, but got {value!r} "
                        f"of type {type(value).__name__}.")
    if not low <= value < high:
        raise ValueError(f"For '{cls_name}', '{name}' must be in [{low}, {high}), but got {value}.")
    return value


def check_dropout_rate(value: Any, name: str, cls_name: str) -> float:
    """TypeError unless an int or float (not a bool); ValueError unless in [0, 1). Returns a float."""
    check_number(value, name, cls_name)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"For '{cls_name}', '{name}' must be in [0.0, 1.0), but got {value}.")
    return float(value)


def check_dtype(value: Any, name: str, cls_name: str, allowed: Iterable = FLOAT_DTYPES):
    """TypeError unless ``value`` is one of the ``allowed`` MindSpore dtypes."""
    allowed = tuple(allowed)
    if not isinstance(value, ms.dtype.Type) or value not in allowed:
        names = ", ".join(f"mindspore.{d}" for d in allowed)
        raise TypeError(f"For '{cls_name}', '{name}' must be one of [{names}], but got {value!r}.")
    return value


def check_str(value: Any, name: str, cls_name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"For '{cls_name}', '{name}' must be a str, but got {value!r} "
                        f"of type {type(value).__name__}.")
    return value


def check_init(value: Any, name: str, cls_name: str, shape: tuple | None = None):
    """Check an initializer argument (Tensor, str, Initializer or number).

    TypeError for any other type; ValueError for an unknown initializer name, or for a Tensor whose
    shape is not ``shape`` (when given).
    """
    if isinstance(value, bool) or not isinstance(value, (Tensor, str, Initializer, numbers.Number)):
        raise TypeError(f"For '{cls_name}', '{name}' must be a Tensor, str, Initializer or number, "
                        f"but got {type(value).__name__}.")
    if isinstance(value, str):
        names = initializer_names()
        if value.lower() not in names:
            raise ValueError(f"For '{cls_name}', '{name}' must be the name of an initializer "
                             f"({sorted(names)}), but got {value!r}.")
    if isinstance(value, Tensor) and shape is not None and tuple(value.shape) != tuple(shape):
        raise ValueError(f"For '{cls_name}', the shape of '{name}' must be {tuple(shape)}, "
                         f"but got {tuple(value.shape)}.")
    return value


# ------------------------------------------------------------------ checks of inputs, called in construct
# These run inside ``construct`` and so are compiled in GRAPH mode: keep them to constructs MindSpore's
# graph syntax supports (dtype membership of a constant tuple, f-strings, ``raise``).

def check_float_input(x: Tensor, name: str, cls_name: str) -> None:
    """TypeError unless ``x`` has a float dtype (``INPUT_FLOAT_DTYPES``); in GRAPH mode at compile time."""
    if x.dtype not in INPUT_FLOAT_DTYPES:
        raise TypeError(f"For '{cls_name}', the input '{name}' must be a float Tensor (mindspore.float16, "
                        f"mindspore.float32, mindspore.float64 or mindspore.bfloat16), but got {x.dtype}.")


def check_dense_input(x: Tensor, size: int, size_name: str, cls_name: str) -> None:
    """Checks of the input ``x: (*, size)`` of a Dense-like layer: a float dtype (TypeError), at least one
    dimension and a last dimension of ``size`` (ValueError naming ``size_name``). GRAPH mode: at compile time,
    as a ``constexpr`` (as plain code in ``construct`` the checks' branches cost MindSpore compiled-graph
    memory per layer instance)."""
    _check_dense_input(x.shape, x.dtype, size, size_name, cls_name)


@constexpr(check=False)
def _check_dense_input(shape, dtype, size: int, size_name: str, cls_name: str) -> bool:
    if dtype not in INPUT_FLOAT_DTYPES:
        raise TypeError(f"For '{cls_name}', the input 'x' must be a float Tensor (mindspore.float16, "
                        f"mindspore.float32, mindspore.float64 or mindspore.bfloat16), but got {dtype}.")
    if not shape:
        raise ValueError(f"For '{cls_name}', the input must have shape (*, {size_name}), but got a scalar.")
    if shape[-1] != size:
        raise ValueError(f"For '{cls_name}', the last dimension of the input must equal '{size_name}' ({size}), "
                         f"but got input shape {shape}.")
    return True


def check_indices_in_range(indices: Tensor, upper: int, name: str, cls_name: str) -> Tensor:
    """Reject values of the integer Tensor ``indices`` outside ``[0, upper)``.

    Data dependent, so checked on every call. Run eagerly (PYNATIVE): a ``ValueError`` naming ``name``,
    checked with numpy on the host (nearly free when ``indices`` already lives on the host, one
    synchronisation when it was just computed). Compiled (GRAPH mode, ``ms.jit``): MindSpore's ``Assert``
    kernel stops the running graph with ``RuntimeError("assert failed")`` after printing "For 'Assert'
    condition is false" and the offending values to stderr. A Python ``raise`` under a data-dependent
    branch (JIT Fallback) would give the ``ValueError``, but MindSpore 2.10 then cannot compile the
    ``ops.Custom`` kernels (mindpet's fused layers) in the same graph, so it is not used. After the
    failure MindSpore refuses to run that compiled graph again ("An error occurred in the previous
    step"): a new Cell, or a recompilation, runs again.

    Returns ``indices``; use the returned Tensor, which (compiled) depends on the check, so that no
    consumer runs before it.
    """
    if compiling():
        checked = _IN_RANGE(ops.logical_and(indices >= 0, indices < upper).all(), [indices])
        return ops.depend(indices, checked)
    _check_indices_on_host(indices, upper, name, cls_name)
    return indices


_IN_RANGE = ops.Assert(8)


def _check_indices_on_host(indices: Tensor, upper: int, name: str, cls_name: str) -> None:
    values = indices.asnumpy()
    if values.size and (values.min() < 0 or values.max() >= upper):
        raise ValueError(f"For '{cls_name}', every value of '{name}' must be in [0, {upper}), but got values "
                         f"from {values.min()} to {values.max()}.")
