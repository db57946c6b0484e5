"""Ascend backend of the fused ops: the aclnn custom ops built from ``ascendc/``.

Each contract op of ``ops/CONTRACTS.md`` is an Ascend C custom op (``ascendc/op_host``,
``ascendc/op_kernel``) installed as a CANN custom-op package; MindSpore calls it through
``ops.Custom("aclnn<OpType>", func_type="aot")`` with the contract's inputs (tensors, then the
trailing scalar attributes) and outputs. ``available()`` tells whether that package is installed
and the device target is Ascend; nothing here imports CANN, so the module loads on every machine.

An empty batch (``M = 0``, ops/CONTRACTS.md "Layout") never reaches the kernels: their tiling has
no plan for zero rows. The primitive answers it itself (PYNATIVE): row outputs with zero rows,
weight and bias gradients zero (:func:`empty_batch_outputs`).
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from mindpet.kernels import contracts

# contract name -> Ascend op type (OpDef class name in ascendc/op_host, OP_ADD(...)), from the contract table.
OP_TYPES: dict[str, str] = {name: op.ascend_op_type for name, op in contracts.OPS.items()
                            if op.ascend_op_type is not None}

Shape = Sequence[int]


def aclnn_header(op_type: str) -> str:
    """File name of the aclnn API header CANN generates for `op_type` (aclnn_snake_case.h)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", "aclnn" + op_type)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower() + ".h"


def _load_priority(config_ini: Path) -> list[str]:
    """Vendor names of ``vendors/config.ini`` (``load_priority=a,b``), in order."""
    for line in config_ini.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip().lower() == "load_priority":
            return [v.strip() for v in value.split(",") if v.strip()]
    return []


def op_api_dirs(env: Optional[Mapping[str, str]] = None) -> list[Path]:
    """Directories where installed custom-op packages keep their aclnn headers, in the order
    MindSpore searches them: ASCEND_CUSTOM_OPP_PATH entries, then ASCEND_OPP_PATH vendors."""
    env = os.environ if env is None else env
    dirs = [Path(p) / "op_api" / "include"
            for p in env.get("ASCEND_CUSTOM_OPP_PATH", "").split(":") if p]
    opp = env.get("ASCEND_OPP_PATH")
    if opp:
        config = Path(opp) / "vendors" / "config.ini"
        if config.is_file():
            dirs += [Path(opp) / "vendors" / v / "op_api" / "include" for v in _load_priority(config)]
    return dirs


def package_installed(env: Optional[Mapping[str, str]] = None) -> bool:
    """True when one op_api directory holds the aclnn headers of all six mindpet ops."""
    headers = [aclnn_header(t) for t in OP_TYPES.values()]
    return any(all((d / h).is_file() for h in headers) for d in op_api_dirs(env))


def on_ascend() -> bool:
    import mindspore as ms  # deferred: keep this module importable without initialising MindSpore
    return ms.get_context("device_target") == "Ascend"


def available() -> bool:
    """The mindpet custom-op package is installed and MindSpore targets an Ascend device."""
    return on_ascend() and package_installed()


# ---- output shapes and dtypes of each op (the contract table, mindpet.kernels.contracts) ----------

def out_shape(name: str, *input_shapes: Shape) -> tuple:
    """Output shapes of contract op `name` for the given input shapes."""
    return contracts.OPS[name].out_shapes(*input_shapes)


def out_dtype(name: str, *input_dtypes):
    """Every output has the dtype of the first input (one dtype T per call)."""
    return tuple([input_dtypes[0]] * contracts.OPS[name].num_outputs)


# ---- the empty batch (M = 0) ----------------------------------------------------------------------

# aclnn function name -> contract name (the primitive keeps only its func, which survives copies).
_CONTRACT_OF_FUNC: dict[str, str] = {"aclnn" + t: name for name, t in OP_TYPES.items()}


def is_empty_batch(*inputs) -> bool:
    """True when the call has M = 0 rows: every contract op takes its rows from input 0
    (``x``, ``h`` or ``dy``, shape ``[M, *]``)."""
    shape = getattr(inputs[0], "shape", None) if inputs else None
    return bool(shape) and shape[0] == 0


def empty_batch_outputs(name: str, *inputs) -> tuple:
    """The outputs of contract op `name` for an empty batch: zeros of the contract's output shapes
    (row outputs have 0 rows; weight and bias gradients are zero), dtype of input 0."""
    from mindspore import ops  # deferred, as everywhere in this module
    shapes = [tuple(getattr(x, "shape", ())) for x in inputs]
    dtype = inputs[0].dtype
    return tuple(ops.zeros(tuple(shape), dtype) for shape in out_shape(name, *shapes))


@functools.lru_cache(maxsize=None)
def _custom_class():
    """``ops.Custom`` that answers an empty batch itself (built on first use: imports MindSpore)."""
    from mindspore import ops

    class MindpetAscendCustom(ops.Custom):
        """An aclnn custom op of mindpet; M = 0 returns the contract's empty outputs in PYNATIVE.

        GRAPH mode compiles the primitive without calling ``__call__``: there the caller must not
        send an empty batch (its shape is static, so a Python ``if`` on it is free).
        """

        def __call__(self, *args):
            if is_empty_batch(*args):
                return empty_batch_outputs(_CONTRACT_OF_FUNC[self.func], *args)
            return super().__call__(*args)

    return MindpetAscendCustom


def primitive(name: str, bprop: Optional[Callable] = None):
    """The ``ops.Custom`` of contract op `name` on Ascend (inputs: tensors, then scalar attributes).

    ``bprop`` is passed through (the glue gives the forward ops a bprop calling the backward op).
    An empty batch (M = 0) is answered without the kernel (:func:`empty_batch_outputs`).
    Raises ``RuntimeError`` when the custom-op package or the Ascend device is missing.
    """
    if name not in OP_TYPES:
        raise KeyError(f"unknown fused op {name!r}; expected one of {sorted(OP_TYPES)}")
    if not available():
        raise RuntimeError(
            "the mindpet Ascend custom-op package is not usable here: it needs device_target "
            "'Ascend' and the package built from ascendc/ installed (its op_api headers under "
            "ASCEND_CUSTOM_OPP_PATH or ASCEND_OPP_PATH/vendors); see README, 'Ascend kernels'")
    return _custom_class()(
        "aclnn" + OP_TYPES[name],
        out_shape=lambda *shapes: out_shape(name, *shapes),
        out_dtype=lambda *dtypes: out_dtype(name, *dtypes),
        func_type="aot",
        bprop=bprop,
    )
