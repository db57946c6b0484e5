"""The registry of delta layer classes: each class declares its method, hyper-parameters and parameter prefix.

``@register_layer("lora", hyper_parameters=(...), injectable=True)`` on a layer class sets the class
attributes ``delta_method``, ``delta_param_prefix`` (``mindpet_delta_<method>_``, see
:mod:`mindpet.methods`) and ``delta_hyper_parameters``, registers the method name, and records the class.
Readers: ``mindpet.inject`` (the injectable Dense replacements and inject's defaults), ``mindpet.delta_io``
(the hyper-parameters written to and compared from ``delta_config.json``), freezing (through the method
names). Adding a method is one decorated class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from mindpet.methods import param_prefix, register_method

__all__ = ["LayerSpec", "register_layer", "layer_spec", "layer_specs", "injectable_layers"]

HyperParameter = Union[str, Tuple[str, str]]


@dataclass(frozen=True)
class LayerSpec:
    """What the registry knows of one delta layer class.

    Attributes:
        layer: the class.
        method: its method name (``'lora'``).
        hyper_parameters: ``{config key: attribute}``, e.g. ``{"lora_dropout": "lora_dropout_p"}``.
        injectable: whether ``mindpet.inject`` replaces ``nn.Dense`` cells by this class (a Dense
            replacement taking ``in_channels``, ``out_channels``, ``weight_init``, ``bias_init``,
            ``has_bias``, ``activation``).
        inject_defaults: ``inject``'s defaults on top of the class's own (``{"lora_dropout": 0.0}``).
    """

    layer: type
    method: str
    hyper_parameters: Mapping[str, str]
    injectable: bool = False
    inject_defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def param_prefix(self) -> str:
        return param_prefix(self.method)

    def describe(self, cell: Any) -> Dict[str, Any]:
        """``{"method", "class", <key>: value}`` of a layer instance (the form of ``delta_config.json``)."""
        info: Dict[str, Any] = {"method": self.method, "class": self.layer.__name__}
        for key, attr in self.hyper_parameters.items():
            info[key] = getattr(cell, attr)
        return info


_SPECS: Dict[type, LayerSpec] = {}


def register_layer(method: str, hyper_parameters: Sequence[HyperParameter], injectable: bool = False,
                   inject_defaults: Optional[Mapping[str, Any]] = None) -> Callable[[type], type]:
    """Class decorator: register a delta layer class of ``method``.

    ``hyper_parameters`` lists the attributes that describe a layer (``'lora_rank'``), or
    ``(config key, attribute)`` pairs where they differ (``('lora_dropout', 'lora_dropout_p')``).
    """
    register_method(method)
    pairs = {}
    for item in hyper_parameters:
        key, attr = (item, item) if isinstance(item, str) else item
        pairs[key] = attr

    def decorate(cls: type) -> type:
        spec = LayerSpec(cls, method, pairs, injectable, dict(inject_defaults or {}))
        cls.delta_method = method
        cls.delta_param_prefix = spec.param_prefix
        cls.delta_hyper_parameters = tuple(pairs)
        _SPECS[cls] = spec
        return cls

    return decorate


def layer_spec(cls: type) -> Optional[LayerSpec]:
    """The spec of exactly ``cls`` (not of its subclasses), or None."""
    return _SPECS.get(cls)


def layer_specs() -> Tuple[LayerSpec, ...]:
    """Every registered layer class's spec, in registration order."""
    return tuple(_SPECS.values())


def injectable_layers() -> Dict[str, LayerSpec]:
    """``{method: spec}`` of the layers ``mindpet.inject`` can put in place of ``nn.Dense``."""
    return {spec.method: spec for spec in _SPECS.values() if spec.injectable}
