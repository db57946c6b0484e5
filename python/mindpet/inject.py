"""Inject delta layers into an existing model by matching the paths of its Linear-like cells.

``inject(model, 'lora', ['*attention.query', '*attention.value'], lora_rank=8, lora_alpha=16)``
replaces each matched Linear-like cell (``nn.Dense``, mindformers' ``Linear`` or a class registered with
:func:`mindpet.register_linear`: ``y = activation(x W^T + b)``, or ``x W + b`` for a ``[in, out]`` weight)
in place by the method's delta layer that holds the same ``weight`` and ``bias`` Parameters in the same
layout, so the model's output is unchanged at injection (LoRA: ``B = 0``; adapters: zero-initialised up
projection) and its pre-trained checkpoint still loads. How a class is read: :mod:`mindpet.linear_adapters`.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

from mindspore import Parameter, nn

from mindpet._cells import CellSlot, cell_slots, check_cell, param_prefix, replace_cell, shared_paths
from mindpet._patterns import check_patterns, compile_pattern
import mindpet.delta  # noqa: F401  pylint: disable=unused-import  (registers the delta layers)
from mindpet.delta.registry import injectable_layers, layer_specs
from mindpet._mindspore import invalidate_compiled_graphs
from mindpet.linear_adapters import linear_adapter, looks_linear, not_covered_reason, registration_hint

__all__ = ["inject", "METHODS"]

Patterns = Union[str, Sequence[str]]

# Arguments of the delta layers that come from the replaced cell, never from the caller.
_FROM_BASE = ("in_channels", "out_channels", "weight_init", "bias_init", "has_bias", "activation", "transpose_b",
              "base")
# What a delta layer remembers of the cell it replaced (merge_and_unload puts that cell back).
REPLACED_ATTR = "_mindpet_replaced"


@dataclass(frozen=True)
class _Method:
    """A method's delta layer class and the defaults inject adds to the layer's own."""

    layer: type
    defaults: Dict[str, Any] = field(default_factory=dict)  # inject's defaults on top of the layer's

    def arguments(self) -> Dict[str, inspect.Parameter]:
        """The layer's keyword arguments a caller may pass to ``inject``."""
        sig = inspect.signature(self.layer)
        return {k: p for k, p in sig.parameters.items() if k not in _FROM_BASE}

    def required(self) -> List[str]:
        return [k for k, p in self.arguments().items()
                if p.default is inspect.Parameter.empty and k not in self.defaults]


# From the layer registry (mindpet.delta.registry): every class registered as injectable.
METHODS: Dict[str, _Method] = {m: _Method(spec.layer, dict(spec.inject_defaults))
                               for m, spec in injectable_layers().items()}
DELTA_LAYERS = tuple(method.layer for method in METHODS.values())
ALL_DELTA_LAYERS = tuple(spec.layer for spec in layer_specs())
NON_INJECTABLE_LAYERS = tuple(layer for layer in ALL_DELTA_LAYERS if layer not in DELTA_LAYERS)


def _check_kwargs(method: str, kwargs: Dict[str, Any], dry_run: bool = False) -> Dict[str, Any]:
    spec = METHODS[method]
    allowed = spec.arguments()
    from_base = sorted(k for k in kwargs if k in _FROM_BASE)
    if from_base:
        raise TypeError(f"For 'inject', {from_base} cannot be passed: they are taken from each replaced "
                        f"layer.")
    unknown = sorted(k for k in kwargs if k not in allowed)
    if unknown:
        raise TypeError(f"For 'inject', method {method!r} ({spec.layer.__name__}) got unexpected keyword "
                        f"arguments {unknown}; allowed: {sorted(allowed)}.")
    missing = [k for k in spec.required() if k not in kwargs]
    if missing and not dry_run:  # a dry run builds nothing
        raise TypeError(f"For 'inject', method {method!r} needs the keyword arguments {missing} "
                        f"(e.g. lora_rank=8, lora_alpha=16).")
    return {**spec.defaults, **kwargs}


def _describe(slots: Dict[str, CellSlot], paths: List[str], limit: int = 5) -> str:
    shown = [f"{p!r} ({type(slots[p].cell).__name__})" for p in paths[:limit]]
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(shown) + more


