"""Inject delta layers into an existing model by matching the paths of its ``nn.Dense`` cells.

``inject(model, 'lora', ['*attention.query', '*attention.value'], lora_rank=8, lora_alpha=16)``
replaces each matched ``nn.Dense`` (``y = activation(x W^T + b)``) in place by the method's delta layer
that holds the same ``weight`` and ``bias`` Parameters, so the model's output is unchanged at injection
(LoRA: ``B = 0``; adapters: zero-initialised up projection) and its pre-trained checkpoint still loads.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

from mindspore import Parameter, nn

from mindpet._cells import CellSlot, cell_slots, check_cell, is_plain_dense, param_prefix, replace_cell, shared_paths
from mindpet._patterns import check_patterns, compile_pattern
import mindpet.delta  # noqa: F401  pylint: disable=unused-import  (registers the delta layers)
from mindpet.delta.registry import injectable_layers
from mindpet._mindspore import invalidate_compiled_graphs

__all__ = ["inject", "METHODS"]

Patterns = Union[str, Sequence[str]]

# Arguments of the delta layers that come from the replaced nn.Dense, never from the caller.
_FROM_DENSE = ("in_channels", "out_channels", "weight_init", "bias_init", "has_bias", "activation")


@dataclass(frozen=True)
class _Method:
    """A method's delta layer class and the defaults inject adds to the layer's own."""

    layer: type
    defaults: Dict[str, Any] = field(default_factory=dict)  # inject's defaults on top of the layer's

    def arguments(self) -> Dict[str, inspect.Parameter]:
        """The layer's keyword arguments a caller may pass to ``inject``."""
        sig = inspect.signature(self.layer)
        return {k: p for k, p in sig.parameters.items() if k not in _FROM_DENSE}

    def required(self) -> List[str]:
        return [k for k, p in self.arguments().items()
                if p.default is inspect.Parameter.empty and k not in self.defaults]


# From the layer registry (mindpet.delta.registry): every class registered as injectable.
METHODS: Dict[str, _Method] = {m: _Method(spec.layer, dict(spec.inject_defaults))
                               for m, spec in injectable_layers().items()}
DELTA_LAYERS = tuple(method.layer for method in METHODS.values())


