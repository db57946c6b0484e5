"""Backend selection of the fused ops, in one place.

A backend *choice* is ``'auto'``, ``'fused'`` or ``'composed'``. It is taken from, in order: the
per-layer argument (``backend=...``), :func:`set_backend` (global), the environment variable
``MINDPET_KERNEL_BACKEND``, else ``'auto'``. :func:`resolve` turns a choice into the
*implementation* that runs:

- ``'composed'``: MindSpore primitives (the reference; the only one on GPU).
- ``'cpu'``: the C++ kernels of ``ops/cpu`` (device target CPU, library built).
- ``'ascend'``: the Ascend C kernels (device target Ascend, custom-op package installed, reported by
  ``mindpet.kernels.ascend.available()``).

``auto`` picks the fused implementation of the device when it is available and the op/arguments
are supported (e.g. a fusable activation, a float32/float16 dtype), else composed; a missing CPU
library is reported by one warning per process. ``fused`` raises :class:`FusedBackendUnavailable`
instead of falling back. Parameters, names, checkpoints and results do not depend on the backend.

:func:`select` is the one decider: it returns a frozen :class:`Selection` ``(choice, impl, reason)``.
Every fused-op Cell (:class:`mindpet.kernels.fused_op.FusedOp`) holds one, and the delta layers read
their kernel's (``layer.backend``); :func:`resolve` is its implementation only.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import warnings
from typing import Any, Optional

import mindspore as ms
from mindspore.common import dtype as mstype

from mindpet.kernels import _library

ENV_VAR = "MINDPET_KERNEL_BACKEND"
CHOICES = ("auto", "fused", "composed")
IMPLEMENTATIONS = ("composed", "cpu", "ascend")
# the dtypes every fused kernel takes (ops/CONTRACTS.md); others run composed (auto) or raise (fused)
FUSED_DTYPES = (mstype.float32, mstype.float16)

_global_choice: Optional[str] = None
_warned: set = set()


class FusedBackendUnavailable(RuntimeError):
    """``backend='fused'`` was requested but no fused implementation can run here."""


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which implementation runs an op, and why.

    Attributes:
        choice: ``'auto'``, ``'fused'`` or ``'composed'`` (after the precedence rules).
        impl: ``'composed'``, ``'cpu'`` or ``'ascend'``.
        reason: why composed runs although fused was possible in principle ('' otherwise).
    """

    choice: str
    impl: str
    reason: str = ""

    @property
    def fused(self) -> bool:
        """Whether a fused implementation runs."""
        return self.impl != "composed"

    def as_composed(self, reason: str) -> "Selection":
        """The same choice, run composed from now on (e.g. after ``shard``: the fused op carries no strategies)."""
        return dataclasses.replace(self, impl="composed", reason=reason)


def check_choice(choice: Optional[str], name: str = "backend") -> Optional[str]:
    """Validate a backend choice (None means "not set here")."""
    if choice is None:
        return None
    if not isinstance(choice, str) or choice.lower() not in CHOICES:
        raise ValueError(f"'{name}' must be one of {CHOICES} or None, but got {choice!r}.")
    return choice.lower()


def set_backend(choice: Optional[str]) -> None:
    """Set the global backend choice (None clears it, so the environment variable applies again).

    It applies to ops built afterwards; a per-layer ``backend`` argument still wins.
    """
    global _global_choice  # pylint: disable=global-statement
    _global_choice = check_choice(choice)


def get_backend() -> str:
    """The global choice: :func:`set_backend`, else ``MINDPET_KERNEL_BACKEND``, else ``'auto'``."""
    if _global_choice is not None:
        return _global_choice
    env = os.environ.get(ENV_VAR)
    if env:
        return check_choice(env.strip(), ENV_VAR)
    return "auto"


def device_target() -> str:
    """The context's device target (``'CPU'``, ``'GPU'``, ``'Ascend'``): the one place the kernels read it."""
    return ms.get_context("device_target")


def _ascend_available() -> tuple:
    try:
        ascend = importlib.import_module("mindpet.kernels.ascend")
    except ImportError as err:
        return False, f"mindpet.kernels.ascend cannot be imported ({err})"
    try:
        if ascend.available():
            return True, ""
    except Exception as err:  # pylint: disable=broad-except
        return False, f"mindpet.kernels.ascend.available() failed: {err}"
    return False, "the mindpet Ascend custom-op package is not installed"


def fused_implementation(device: Optional[str] = None) -> tuple:
    """``(implementation or None, reason)`` of the fused backend on ``device`` (default: context)."""
    device = device or device_target()
    if device == "CPU":
        try:
            _library.load()
            return "cpu", ""
        except _library.NativeLibraryError as err:
            return None, str(err)
    if device == "Ascend":
        ok, why = _ascend_available()
        return ("ascend", "") if ok else (None, why)
    return None, f"there are no fused kernels for device target {device!r} (composed primitives run there)"


def select(choice: Optional[str] = None, op: str = "lora_linear", supported: bool = True,
           unsupported_reason: str = "", cpu_only: bool = False, dtype: Any = None) -> Selection:
    """The :class:`Selection` of the implementation that runs ``op``: the one place that decides.

    Args:
        choice: per-layer choice, or None for :func:`get_backend`.
        op: op name, for messages.
        supported: False when the call's arguments have no fused implementation (then ``auto``
            gives composed and ``fused`` raises with ``unsupported_reason``).
        cpu_only: the op has a CPU kernel only (``activation``, ``layer_norm``): on Ascend ``auto``
            gives composed (MindSpore's native ops) and ``fused`` raises.
        dtype: the dtype the op will run in, when known at construction (a layer's ``compute_dtype``):
            one outside :data:`FUSED_DTYPES` is unsupported.

    Raises:
        ValueError: an unknown choice.
        FusedBackendUnavailable: ``fused`` requested and not available or not supported.
    """
    choice = check_choice(choice) or get_backend()
    if choice == "composed":
        return Selection(choice, "composed", "backend='composed'")
    if supported and dtype is not None and dtype not in FUSED_DTYPES:
        supported = False
        unsupported_reason = f"the fused {op} kernels support float32 and float16, not {_dtype_name(dtype)}"
    impl, why = fused_implementation()
    if impl == "ascend" and cpu_only:
        impl, why = None, f"{op} has no Ascend kernel (the composed MindSpore ops run there)"
    if impl is not None and not supported:
        impl, why = None, unsupported_reason or f"these arguments of {op} have no fused implementation"
    if impl is not None:
        return Selection(choice, impl)
    if choice == "fused":
        raise FusedBackendUnavailable(f"backend='fused' requested for {op}, but {why}")
    if device_target() == "CPU" and supported and "cpu-library" not in _warned:
        _warned.add("cpu-library")
        warnings.warn(f"mindpet: fused CPU kernels unavailable, using composed MindSpore primitives: {why}",
                      RuntimeWarning, stacklevel=3)
    return Selection(choice, "composed", why)


def resolve(choice: Optional[str] = None, op: str = "lora_linear", supported: bool = True,
            unsupported_reason: str = "", cpu_only: bool = False) -> str:
    """The implementation (``'composed'``, ``'cpu'`` or ``'ascend'``) :func:`select` picks for ``op``."""
    return select(choice, op, supported, unsupported_reason, cpu_only).impl


def _dtype_name(dtype: Any) -> str:
    return {mstype.bfloat16: "bfloat16", mstype.float64: "float64"}.get(dtype, str(dtype))