def _unknown_class_error(slots: Dict[str, CellSlot], paths: List[str], func: str = "inject",
                         target_arg: str = "target_modules", exclude_arg: str = "exclude_modules") -> ValueError:
    cell = slots[paths[0]].cell
    return ValueError(
        f"For '{func}', {target_arg} select {_describe(slots, paths)}: a Cell of class {type(cell).__name__} "
        f"holding a 2-D Parameter, but {not_covered_reason(cell)}. If it computes activation(x W^T + b) (weight "
        f"[out, in]) or activation(x W + b) (weight [in, out]), register the class once with "
        f"{registration_hint(cell)} (see mindpet.linear_adapters), then call {func} again; otherwise exclude it "
        f"({exclude_arg}) or narrow {target_arg}.")


def select_linear(model: nn.Cell, target_modules: Patterns, exclude_modules: Optional[Patterns] = None,
                  func: str = "inject", target_arg: str = "target_modules", exclude_arg: str = "exclude_modules"
                  ) -> Dict[str, CellSlot]:
    """The slots of the Linear-like cells selected by the patterns (validated, views read; see :func:`inject`).

    ``func``, ``target_arg``, ``exclude_arg``: the caller's names for its messages (``quantize_dense`` selects
    with the same rules)."""
    targets = check_patterns(target_modules, target_arg, func)
    excludes = [] if exclude_modules is None else check_patterns(exclude_modules, exclude_arg, func)
    slots = cell_slots(model)
    # Linear-like: registered, already a delta layer, or looking so (an unknown class: an error below); never
    # a delta layer's own parts (an AdapterDense's adapter holds 2-D Parameters)
    inside_delta = tuple(p + "." for p, s in slots.items() if isinstance(s.cell, ALL_DELTA_LAYERS))
    candidates = [p for p, s in slots.items()
                  if not p.startswith(inside_delta) and not isinstance(s.cell, NON_INJECTABLE_LAYERS)
                  and (isinstance(s.cell, DELTA_LAYERS) or linear_adapter(s.cell) is not None or looks_linear(s.cell))]

    selected: List[str] = []
    for pattern in targets:
        match = compile_pattern(pattern, target_arg, func)
        hits = [p for p in candidates if match(p)]
        if not hits:
            others = [p for p in slots if match(p)]
            what = (f"it matches only cells that are not Linear-like: {_describe(slots, others)}"
                    if others else "it matches no cell path")
            linear = [p for p in candidates if linear_adapter(slots[p].cell) is not None]
            example = ", ".join(repr(p) for p in linear[:3]) or "(the model has none)"
            raise ValueError(f"For '{func}', {target_arg} pattern {pattern!r} selects no Linear-like cell "
                             f"(nn.Dense, mindformers' Linear or a class registered with mindpet.register_linear): "
                             f"{what}. Patterns are case-sensitive shell wildcards over paths from "
                             f"model.cells_and_names() ('*' crosses dots), or 're:<regex>' matched against "
                             f"the full path; Linear-like paths look like {example}.")
        selected.extend(p for p in hits if p not in selected)

    for pattern in excludes:
        match = compile_pattern(pattern, exclude_arg, func)
        if not any(match(p) for p in selected):
            raise ValueError(f"For '{func}', {exclude_arg} pattern {pattern!r} matches none of the layers "
                             f"selected by {target_arg} ({len(selected)} layers, e.g. {selected[:3]}).")
        selected = [p for p in selected if not match(p)]
    if not selected:
        raise ValueError(f"For '{func}', {exclude_arg} {excludes} removes every layer selected by "
                         f"{target_arg} {targets}.")

    injected = [p for p in selected if isinstance(slots[p].cell, DELTA_LAYERS)]
    if injected:
        raise ValueError(f"For '{func}', {target_arg} select layers that already are delta layers: "
                         f"{_describe(slots, injected)}. inject replaces plain Linear-like cells only; "
                         f"exclude these paths ({exclude_arg}) or narrow {target_arg}.")
    unknown = [p for p in selected if linear_adapter(slots[p].cell) is None]
    if unknown:
        same_class = [p for p in unknown if type(slots[p].cell) is type(slots[unknown[0]].cell)]
        raise _unknown_class_error(slots, same_class, func, target_arg, exclude_arg)
    shared = shared_paths(slots, selected)
    if shared:
        first = next(iter(shared.values()))
        raise ValueError(f"For '{func}', the {type(slots[first[0]].cell).__name__} at {first} is one cell shared "
                         f"by several paths; replacing it at one path would untie it. Exclude it ({exclude_arg}).")
    for p in selected:  # every view is readable (a 2-D weight, a bias of [out], ...) before anything changes
        linear_adapter(slots[p].cell).view(slots[p].cell)
    return {p: slots[p] for p in sorted(selected)}


