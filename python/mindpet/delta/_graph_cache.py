"""Invalidate MindSpore's compiled GRAPH-mode graphs after a structural change of a network.

GRAPH mode compiles a Cell once per (phase, cell, argument signature) and reuses the graph: Python
attributes read in ``construct`` (such as ``LoRADense.merged``) and sub-cells are frozen into it. Changing
them afterwards (merging LoRA, replacing a Dense by a delta layer) is invisible to the cache, so the old
graph would keep running. Parameter *values* are not affected: they are graph inputs.

The cache key does not say which cells a graph contains, and a layer does not know the cells that wrap it
(the user's model, ``WithLossCell``, ``Model``'s eval network, ``ms.jit`` functions), so every compiled
graph of the process is marked stale. Each graph is recompiled once, on its next call; PyNative is
unaffected.
"""
from __future__ import annotations

from mindspore.graph import api as _api


def invalidate_compiled_graphs() -> None:
    """Make every Cell and ``ms.jit`` function recompile on its next GRAPH-mode call.

    Relies on MindSpore 2.10's compile caches (``cells_compile_cache``: one set of compiled phases per
    Cell; ``ms_compile_cache``: the phases of ``ms.jit`` functions); tested in
    ``tests/integration/test_merge.py``.
    """
    for phases in list(_api.cells_compile_cache.values()):
        phases.clear()
    _api.ms_compile_cache.clear()