def _check_kwargs(method: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    spec = METHODS[method]
    allowed = spec.arguments()
    from_dense = sorted(k for k in kwargs if k in _FROM_DENSE)
    if from_dense:
        raise TypeError(f"For 'inject', {from_dense} cannot be passed: they are taken from each replaced "
                        f"nn.Dense.")
    unknown = sorted(k for k in kwargs if k not in allowed)
    if unknown:
        raise TypeError(f"For 'inject', method {method!r} ({spec.layer.__name__}) got unexpected keyword "
                        f"arguments {unknown}; allowed: {sorted(allowed)}.")
    missing = [k for k in spec.required() if k not in kwargs]
    if missing:
        raise TypeError(f"For 'inject', method {method!r} needs the keyword arguments {missing} "
                        f"(e.g. lora_rank=8, lora_alpha=16).")
    return {**spec.defaults, **kwargs}


def _describe(slots: Dict[str, CellSlot], paths: List[str], limit: int = 5) -> str:
    shown = [f"{p!r} ({type(slots[p].cell).__name__})" for p in paths[:limit]]
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(shown) + more


def select_dense(model: nn.Cell, target_modules: Patterns, exclude_modules: Optional[Patterns] = None
                 ) -> Dict[str, CellSlot]:
    """The slots of the ``nn.Dense`` cells selected by the patterns (validated; see :func:`inject`)."""
    targets = check_patterns(target_modules, "target_modules", "inject")
    excludes = [] if exclude_modules is None else check_patterns(exclude_modules, "exclude_modules", "inject")
    slots = cell_slots(model)
    candidates = [p for p, s in slots.items() if is_plain_dense(s.cell) or isinstance(s.cell, DELTA_LAYERS)]

    selected: List[str] = []
    for pattern in targets:
        match = compile_pattern(pattern, "target_modules", "inject")
        hits = [p for p in candidates if match(p)]
        if not hits:
            others = [p for p in slots if match(p)]
            what = (f"it matches only cells that are not nn.Dense: {_describe(slots, others)}"
                    if others else "it matches no cell path")
            dense = [p for p in candidates if is_plain_dense(slots[p].cell)]
            example = ", ".join(repr(p) for p in dense[:3]) or "(the model has no nn.Dense)"
            raise ValueError(f"For 'inject', target_modules pattern {pattern!r} selects no nn.Dense: {what}. "
                             f"Patterns are case-sensitive shell wildcards over paths from "
                             f"model.cells_and_names() ('*' crosses dots), or 're:<regex>' matched against "
                             f"the full path; nn.Dense paths look like {example}.")
        selected.extend(p for p in hits if p not in selected)

    for pattern in excludes:
        match = compile_pattern(pattern, "exclude_modules", "inject")
        if not any(match(p) for p in selected):
            raise ValueError(f"For 'inject', exclude_modules pattern {pattern!r} matches none of the layers "
                             f"selected by target_modules ({len(selected)} layers, e.g. {selected[:3]}).")
        selected = [p for p in selected if not match(p)]
    if not selected:
        raise ValueError(f"For 'inject', exclude_modules {excludes} removes every layer selected by "
                         f"target_modules {targets}.")

    injected = [p for p in selected if isinstance(slots[p].cell, DELTA_LAYERS)]
    if injected:
        raise ValueError(f"For 'inject', target_modules select layers that already are delta layers: "
                         f"{_describe(slots, injected)}. inject replaces plain nn.Dense cells only; "
                         f"exclude these paths (exclude_modules) or narrow target_modules.")
    shared = shared_paths(slots, selected)
    if shared:
        first = next(iter(shared.values()))
        raise ValueError(f"For 'inject', the nn.Dense at {first} is one cell shared by several paths; "
                         f"replacing it at one path would untie it. Exclude it (exclude_modules).")
    return {p: slots[p] for p in sorted(selected)}


def _pretrained(param: Optional[Parameter], dtype) -> Optional[Parameter]:
    """The Dense's Parameter itself (no copy) if already of ``dtype``, else a cast copy."""
    if param is None or param.dtype == dtype:
        return param
    return Parameter(param.astype(dtype), name=param.name, requires_grad=param.requires_grad)


def build_layer(method: str, dense: nn.Dense, kwargs: Dict[str, Any]) -> nn.Cell:
    """The delta layer of ``method`` holding ``dense``'s weight, bias, has_bias and activation."""
    dtype = dense.weight.dtype
    args = {"param_init_type": dtype, "compute_dtype": dtype, **kwargs}
    layer = METHODS[method].layer(in_channels=dense.in_channels, out_channels=dense.out_channels,
                                  weight_init="zeros", bias_init="zeros", has_bias=dense.has_bias,
                                  activation=dense.activation, **args)
    layer.weight = _pretrained(dense.weight, layer.weight.dtype)
    if dense.has_bias:
        layer.bias = _pretrained(dense.bias, layer.bias.dtype)
    layer.set_train(bool(dense.training))  # a model in training mode stays so (LoRA dropout)
    return layer


def replace_dense(method: str, slots: Dict[str, CellSlot], kwargs: Dict[str, Any]) -> List[str]:
    """Build every layer first (any error leaves the model untouched), then swap them in."""
    layers = {p: build_layer(method, s.cell, kwargs) for p, s in slots.items()}
    for path, slot in slots.items():
        replace_cell(slot, layers[path], param_prefix(slot.cell, path))
    invalidate_compiled_graphs()
    return list(slots)


def inject(model: nn.Cell, method: str, target_modules: Patterns, exclude_modules: Optional[Patterns] = None,
           dry_run: bool = False, **layer_kwargs: Any) -> List[str]:
    """Replace the ``nn.Dense`` cells selected by path patterns with ``method``'s delta layer.

    ``method``: ``'lora'`` -> :class:`LoRADense`, ``'adapter'`` -> :class:`AdapterDense`,
    ``'low_rank_adapter'`` -> :class:`LowRankAdapterDense`. Patterns are matched against the paths of
    ``model.cells_and_names()`` (``'bert.layers.0.attention.query'``): case-sensitive shell wildcards
    (``*`` crosses dots, ``?``, ``[seq]``), or, after the prefix ``re:``, a regular expression that must
    match the full path. A layer is replaced if a ``target_modules`` pattern and no ``exclude_modules``
    pattern matches it. Only plain ``nn.Dense`` cells (or subclasses keeping ``nn.Dense.construct``) are
    replaced; other cells a pattern matches (containers, LayerNorm) are ignored, but each pattern must
    select at least one ``nn.Dense``.

    Each new layer takes over the Dense's ``weight`` and ``bias`` Parameters (the same objects: names,
    values and ``requires_grad`` are kept; a cast copy if ``param_init_type`` differs), ``has_bias`` and
    ``activation``, so the output is unchanged at injection. ``param_init_type`` and ``compute_dtype``
    default to the Dense weight's dtype (the layers' own default compute dtype is float16, which would
    change the outputs of a float32 model). LoRA's ``lora_dropout`` defaults to 0.0; ``lora_rank`` and
    ``lora_alpha`` are required. The new parameters are named ``<layer prefix>mindpet_delta_...``, so
    ``freeze_delta(model, method)`` finds them. Compiled GRAPH-mode graphs are invalidated.

    Args:
        model: the network (changed in place).
        method: ``'lora'``, ``'adapter'`` or ``'low_rank_adapter'``.
        target_modules: a pattern or a list of patterns selecting layers.
        exclude_modules: patterns removing layers from the selection.
        dry_run: only return the paths that would be replaced; change nothing. The patterns and the
            keyword names are checked; the keyword values only when the layers are built.
        **layer_kwargs: the delta layer's own arguments (e.g. ``lora_rank``, ``bottleneck_size``).

    Returns:
        The replaced paths, sorted.

    Raises:
        TypeError: ``model`` not a Cell; a bad pattern list; an unknown, missing or Dense-owned keyword
            argument (``in_channels``, ``weight_init``, ...); ``dry_run`` not a bool; invalid layer
            arguments (from the layer).
        ValueError: unknown method; a target pattern that selects no ``nn.Dense``; an exclude pattern that
            removes nothing; a selected layer that is already a delta layer or is shared by two paths;
            invalid layer argument values. Everything is checked before the model is changed.
    """
    check_cell(model, "inject")
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"For 'inject', 'method' must be one of {list(METHODS)}, but got {method!r}.")
    if not isinstance(dry_run, bool):
        raise TypeError(f"For 'inject', 'dry_run' must be a bool, but got {type(dry_run).__name__}.")
    kwargs = _check_kwargs(method, layer_kwargs)
    slots = select_dense(model, target_modules, exclude_modules)
    if dry_run:
        return list(slots)
    return replace_dense(method, slots, kwargs)
