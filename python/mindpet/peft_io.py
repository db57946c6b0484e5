"""LoRA in Hugging Face PEFT's on-disk format: ``adapter_config.json`` + ``adapter_model.safetensors``.

A PEFT LoRA directory holds the config (``peft_type: "LORA"``, ``r``, ``lora_alpha``, ``target_modules``,
``rank_pattern`` / ``alpha_pattern`` for per-module exceptions, ...) and one pair of float tensors per
adapted module, keyed by the module's name in the source (PyTorch) model::

    base_model.model.<module>.lora_A.weight   [r, in]
    base_model.model.<module>.lora_B.weight   [out, r]

PEFT adds ``scaling * B A x`` to the module's output, ``scaling = lora_alpha / r`` (``lora_alpha /
sqrt(r)`` with ``use_rslora``), which is :class:`LoRADense`'s ``s = lora_alpha / lora_rank``. MindSpore
attribute paths map to source module names through ``name_map`` (identity by default): a dict
``{mindspore path: source name}`` (unlisted paths map to themselves) or a callable.

The two files are tied together through two extra entries of the safetensors header metadata (str ->
str, next to PEFT's ``"format": "pt"``; PEFT and ``safetensors`` ignore them, while an extra key in the
config would make recent PEFT warn, and older PEFT may refuse it): ``mindpet_tensors_sha256``, the
SHA-256 of the tensors (:func:`tensors_sha256`: names, dtypes, shapes and data), and
``mindpet_config_sha256``, the SHA-256 of the bytes of ``adapter_config.json``. :func:`import_peft`
checks both when present; files written by PEFT lack them and import as before.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
from mindspore import Tensor, nn
from safetensors.numpy import save_file

from mindpet._cells import cell_slots, check_cell
from mindpet._mindspore import child_cells
from mindpet._safetensors import read_safetensors, read_safetensors_metadata
from mindpet.delta import LoRADense
from mindpet.atomic import atomic_write, atomic_write_bytes
from mindpet.inject import replace_linear
from mindpet.linear_adapters import linear_adapter
from mindpet.merge import lora_layers

__all__ = ["export_peft", "import_peft", "PeftImportReport", "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "tensors_sha256"]

PathLike = Union[str, os.PathLike]
NameMap = Union[None, Mapping[str, str], Callable[[str], str]]
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."
TENSORS_SHA256 = "mindpet_tensors_sha256"  # safetensors metadata keys written by export_peft
CONFIG_SHA256 = "mindpet_config_sha256"
_KEY = re.compile(r"base_model\.model\.(?P<module>.+)\.lora_(?P<which>[AB])\.weight")


@dataclass(frozen=True)
class PeftImportReport:
    """What :func:`import_peft` did, by MindSpore path (modules) or file key (keys).

    Attributes:
        loaded_modules: paths whose LoRA A and B were set from the file.
        injected_modules: the subset that was a plain Linear-like cell (``nn.Dense``, mindformers' ``Linear``,
            a registered class) and received a new ``LoRADense``.
        missing_keys: file keys the model expects but the file lacks (a LoRA layer of the model the file
            does not cover, or half of a pair).
        unexpected_keys: file keys that are not LoRA weights of a module of the model.
        mismatches: modules not loaded because rank, scaling, shapes or cell type disagree.
    """

    loaded_modules: List[str] = field(default_factory=list)
    injected_modules: List[str] = field(default_factory=list)
    missing_keys: List[str] = field(default_factory=list)
    unexpected_keys: List[str] = field(default_factory=list)
    mismatches: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_keys or self.unexpected_keys or self.mismatches)


# ----------------------------------------------------------------------------------------------- helpers
def _check_args(model: Any, directory: Any, name_map: Any, func: str) -> Tuple[str, Callable[[str], str]]:
    check_cell(model, func)
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"For '{func}', 'directory' must be a str or os.PathLike, but got "
                        f"{type(directory).__name__}.")
    if name_map is None:
        mapping = lambda path: path  # noqa: E731
    elif isinstance(name_map, Mapping):
        bad = [k for k, v in name_map.items() if not isinstance(k, str) or not isinstance(v, str) or not v]
        if bad:
            raise TypeError(f"For '{func}', 'name_map' must map str paths to non-empty str names; bad entries "
                            f"for {bad[:3]}.")
        mapping = lambda path: name_map.get(path, path)  # noqa: E731
    elif callable(name_map):
        mapping = name_map
    else:
        raise TypeError(f"For '{func}', 'name_map' must be None, a dict or a callable, but got "
                        f"{type(name_map).__name__}.")
    return os.fspath(directory), mapping


def _source_name(mapping: Callable[[str], str], path: str, func: str) -> str:
    name = mapping(path)
    if not isinstance(name, str) or not name:
        raise TypeError(f"For '{func}', 'name_map' returned {name!r} for path {path!r}; expected a non-empty "
                        f"str.")
    return name


def _most_common(values: List[Any]) -> Any:
    counts = Counter(values)
    return sorted(counts, key=lambda v: (-counts[v], v))[0]


def _plain(number: float) -> Union[int, float]:
    return int(number) if float(number).is_integer() else float(number)


def _pattern_value(patterns: Mapping[str, Any], name: str, default: Any) -> Any:
    """PEFT's rule: the first key ``k`` with ``re.match(r'(.*\\.)?(k)$', name)`` gives the value."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def tensors_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) of named arrays: for each name in sorted order, the name, dtype, shape and C-order bytes.

    Independent of how a safetensors file lays the tensors out, so it can be computed before writing.
    """
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode("utf-8"))
        digest.update(array.tobytes())
    return digest.hexdigest()


def _check_ties(weights_path: str, config_bytes: bytes, arrays: Dict[str, np.ndarray], func: str) -> None:
    """ValueError naming the file if the SHA-256 recorded by export_peft does not match (no record: no check)."""
    metadata = read_safetensors_metadata(weights_path, func)
    config_sha = metadata.get(CONFIG_SHA256)
    if config_sha is not None and config_sha != hashlib.sha256(config_bytes).hexdigest():
        config_path = os.path.join(os.path.dirname(weights_path), ADAPTER_CONFIG)
        raise ValueError(f"For '{func}', {config_path!r} is not the config exported with {weights_path!r} (its "
                         f"SHA-256 differs from the '{CONFIG_SHA256}' recorded in the weights file): the files come "
                         f"from different exports, or the config was edited.")
    tensors_sha = metadata.get(TENSORS_SHA256)
    if tensors_sha is not None and tensors_sha != tensors_sha256(arrays):
        raise ValueError(f"For '{func}', the tensors of {weights_path!r} do not match the '{TENSORS_SHA256}' "
                         f"recorded in its header: the file was modified or damaged after export.")


# ----------------------------------------------------------------------------------------------- export
def export_peft(model: nn.Cell, directory: PathLike, name_map: NameMap = None,
                base_model_name_or_path: Optional[str] = None, task_type: Optional[str] = None) -> str:
    """Write every :class:`LoRADense` of ``model`` as a PEFT LoRA adapter directory.

    ``r`` and ``lora_dropout`` are the most common values over the layers (ties: the smaller),
    ``lora_alpha`` the most common among the layers of rank ``r``; layers that differ get ``rank_pattern``
    / ``alpha_pattern`` entries keyed by their full module name (mixed dropouts warn: PEFT has one).
    ``target_modules`` lists the full module names. Tensors are float32. Both files are written
    atomically (weights first). The weights file's header metadata records the SHA-256 of the tensors
    and of the config (see the module docstring), which :func:`import_peft` verifies. A layer with an
    activation corresponds to a source Linear followed by that activation: PEFT adds the update to the
    Linear's output, before the activation, as LoRADense does.

    Args:
        model: a network with LoRADense layers (merged or not: A and B are exported either way).
        directory: created if needed; ``adapter_config.json`` and ``adapter_model.safetensors`` inside.
        name_map: MindSpore path -> source module name (dict or callable); default identity.
        base_model_name_or_path, task_type: written to the config as given (default null).

    Returns:
        The directory.

    Raises:
        TypeError: bad argument types, or ``name_map`` giving a non-str.
        ValueError: no LoRADense; two paths mapped to one name; ``directory`` is a file.
    """
    func = "export_peft"
    directory, mapping = _check_args(model, directory, name_map, func)
    for value, arg in ((base_model_name_or_path, "base_model_name_or_path"), (task_type, "task_type")):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"For '{func}', '{arg}' must be a str or None, but got {type(value).__name__}.")
    layers = lora_layers(model, func)
    names = {path: _source_name(mapping, path, func) for path, _ in layers}
    seen: Dict[str, str] = {}
    for path, name in names.items():
        if name in seen:
            raise ValueError(f"For '{func}', 'name_map' maps both {seen[name]!r} and {path!r} to {name!r}.")
        seen[name] = path
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"For '{func}', 'directory' {directory!r} is a file.")

    ranks = [layer.lora_rank for _, layer in layers]
    alphas = [layer.lora_alpha for _, layer in layers]
    dropouts = [layer.lora_dropout_p for _, layer in layers]
    r, dropout = _most_common(ranks), _most_common(dropouts)
    alpha = _most_common([a for a, rank in zip(alphas, ranks) if rank == r])  # the default rank's usual alpha
    if len(set(dropouts)) > 1:
        warnings.warn(f"export_peft: the LoRA layers use different dropouts {sorted(set(dropouts))}; PEFT has "
                      f"one, {dropout} is written (dropout does not change the weights).", UserWarning,
                      stacklevel=2)
    tensors = {}
    for path, layer in layers:
        key = KEY_PREFIX + names[path]
        tensors[key + ".lora_A.weight"] = layer.mindpet_delta_lora_a.astype(np.float32).asnumpy()
        tensors[key + ".lora_B.weight"] = layer.mindpet_delta_lora_b.astype(np.float32).asnumpy()
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    config = {
        "alpha_pattern": {names[p]: _plain(l.lora_alpha) for p, l in layers if l.lora_alpha != alpha},
        "auto_mapping": None,
        "base_model_name_or_path": base_model_name_or_path,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layers_pattern": None,
        "layers_to_transform": None,
        "lora_alpha": _plain(alpha),
        "lora_dropout": float(dropout),
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": r,
        "rank_pattern": {names[p]: l.lora_rank for p, l in layers if l.lora_rank != r},
        "revision": None,
        "target_modules": sorted(names.values()),
        "task_type": task_type,
        "use_dora": False,
        "use_rslora": False,
    }
    config_bytes = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8")
    metadata = {"format": "pt", TENSORS_SHA256: tensors_sha256(tensors),
                CONFIG_SHA256: hashlib.sha256(config_bytes).hexdigest()}
    os.makedirs(directory, exist_ok=True)
    atomic_write(os.path.join(directory, ADAPTER_WEIGHTS), lambda tmp: save_file(tensors, tmp, metadata=metadata))
    atomic_write_bytes(os.path.join(directory, ADAPTER_CONFIG), config_bytes)
    return directory


# ----------------------------------------------------------------------------------------------- import
def _read_json(path: str, func: str) -> Tuple[Dict[str, Any], bytes]:
    """The JSON object in ``path`` and the file's bytes."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"For '{func}', {path!r} does not exist.")
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        config = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"For '{func}', {path!r} is not valid JSON: {err}.") from err
    if not isinstance(config, dict):
        raise ValueError(f"For '{func}', {path!r} must hold a JSON object.")
    return config, raw