def _pretrained(param: Optional[Parameter], dtype) -> Optional[Parameter]:
    """The cell's Parameter itself (no copy) if already of ``dtype``, else a cast copy."""
    if param is None or param.dtype == dtype:
        return param
    return Parameter(param.astype(dtype), name=param.name, requires_grad=param.requires_grad)


def build_layer(method: str, cell: nn.Cell, kwargs: Dict[str, Any]) -> nn.Cell:
    """The delta layer of ``method`` holding ``cell``'s weight (same layout), bias, activation and compute dtype.

    The layer remembers ``cell`` (attribute ``REPLACED_ATTR``, outside MindSpore's cell tree) when it took
    over ``cell``'s Parameter objects, so :func:`mindpet.merge_and_unload` can put ``cell`` back.
    """
    view = linear_adapter(cell).view(cell)
    if view.quantized is not None:
        return _build_on_quantized(method, cell, view, kwargs)
    args = {"param_init_type": view.weight.dtype, "compute_dtype": view.compute_dtype, **kwargs}
    layer = METHODS[method].layer(in_channels=view.in_channels, out_channels=view.out_channels,
                                  weight_init="zeros", bias_init="zeros", has_bias=view.has_bias,
                                  activation=view.activation, transpose_b=view.transpose_b, **args)
    layer.weight = _pretrained(view.weight, layer.weight.dtype)
    if view.has_bias:
        layer.bias = _pretrained(view.bias, layer.bias.dtype)
    layer.set_train(bool(cell.training))  # a model in training mode stays so (LoRA dropout)
    if layer.weight is view.weight and (not view.has_bias or layer.bias is view.bias):
        object.__setattr__(layer, REPLACED_ATTR, cell)  # not a sub-cell: its parameters are the layer's
    return layer


def _build_on_quantized(method: str, cell: nn.Cell, view, kwargs: Dict[str, Any]) -> nn.Cell:
    """The delta layer of ``method`` on the quantised base ``cell`` (a QuantizedDense): it takes over the base's
    frozen Parameters; no float weight is made. Only methods whose layer takes a ``base`` (LoRA) run there."""
    layer_cls = METHODS[method].layer
    if "base" not in inspect.signature(layer_cls).parameters:
        raise ValueError(f"For 'inject', method {method!r} ({layer_cls.__name__}) cannot run on a quantised base "
                         f"({type(cell).__name__}, format {cell.format!r}): its layer takes no 'base'. Exclude the quantised "
                         f"layers (exclude_modules) or inject before quantising.")
    args = {"param_init_type": view.compute_dtype, "compute_dtype": view.compute_dtype, **kwargs}
    layer = layer_cls(in_channels=view.in_channels, out_channels=view.out_channels, has_bias=view.has_bias,
                      activation=view.activation, base=cell, **args)
    layer.set_train(bool(cell.training))
    object.__setattr__(layer, REPLACED_ATTR, cell)
    return layer


def replaced_cell(layer: nn.Cell) -> Optional[nn.Cell]:
    """The cell ``layer`` replaced and whose Parameters it holds, or None (built directly, or a cast copy)."""
    return layer.__dict__.get(REPLACED_ATTR)


def swap_cell(slot: CellSlot, new: nn.Cell, prefix: str, keep: Sequence[Optional[Parameter]]) -> None:
    """``replace_cell``, then give the Parameters in ``keep`` their names back (a class may name its weight
    otherwise than the delta layers' ``weight``: checkpoint keys must not change)."""
    names = [(p, p.name) for p in keep if p is not None]
    replace_cell(slot, new, prefix)
    for param, name in names:
        param.name = name


def replace_linear(method: str, slots: Dict[str, CellSlot], kwargs: Dict[str, Any]) -> List[str]:
    """Build every layer first (any error leaves the model untouched), then swap them in."""
    layers = {p: build_layer(method, s.cell, kwargs) for p, s in slots.items()}
    for path, slot in slots.items():
        new = layers[path]
        keep = (new.weight, new.bias) if new.weight is not None else ()  # a quantised base keeps its own names
        swap_cell(slot, new, param_prefix(slot.cell, path), keep)  # named as the cell's
    invalidate_compiled_graphs()
    return list(slots)


