"""Every MindSpore internal mindpet relies on, behind one accessor each.

MindSpore has no public API for these; each accessor names the private symbol it reads, and
``tests/test_mindspore_internals.py`` checks that every one still exists and behaves, so a MindSpore
upgrade fails here, in one known place, instead of deep inside a layer. The symbols are looked up
through :func:`_internal`, which tries the candidate locations of :data:`_LOCATIONS` in order: to
support another MindSpore version, add its location of a symbol there (or, where the behaviour
differs, branch inside the accessor on :data:`VERSION`).

Supported releases: ``mindpet._version.MINDSPORE_REQUIREMENT`` (MindSpore 2.9 and 2.10, where every
location below is the same); importing mindpet under another release warns once (:func:`supported`).

Accessors:

- :func:`graph_seeds`: the (seed0, seed1) pair MindSpore's own ``nn.Dropout`` gives a new Dropout.
- :func:`invalidate_compiled_graphs`: make every compiled GRAPH-mode graph recompile on next call.
- :func:`clear_pynative_grad_state`: drop a half-recorded PYNATIVE autodiff graph after an error.
- :func:`is_pynative`: whether the execution mode is PYNATIVE (the fast, private read of the mode).
- :func:`compiling`: whether the caller is being compiled into a graph (GRAPH mode, ``ms.jit``).
- :func:`initializer_names`: the names ``mindspore.common.initializer.initializer`` accepts.
- :func:`activation_names`: the names ``mindspore.nn.get_activation`` accepts.
- :func:`own_parameters`, :func:`child_cells`, :func:`cell_primitives`: a Cell's own Parameters,
  direct sub-cells and primitives, by attribute name.
- :func:`default_generator`, :func:`generator_offset`: MindSpore's default generator and its offset, advanced
  by a count (graph-safe; ``Generator._step``).
- :func:`library_dir`, :func:`onednn_library`: the directory of the native libraries in MindSpore's
  wheel, and its oneDNN library (``dnnl_sgemm``, the GEMM of the CPU kernels).
"""
from __future__ import annotations

import importlib
import re
import warnings
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

import mindspore as ms
from mindspore import context, nn
from mindspore.ops import constexpr

from mindpet._version import MINDSPORE_REQUIREMENT

VERSION: str = ms.__version__

# symbol -> candidate (module, attribute) locations, tried in order (MindSpore 2.10 first). MindSpore 2.9
# and 2.10 have every symbol at the first location; mindspore.common.api is where MindSpore 2.8 and
# older keep the graph caches (2.9 and 2.10 keep it as a deprecated alias of mindspore.graph.api).
_LOCATIONS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "get_graph_seed": (("mindspore.common.seed", "_get_graph_seed"),),
    "cells_compile_cache": (("mindspore.graph.api", "cells_compile_cache"),
                            ("mindspore.common.api", "cells_compile_cache")),
    "ms_compile_cache": (("mindspore.graph.api", "ms_compile_cache"), ("mindspore.common.api", "ms_compile_cache")),
    "pynative_executor": (("mindspore.graph.api", "_pynative_executor"),
                          ("mindspore.common.api", "_pynative_executor")),
    "get_mode": (("mindspore.context", "_get_mode"),),
    "initializer_alias": (("mindspore.common.initializer", "_INITIALIZER_ALIAS"),),
    "activation_table": (("mindspore.nn.layer.activation", "_activation"),),
    "default_generator": (("mindspore.common.generator", "default_generator"),),
}


def _release(version: str) -> Tuple[int, int]:
    """``(major, minor)`` of a version string: ``'2.10.0rc1'`` -> ``(2, 10)``."""
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


def supported(version: str = VERSION) -> bool:
    """Whether MindSpore ``version`` is in :data:`MINDSPORE_REQUIREMENT` (``>=lowest,<beyond``, by release)."""
    lowest, beyond = re.search(r">=\s*([\d.]+)\s*,\s*<\s*([\d.]+)", MINDSPORE_REQUIREMENT).groups()
    return _release(lowest) <= _release(version) < _release(beyond)


def warn_if_unsupported(version: str = VERSION) -> None:
    """Warn (once per import of mindpet) that MindSpore ``version`` is outside the supported releases."""
    if not supported(version):
        warnings.warn(f"mindpet is tested with {MINDSPORE_REQUIREMENT}, but MindSpore {version} is installed; "
                      "a missing MindSpore internal will raise MindSporeInternalsError naming it.", stacklevel=2)


class MindSporeInternalsError(ImportError):
    """A MindSpore internal mindpet relies on is missing from the installed MindSpore."""


def _internal(symbol: str) -> Any:
    """The object behind ``symbol`` (a key of :data:`_LOCATIONS`), from the first location that has it."""
    for module_name, attr in _LOCATIONS[symbol]:
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):
            continue
    tried = ", ".join(f"{m}.{a}" for m, a in _LOCATIONS[symbol])
    raise MindSporeInternalsError(f"mindpet needs MindSpore's internal {symbol!r} (looked for {tried}), which "
                                  f"MindSpore {VERSION} does not have; mindpet supports {MINDSPORE_REQUIREMENT}.")


