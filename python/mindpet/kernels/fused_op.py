"""``FusedOp``: the base of every fused-op Cell, holding its backend selection and the dtype rule.

A fused-op Cell (:class:`~mindpet.kernels.LoraLinear`, :class:`~mindpet.kernels.Adapter`, ...) selects
its implementation once, at construction, through :func:`mindpet.kernels.backend.select`, and keeps the
:class:`~mindpet.kernels.backend.Selection` as ``selection`` (with ``choice``, ``impl`` and ``fused``
copied as plain attributes, which GRAPH-mode ``construct`` code can read). The dtype rule of every
fused kernel is here too: float32 and float16 run fused; another dtype runs composed under ``'auto'``
and raises TypeError under ``'fused'`` (:meth:`FusedOp.runs_fused`).
"""
from __future__ import annotations

from typing import Any, Optional

from mindspore.common import dtype as mstype

from mindpet._eager import GradSafeCell
from mindpet._mindspore import invalidate_compiled_graphs
from mindpet.kernels import backend as _backend


def fused_for_dtype(fused: bool, choice: str, dtype, op_name: str) -> bool:
    """The dtype rule of every fused op: with a fused implementation selected (``fused``), float32 and
    float16 run fused; another dtype runs composed under ``'auto'`` and raises TypeError under ``'fused'``.
    GRAPH-safe (decided at compile time inside ``construct``)."""
    if not fused:
        return False
    if dtype == mstype.float32 or dtype == mstype.float16:
        return True
    if choice == "fused":
        raise TypeError(f"For '{op_name}', the fused backend supports float32 and float16, not {dtype}.")
    return False


class FusedOp(GradSafeCell):
    """Base of the fused-op Cells; a subclass sets ``op_name`` and calls :meth:`select_backend` in ``__init__``."""

    op_name = ""

    def select_backend(self, backend: Optional[str], supported: bool = True, unsupported_reason: str = "",
                       cpu_only: bool = False, dtype: Any = None) -> _backend.Selection:
        """Select the implementation (:func:`mindpet.kernels.backend.select`) and keep it; see the module docstring."""
        self._set_selection(_backend.select(backend, self.op_name, supported, unsupported_reason, cpu_only, dtype))
        return self.selection

    def _set_selection(self, selection: _backend.Selection) -> None:
        self.selection = selection
        self.choice = selection.choice
        self.impl = selection.impl
        self.fused = selection.fused

    def use_composed(self, reason: str) -> bool:
        """Run composed from now on (e.g. the owner was sharded); compiled graphs are marked stale.

        Returns whether anything changed.
        """
        if not self.fused:
            return False
        self._set_selection(self.selection.as_composed(reason))
        invalidate_compiled_graphs()
        return True

    def runs_fused(self, dtype) -> bool:
        """Whether a call in ``dtype`` runs fused (:func:`fused_for_dtype`); called in ``construct``."""
        return fused_for_dtype(self.fused, self.choice, dtype, self.op_name)

    def extend_repr(self) -> str:
        return f"impl={self.impl}"
