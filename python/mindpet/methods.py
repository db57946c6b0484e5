"""Delta methods by name, and the parameter-naming rule that ties a parameter to its method.

Every delta parameter of method ``m`` has a name (or an attribute path) containing
``mindpet_delta_<m>_`` (:func:`param_prefix`); :func:`method_of` reads the method back, matching the
*longest* registered method exactly, so ``mindpet_delta_low_rank_adapter_up_left`` belongs to
``low_rank_adapter`` (not ``adapter``) and, once ``lora_plus`` is registered,
``mindpet_delta_lora_plus_a`` to ``lora_plus`` (not ``lora``). Freezing (``mindpet.graph``), the delta
files (``mindpet.delta_io``) and the layer registry (``mindpet.delta.registry``) all read this module; it
works on names only, so ``mindpet.graph`` may use it without importing ``mindpet.delta``.

The built-in methods are the freezing modes of the spec (:data:`DELTA_MODES`); a new method calls
:func:`register_method` (layer classes do it through ``mindpet.delta.registry.register_layer``).
"""
from __future__ import annotations

import re
from typing import List, Optional, Tuple

DELTA_PREFIX = "mindpet_delta_"
DELTA_MODES: Tuple[str, ...] = ("lora", "prefixtuning", "adapter", "low_rank_adapter", "bitfit", "prompttuning",
                                "ptuning2")
MODE_ALIASES = {"prefix": "prefixtuning"}

_registered: List[str] = list(DELTA_MODES)
_METHOD_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


def register_method(method: str) -> str:
    """Make ``method`` known (a lower-case identifier, e.g. ``'lora_plus'``); registering twice is a no-op."""
    if not isinstance(method, str) or not _METHOD_NAME.fullmatch(method):
        raise ValueError(f"a delta method name must be a lower-case identifier such as 'lora_plus', "
                         f"but got {method!r}.")
    if method not in _registered:
        _registered.append(method)
    return method


def registered_methods() -> Tuple[str, ...]:
    """Every known method, built-in ones first, in registration order."""
    return tuple(_registered)


def param_prefix(method: str) -> str:
    """``'mindpet_delta_<method>_'``: the start of every parameter name of ``method``."""
    return f"{DELTA_PREFIX}{method}_"


def methods_in(name: str) -> List[str]:
    """The method of each ``mindpet_delta_`` tag in ``name`` (a parameter name or dotted path), in order.

    A tag ``mindpet_delta_<rest>`` belongs to the longest registered method ``m`` with ``<rest>`` equal to
    ``m`` or starting with ``m_`` or ``m.``; a tag of no registered method is skipped.
    """
    found = []
    for part in name.split(DELTA_PREFIX)[1:]:
        best = None
        for method in _registered:
            if (part == method or part.startswith((method + "_", method + "."))) and (
                    best is None or len(method) > len(best)):
                best = method
        if best is not None:
            found.append(best)
    return found


def method_of(name: str) -> Optional[str]:
    """The method whose parameter ``name`` is (the first tag's, see :func:`methods_in`), or None."""
    found = methods_in(name)
    return found[0] if found else None