def _lora_settings(config: Dict[str, Any], path: str, func: str) -> Dict[str, Any]:
    """The LoRA settings of a PEFT config, checked: only what LoRADense can represent is accepted."""
    def fail(what: str) -> ValueError:
        return ValueError(f"For '{func}', {path!r}: {what}.")

    if config.get("peft_type") != "LORA":
        raise fail(f"peft_type is {config.get('peft_type')!r}; only 'LORA' adapters can be imported")
    r, alpha = config.get("r"), config.get("lora_alpha")
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise fail(f"'r' must be a positive int, got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha == 0 or not math.isfinite(alpha):
        raise fail(f"'lora_alpha' must be a finite non-zero number, got {alpha!r}")
    if config.get("bias", "none") != "none":
        raise fail(f"bias={config.get('bias')!r} (trained biases) is not supported; only 'none'")
    for flag in ("use_dora", "lora_bias"):
        if config.get(flag):
            raise fail(f"{flag}=true is not supported")
    dropout = config.get("lora_dropout", 0.0) or 0.0
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise fail(f"'lora_dropout' must be in [0, 1), got {dropout!r}")
    patterns = {}
    for key in ("rank_pattern", "alpha_pattern"):
        value = config.get(key) or {}
        if not isinstance(value, dict):
            raise fail(f"'{key}' must be an object, got {value!r}")
        patterns[key] = value
    if config.get("modules_to_save"):
        warnings.warn(f"import_peft: {path!r} lists modules_to_save {config['modules_to_save']}; only the LoRA "
                      f"weights are imported (other tensors are reported as unexpected keys).", UserWarning,
                      stacklevel=3)
    return {"r": r, "lora_alpha": alpha, "lora_dropout": float(dropout), "use_rslora": bool(config.get("use_rslora")),
            **patterns}


def _module_pairs(arrays: Dict[str, np.ndarray]) -> Tuple[Dict[str, Dict[str, np.ndarray]], List[str]]:
    """``{source module: {'A': array, 'B': array}}`` and the keys that are not LoRA A/B weights."""
    modules: Dict[str, Dict[str, np.ndarray]] = {}
    other = []
    for key, value in arrays.items():
        match = _KEY.fullmatch(key)
        if match is None:
            other.append(key)
        else:
            modules.setdefault(match["module"], {})[match["which"]] = value
    return modules, other


def _key(module: str, which: str) -> str:
    return f"{KEY_PREFIX}{module}.lora_{which}.weight"


def import_peft(model: nn.Cell, directory: PathLike, name_map: NameMap = None, strict: bool = True
                ) -> PeftImportReport:
    """Load a PEFT LoRA adapter directory into ``model``, adding LoRA where the model has plain Dense.

    For each module of the file (``base_model.model.<module>.lora_{A,B}.weight``), the model cell at the
    MindSpore path that ``name_map`` maps to ``<module>`` must be

    - a :class:`LoRADense`: its rank must equal the module's ``r`` (``rank_pattern`` applied) and its scale
      ``lora_alpha / lora_rank`` the module's PEFT scaling; or
    - a plain Linear-like cell (``nn.Dense``, mindformers' ``Linear``, a class registered with
      :func:`mindpet.register_linear`; either weight layout): a LoRADense with that rank and scaling
      (``lora_dropout`` from the config) replaces it, as :func:`mindpet.inject` does.

    PEFT's ``lora_A [r, in]`` and ``lora_B [out, r]`` are LoRADense's A and B whatever the layout of the base
    weight (``[out, in]`` or ``[in, out]``), on export and import alike.

    Then A and B are set (cast to the parameters' dtype). Everything is checked before the model changes,
    including, for files written by :func:`export_peft`, the SHA-256 of the config and of the tensors
    recorded in the weights file (files written by PEFT have no such record and are not checked).

    Args:
        model: the network (changed in place).
        directory: holds ``adapter_config.json`` and ``adapter_model.safetensors``.
        name_map: MindSpore path -> source module name (dict or callable), as for :func:`export_peft`.
            A callable is applied to every cell path of the model; paths for which it raises KeyError or
            ValueError are treated as having no source name.
        strict: raise on any missing or unexpected key or mismatch; with False, load the modules that fit
            and report the rest.

    Returns:
        A :class:`PeftImportReport`.

    Raises:
        TypeError: bad argument types. FileNotFoundError: a file is missing.
        ValueError: not a LoRA config, or features LoRADense cannot represent (``bias`` other than
            ``'none'``, DoRA); the SHA-256 recorded by :func:`export_peft` does not match the config or
            the tensors (naming the file); the model has merged LoRA layers; with ``strict``, any problem of the report.
    """
    func = "import_peft"
    directory, mapping = _check_args(model, directory, name_map, func)
    if not isinstance(strict, bool):
        raise TypeError(f"For '{func}', 'strict' must be a bool, but got {type(strict).__name__}.")
    config_path, weights_path = os.path.join(directory, ADAPTER_CONFIG), os.path.join(directory, ADAPTER_WEIGHTS)
    config, config_bytes = _read_json(config_path, func)
    settings = _lora_settings(config, config_path, func)
    arrays = read_safetensors(weights_path, func)
    _check_ties(weights_path, config_bytes, arrays, func)
    merged = [p for p, c in model.cells_and_names() if isinstance(c, LoRADense) and c.merged]
    if merged:
        raise ValueError(f"For '{func}', the model has merged LoRA layers {merged}; call "
                         f"mindpet.unmerge_lora(model) first.")

    slots = cell_slots(model)
    by_source: Dict[str, List[str]] = {}
    for path in slots:
        try:
            source = _source_name(mapping, path, func)
        except (KeyError, ValueError):  # a callable that knows only some paths: the others are unmapped
            continue
        by_source.setdefault(source, []).append(path)
    modules, unexpected = _module_pairs(arrays)
    missing: List[str] = []
    mismatches: List[str] = []
    plan: Dict[str, Tuple[str, Dict[str, np.ndarray], int, float]] = {}  # path -> (module, A/B, r, scaling)
    for module in sorted(modules):
        pair = modules[module]
        paths = by_source.get(module, [])
        if len(paths) != 1:
            unexpected.extend(_key(module, w) for w in sorted(pair))
            if len(paths) > 1:
                mismatches.append(f"{module}: 'name_map' maps several paths {paths} to it")
            continue
        path = paths[0]
        if set(pair) != {"A", "B"}:
            missing.extend(_key(module, w) for w in "AB" if w not in pair)
            continue
        r = _pattern_value(settings["rank_pattern"], module, settings["r"])
        alpha = _pattern_value(settings["alpha_pattern"], module, settings["lora_alpha"])
        scaling = alpha / math.sqrt(r) if settings["use_rslora"] else alpha / r
        problem = _check_module(slots[path].cell, pair["A"], pair["B"], r, scaling)
        if problem:
            mismatches.append(f"{path} ({module}): {problem}")
            continue
        plan[path] = (module, pair, r, scaling)
    covered = {p for m in modules for p in by_source.get(m, [])}
    for path, slot in slots.items():  # LoRA layers of the model that the file does not cover
        if isinstance(slot.cell, LoRADense) and path not in covered:
            try:
                source = _source_name(mapping, path, func)
            except (KeyError, ValueError):
                source = path
            missing.extend(_key(source, w) for w in "AB")
    report = PeftImportReport(
        loaded_modules=sorted(plan),
        injected_modules=sorted(p for p in plan if not isinstance(slots[p].cell, LoRADense)),
        missing_keys=missing, unexpected_keys=sorted(unexpected), mismatches=mismatches)
    if strict and not report.ok:
        raise ValueError(f"For '{func}' with strict=True, {directory!r} does not fit the model: missing keys "
                         f"{report.missing_keys}; unexpected keys {report.unexpected_keys}; mismatches "
                         f"{report.mismatches}.")
    _apply(plan, slots, report.injected_modules, settings["lora_dropout"])
    return report


def _check_module(cell: nn.Cell, a: np.ndarray, b: np.ndarray, r: int, scaling: float) -> str:
    """Why the file's A [r, in] and B [out, r] cannot go into ``cell`` ('' if they can)."""
    if isinstance(cell, LoRADense):
        in_channels, out_channels = cell.in_channels, cell.out_channels
    else:
        adapter = linear_adapter(cell)
        if adapter is None:
            return (f"a {type(cell).__name__}, not a LoRADense or a Linear-like cell (nn.Dense, mindformers' Linear "
                    f"or a class registered with mindpet.register_linear)")
        try:
            view = adapter.view(cell)
        except ValueError as err:
            return str(err)
        in_channels, out_channels = view.in_channels, view.out_channels
    expected_a, expected_b = (r, in_channels), (out_channels, r)
    if tuple(a.shape) != expected_a or tuple(b.shape) != expected_b:
        return (f"lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)} in the file, expected {expected_a} / "
                f"{expected_b} (r={r})")
    if isinstance(cell, LoRADense):
        if cell.lora_rank != r:
            return f"r={r} in the file, lora_rank={cell.lora_rank} in the model"
        if not math.isclose(cell.scaling, scaling, rel_tol=1e-6):
            return f"scaling {scaling:g} in the file, lora_alpha/lora_rank={cell.scaling:g} in the model"
    return ""


def _apply(plan, slots, to_inject: List[str], dropout: float) -> None:
    """Inject LoRA where needed (grouped by rank and scale), then set every A and B."""
    groups: Dict[Tuple[int, float], List[str]] = {}
    for path in to_inject:
        _, _, r, scaling = plan[path]
        groups.setdefault((r, scaling), []).append(path)
    for (r, scaling), paths in groups.items():
        replace_linear("lora", {p: slots[p] for p in paths},
                      {"lora_rank": r, "lora_alpha": scaling * r, "lora_dropout": dropout})
    for path, (_, pair, _, _) in plan.items():
        slot = slots[path]
        layer = child_cells(slot.parent)[slot.attr]  # the cell now in place
        _set(layer.mindpet_delta_lora_a, pair["A"])
        _set(layer.mindpet_delta_lora_b, pair["B"])


def _set(param, array: np.ndarray) -> None:
    param.set_data(Tensor(np.asarray(array, dtype=np.float32)).astype(param.dtype))