def graph_seeds(op_name: str = "dropout") -> Tuple[int, int]:
    """``(seed0, seed1)`` for a new random primitive, as MindSpore's own ``nn.Dropout`` draws them.

    Follows ``mindspore.set_seed`` (same global seed -> same sequence of pairs); ``_get_graph_seed``.
    """
    seed0, seed1 = _internal("get_graph_seed")(0, op_name)
    return int(seed0), int(seed1)


def default_generator() -> Any:
    """MindSpore's default generator (``mindspore.common.generator.default_generator``); MindSporeInternalsError
    where it is missing. Read once by the Cells that call :func:`generator_offset` in ``construct``."""
    return _internal("default_generator")


def generator_offset(generator, count):
    """The offset of ``generator`` (:func:`default_generator`) before this call, which advances it by ``count`` (an
    int64 scalar Tensor): ``Generator._step`` (private), callable in ``construct``. The generator's state lives in
    Parameters, so each call site of a compiled graph gets its own offset. (Its seed output is not returned: in
    MindSpore 2.10 a compiled graph reads it from a Parameter with a random per-process value.)"""
    return generator._step(count)[1]  # pylint: disable=protected-access


def invalidate_compiled_graphs() -> None:
    """Make every Cell and ``ms.jit`` function recompile on its next GRAPH-mode call.

    GRAPH mode compiles a Cell once per (phase, cell, argument signature): Python attributes read in
    ``construct`` (``LoRADense.merged``) and sub-cells are frozen into the graph, so a structural change
    (merging LoRA, replacing a Dense by a delta layer) is invisible to the cache. The cache key does not
    say which cells a graph contains, so every compiled graph of the process is marked stale; each is
    recompiled once, on its next call. Parameter values (graph inputs) and PYNATIVE are unaffected.
    Reads ``cells_compile_cache`` (the compiled phases of each Cell) and ``ms_compile_cache``
    (those of ``ms.jit`` functions).
    """
    for phases in list(_internal("cells_compile_cache").values()):
        phases.clear()
    _internal("ms_compile_cache").clear()


def clear_pynative_grad_state() -> None:
    """Drop MindSpore's half-recorded PYNATIVE autodiff graph (``_pynative_executor.clear_res()``).

    An exception escaping a forward that runs under ``GradOperation`` leaves the recording half-built,
    and a later, unrelated training step then fails; MindSpore clears it itself only when a ``jit``
    compilation fails. A failure of the clean-up itself is ignored: the original error matters more.
    """
    try:
        _internal("pynative_executor").clear_res()
    except (MindSporeInternalsError, RuntimeError):
        pass


def is_pynative() -> bool:
    """Whether MindSpore runs in PYNATIVE mode (``context._get_mode()``, cheaper than ``get_context``)."""
    return _internal("get_mode")() == context.PYNATIVE_MODE


@constexpr(check=False)
def _is_none(value: Any) -> bool:
    return value is None


def compiling() -> bool:
    """True while the caller is compiled into a graph (GRAPH mode, ``ms.jit``), False when run eagerly.

    The test MindSpore 2.10 uses itself (``mindspore.graph.api._run_in_jit``): a ``constexpr`` evaluated
    while compiling sees a Python function argument as None.
    """
    return _is_none(compiling)


def initializer_names() -> FrozenSet[str]:
    """The lower-case names ``mindspore.common.initializer.initializer`` accepts (``_INITIALIZER_ALIAS``)."""
    return frozenset(_internal("initializer_alias"))


def activation_names() -> List[str]:
    """The names ``mindspore.nn.get_activation`` accepts, sorted (keys of ``nn.layer.activation._activation``)."""
    return sorted(_internal("activation_table"))


def own_parameters(cell: nn.Cell) -> Dict[str, Any]:
    """``{attribute: Parameter or None}`` of the Parameters ``cell`` holds itself (``Cell._params``)."""
    return dict(cell._params)  # pylint: disable=protected-access


def child_cells(cell: nn.Cell) -> Dict[str, Any]:
    """``{attribute: Cell or None}`` of ``cell``'s direct sub-cells, in definition order (``Cell._cells``)."""
    return dict(cell._cells)  # pylint: disable=protected-access


def cell_primitives(cell: nn.Cell) -> List[Any]:
    """The primitives ``cell`` holds itself (not its sub-cells'), in definition order (``Cell._primitives``)."""
    return [p for p in cell._primitives.values() if p is not None]  # pylint: disable=protected-access


def library_dir() -> Path:
    """``mindspore/lib`` of the installed wheel, where its native libraries (``libdnnl.so.3``) live."""
    return Path(ms.__file__).resolve().parent / "lib"


# oneDNN in MindSpore's wheel: 3.x in 2.9 and 2.10, 2.x in 2.7 and 2.8 (dnnl_sgemm has one C signature in both).
_ONEDNN_NAMES = ("libdnnl.so.3", "libdnnl.so.2")


def onednn_library() -> Optional[Path]:
    """The oneDNN shared library in MindSpore's wheel (the first of :data:`_ONEDNN_NAMES`), or None."""
    for name in _ONEDNN_NAMES:
        path = library_dir() / name
        if path.is_file():
            return path
    return None


warn_if_unsupported()
