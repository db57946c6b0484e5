"""Freezing parameters by wildcard, by delta mode, or from a YAML file.

All three functions validate every argument before changing any ``requires_grad`` flag, and return a
:class:`FreezeResult`: what is trainable and frozen after the call, and what the call changed. None of them
makes the parameters of a quantised base trainable (``mindpet.quant.QuantizedDense`` or a ``LoRADense`` on
one: codes, scales, offsets and bias get no gradient); a pattern or mode selecting them leaves them frozen. Call them
before the optimizer is built: an optimizer captures ``trainable_params()`` when it is created.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

import yaml
from mindspore import nn

from mindpet._mindspore import own_parameters
from mindpet._cells import check_cell
from mindpet._patterns import PatternSet, check_all_match, check_pattern_list, include_exclude_targets
# DELTA_MODES (the built-in modes) stays importable from here, as before
from mindpet.methods import (DELTA_MODES, DELTA_PREFIX, MODE_ALIASES,  # noqa: F401  pylint: disable=unused-import
                             methods_in, registered_methods)

BITFIT_NAMES = ("bias", "beta")
CONFIG_KEYS = ("include", "exclude")


@dataclass(frozen=True)
class FreezeResult:
    """The outcome of a freezing call: parameter names (from ``model.parameters_and_names()``, in model order).

    Attributes:
        trainable: every parameter with ``requires_grad`` True after the call (what the optimizer should
            get, as ``model.trainable_params()``), whether or not the call changed it.
        untrainable: every parameter with ``requires_grad`` False after the call.
        frozen: the parameters this call froze (trainable before, frozen now).
        unfrozen: the parameters this call made trainable (frozen before, trainable now); empty for a
            model whose parameters were all trainable, the usual case for a first ``freeze_delta``.
    """

    frozen: List[str] = field(default_factory=list)
    unfrozen: List[str] = field(default_factory=list)
    trainable: List[str] = field(default_factory=list)
    untrainable: List[str] = field(default_factory=list)


def _named_params(model: nn.Cell) -> Dict[str, object]:
    return dict(model.parameters_and_names())


def _attribute_paths(model: nn.Cell, params: Dict[str, object]) -> Dict[str, List[str]]:
    """Every attribute path (and the ``Parameter.name``) that reaches each parameter.

    ``parameters_and_names()`` reports a Parameter shared by two attributes once, under the first path
    (a cell's own attributes before its children's). The spec's Prefix example does exactly that
    (``self.past_key = self.prefix.past_key_reparam``), so the delta tag can live on a later path only.
    """
    by_id = {id(param): [name, param.name] for name, param in params.items()}
    for cell_path, cell in model.cells_and_names():
        for attr, param in own_parameters(cell).items():
            if param is not None and id(param) in by_id:
                by_id[id(param)].append(f"{cell_path}.{attr}" if cell_path else attr)
    return {name: by_id[id(param)] for name, param in params.items()}


QUANTIZED_BASE_ATTRS = ("weight_codes", "weight_scales", "weight_offsets", "bias")


def _never_trainable(model: nn.Cell) -> set:
    """The ids of the Parameters of every frozen quantised base in ``model`` (a cell with ``quantized_weight``:
    ``mindpet.quant.QuantizedDense`` or a LoRADense on one): codes, scales, offsets and bias have no gradient."""
    ids = set()
    for _, cell in model.cells_and_names():
        if getattr(cell, "quantized_weight", None) is not None:
            ids.update(id(getattr(cell, a)) for a in QUANTIZED_BASE_ATTRS if getattr(cell, a, None) is not None)
    return ids


def _apply(params: Dict[str, object], targets: Dict[str, bool], model: Optional[nn.Cell] = None) -> FreezeResult:
    """Set ``requires_grad`` per ``targets`` and report the names that changed, in model order. The
    Parameters of a quantised base (:func:`_never_trainable` of ``model``) are never made trainable."""
    frozen, unfrozen = [], []
    keep_frozen = _never_trainable(model) if model is not None else set()
    for name, param in params.items():
        want = targets.get(name)
        if want and id(param) in keep_frozen:
            continue
        if want is None or param.requires_grad == want:
            continue
        (unfrozen if want else frozen).append(name)
    for name in frozen:
        params[name].requires_grad = False
    for name in unfrozen:
        params[name].requires_grad = True
    trainable = [name for name, param in params.items() if param.requires_grad]
    untrainable = [name for name, param in params.items() if not param.requires_grad]
    return FreezeResult(frozen=frozen, unfrozen=unfrozen, trainable=trainable, untrainable=untrainable)


def _checked_patterns(func: str, names, include, exclude):
    include = check_pattern_list(include, "include", func)
    exclude = check_pattern_list(exclude, "exclude", func)
    inc = PatternSet(include, "include", func) if include is not None else None
    exc = PatternSet(exclude, "exclude", func) if exclude is not None else None
    check_all_match(inc, names, "include", func)
    check_all_match(exc, names, "exclude", func)
    return inc, exc


def freeze_modules(model: nn.Cell, include: Optional[List[str]] = None,
                   exclude: Optional[List[str]] = None) -> FreezeResult:
    """Freeze parameters matched by ``include``, unfreeze those matched by ``exclude``.

    Names are the attribute paths from ``model.parameters_and_names()``, matched with
    case-sensitive shell wildcards (``*`` crosses dots, ``?``, ``[seq]``; no wildcard = exact) or, after
    ``re:``, regular expressions matched against the full name.
    A parameter matched by include only is frozen, by exclude only made trainable, by both or
    neither left unchanged.

    Raises:
        TypeError: ``model`` is not an ``nn.Cell``; ``include``/``exclude`` is not a non-empty list of str.
        ValueError: both are None; a pattern matches no parameter. Nothing is changed on error.
    """
    func = "freeze_modules"
    check_cell(model, func)
    if include is None and exclude is None:
        raise ValueError(f"For '{func}', 'include' and 'exclude' cannot both be None: give at least one "
                         f"list of name patterns.")
    params = _named_params(model)
    inc, exc = _checked_patterns(func, list(params), include, exclude)
    return _apply(params, include_exclude_targets(list(params), inc, exc), model)


def _normalise_mode(mode) -> str:
    if not isinstance(mode, str):
        raise TypeError(f"For 'freeze_delta', 'mode' must be a str, but got {type(mode).__name__}: {mode!r}.")
    key = mode.strip().lower()
    key = MODE_ALIASES.get(key, key)
    if key not in registered_methods():
        raise ValueError(f"For 'freeze_delta', 'mode' must be one of {list(registered_methods())} (case-insensitive; "
                         f"'prefix' is accepted for 'prefixtuning'), but got {mode!r}.")
    return key


def is_delta_param(name: str, mode: str) -> bool:
    """Whether parameter ``name`` stays trainable under ``freeze_delta(mode=mode)``.

    ``mode`` must be a canonical lower-case mode. For every mode, names with a ``mindpet_delta_<mode>``
    tag match, the tag read by :func:`mindpet.methods.methods_in` (the longest registered method: ``adapter``
    does not match ``mindpet_delta_low_rank_adapter_*``, nor ``lora`` a registered ``mindpet_delta_lora_plus_*``).
    For ``bitfit`` also every parameter whose last dotted component is exactly ``bias`` (Dense, Conv, ...)
    or ``beta`` (LayerNorm, BatchNorm).
    """
    if mode in methods_in(name):
        return True
    return mode == "bitfit" and name.rsplit(".", 1)[-1] in BITFIT_NAMES


def freeze_delta(model: nn.Cell, mode: str, include: Optional[List[str]] = None,
                 exclude: Optional[List[str]] = None) -> FreezeResult:
    """Freeze every parameter except the delta parameters of ``mode``, then apply include/exclude.

    ``mode`` (case-insensitive) is one of ``lora``, ``prefixtuning`` (alias ``prefix``), ``adapter``,
    ``low_rank_adapter``, ``bitfit``, ``prompttuning``, ``ptuning2``; the delta parameters of a mode
    are those with ``mindpet_delta_<mode>`` in their name or in any attribute path that reaches them
    (see :func:`is_delta_param`; bitfit also keeps every ``bias`` and ``beta``). They end up trainable even if an earlier call froze them.
    ``include``/``exclude`` are then applied with the :func:`freeze_modules` rules, e.g.
    ``exclude=['*head*']`` keeps a task head trainable.

    Raises:
        TypeError: ``model`` not an ``nn.Cell``; ``mode`` not a str; bad ``include``/``exclude``.
        ValueError: unknown mode; the model has no parameter of the mode; a pattern matches no
            parameter. Nothing is changed on error.
    """
    func = "freeze_delta"
    check_cell(model, func)
    key = _normalise_mode(mode)
    params = _named_params(model)
    names = list(params)
    inc, exc = _checked_patterns(func, names, include, exclude)
    paths = _attribute_paths(model, params)
    targets = {name: any(is_delta_param(path, key) for path in paths[name]) for name in names}
    if not any(targets.values()):
        what = ("no parameter named 'bias' or 'beta' and none containing 'mindpet_delta_bitfit'"
                if key == "bitfit" else f"no parameter whose name contains '{DELTA_PREFIX}{key}'")
        raise ValueError(f"For '{func}', mode={mode!r} but the model has {what}; freezing would leave "
                         f"nothing trainable. Add the delta layers first, or use freeze_modules.")
    targets.update(include_exclude_targets(names, inc, exc))
    return _apply(params, targets, model)


def _read_freeze_section(config_path) -> Dict[str, Optional[List[str]]]:
    """Read and check the ``freeze`` mapping of a YAML file; every error names the file."""
    func = "freeze_from_config"
    if not isinstance(config_path, (str, os.PathLike)):
        raise TypeError(f"For '{func}', 'config_path' must be a str or os.PathLike, "
                        f"but got {type(config_path).__name__}.")
    path = os.fspath(config_path)
    if os.path.islink(path):
        raise ValueError(f"For '{func}', config file '{path}' is a symbolic link; pass the real file.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"For '{func}', config file '{path}' does not exist.")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as err:
        raise ValueError(f"For '{func}', cannot open config file '{path}': {err}.") from err
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"For '{func}', config file '{path}' is not a regular file.")
    with os.fdopen(fd, "r", encoding="utf-8") as handle:
        try:
            data = yaml.safe_load(handle)
        except yaml.YAMLError as err:
            raise ValueError(f"For '{func}', config file '{path}' is not valid YAML: {err}") from err
    if data is None:
        raise ValueError(f"For '{func}', config file '{path}' is empty.")
    if not isinstance(data, dict):
        raise ValueError(f"For '{func}', config file '{path}' must hold a mapping with a 'freeze' key, "
                         f"but its top level is a {type(data).__name__}.")
    if "freeze" not in data:
        raise ValueError(f"For '{func}', config file '{path}' has no 'freeze' key "
                         f"(expected 'freeze: {{include: [...], exclude: [...]}}').")
    section = data["freeze"]
    if not isinstance(section, dict):
        raise TypeError(f"For '{func}', 'freeze' in config file '{path}' must be a mapping with keys "
                        f"{list(CONFIG_KEYS)}, but got {type(section).__name__}: {section!r}.")
    unknown = [k for k in section if k not in CONFIG_KEYS]
    if unknown:
        raise ValueError(f"For '{func}', 'freeze' in config file '{path}' has unknown keys {unknown}; "
                         f"allowed keys are {list(CONFIG_KEYS)}.")
    return {key: section.get(key) for key in CONFIG_KEYS}


def freeze_from_config(model: nn.Cell, config_path: Union[str, os.PathLike]) -> FreezeResult:
    """Apply :func:`freeze_modules` with include/exclude read from a YAML file.

    The file holds ``freeze: {include: [...], exclude: [...]}``; each list is optional but at least
    one must be given; other top-level keys are ignored, other keys under ``freeze`` are errors.
    Symbolic links are refused. Read-only files are fine (the file is only read).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: symlink, not a regular file, invalid YAML, empty file, no ``freeze`` key,
            unknown keys, neither list given, or a pattern that matches no parameter.
        TypeError: ``model`` not an ``nn.Cell``; ``freeze`` not a mapping; a list that is not a
            non-empty list of str. Every message names the file; nothing is changed on error.
    """
    check_cell(model, "freeze_from_config")
    section = _read_freeze_section(config_path)
    try:
        return freeze_modules(model, include=section["include"], exclude=section["exclude"])
    except (TypeError, ValueError) as err:
        raise type(err)(f"In config file '{os.fspath(config_path)}': {err}") from err