def inject(model: nn.Cell, method: str, target_modules: Patterns, exclude_modules: Optional[Patterns] = None,
           dry_run: bool = False, **layer_kwargs: Any) -> List[str]:
    """Replace the Linear-like cells selected by path patterns with ``method``'s delta layer.

    ``method``: ``'lora'`` -> :class:`LoRADense`, ``'adapter'`` -> :class:`AdapterDense`,
    ``'low_rank_adapter'`` -> :class:`LowRankAdapterDense`. Patterns are matched against the paths of
    ``model.cells_and_names()`` (``'bert.layers.0.attention.query'``): case-sensitive shell wildcards
    (``*`` crosses dots, ``?``, ``[seq]``), or, after the prefix ``re:``, a regular expression that must
    match the full path. A layer is replaced if a ``target_modules`` pattern and no ``exclude_modules``
    pattern matches it. Linear-like cells are those of a registered class (:mod:`mindpet.linear_adapters`:
    ``nn.Dense``, mindformers' ``Linear``, any class added with :func:`mindpet.register_linear`; subclasses
    keeping the class's ``construct`` included). Other cells a pattern matches (containers, LayerNorm) are
    ignored, but each pattern must select at least one Linear-like cell, and a selected cell holding a 2-D
    ``weight`` of an unregistered class is an error (naming the class and the registration call).

    Each new layer takes over the cell's ``weight`` and ``bias`` Parameters (the same objects: names,
    values and ``requires_grad`` are kept; a cast copy if ``param_init_type`` differs), in the cell's
    layout (``transpose_b``: a ``[in, out]`` weight is used as laid out, never transposed), ``has_bias``
    and ``activation``, so the output is unchanged at injection. ``param_init_type`` defaults to the
    weight's dtype and ``compute_dtype`` to the cell's (``nn.Dense``: the weight's; mindformers' ``Linear``:
    its ``dtype``), since the layers' own default compute dtype, float16, would change the outputs of a
    float32 model. LoRA's ``lora_dropout`` defaults to 0.0; ``lora_rank`` and ``lora_alpha`` are required
    (not for a dry run). The new parameters are named ``<layer prefix>mindpet_delta_...``, so
    ``freeze_delta(model, method)`` finds them. Compiled GRAPH-mode graphs are invalidated.

    Args:
        model: the network (changed in place).
        method: ``'lora'``, ``'adapter'`` or ``'low_rank_adapter'``.
        target_modules: a pattern or a list of patterns selecting layers.
        exclude_modules: patterns removing layers from the selection.
        dry_run: only return the paths that would be replaced; change nothing and build nothing. The
            patterns, the selected cells and the keyword names are checked; the layer's hyper-parameters
            are not needed, and their values are checked only when the layers are built.
        **layer_kwargs: the delta layer's own arguments (e.g. ``lora_rank``, ``bottleneck_size``).

    Returns:
        The replaced paths, sorted.

    Raises:
        TypeError: ``model`` not a Cell; a bad pattern list; an unknown, missing or cell-owned keyword
            argument (``in_channels``, ``weight_init``, ``transpose_b``, ...); ``dry_run`` not a bool;
            invalid layer arguments (from the layer).
        ValueError: unknown method; a target pattern that selects no Linear-like cell; an exclude pattern
            that removes nothing; a selected layer that is already a delta layer, is shared by two paths, is
            of an unregistered class, or whose weight/bias/activation its adapter cannot read; invalid layer
            argument values. Everything is checked before the model is changed.
        mindpet.kernels.FusedBackendUnavailable: ``backend='fused'`` for a layer the fused kernels cannot
            run (e.g. LoRA on a ``[in, out]`` weight).
    """
    check_cell(model, "inject")
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"For 'inject', 'method' must be one of {list(METHODS)}, but got {method!r}.")
    if not isinstance(dry_run, bool):
        raise TypeError(f"For 'inject', 'dry_run' must be a bool, but got {type(dry_run).__name__}.")
    kwargs = _check_kwargs(method, layer_kwargs, dry_run)
    slots = select_linear(model, target_modules, exclude_modules)
    if dry_run:
        return list(slots)
    return replace_linear(method, slots, kwargs)
