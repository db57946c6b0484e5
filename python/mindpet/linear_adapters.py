"""Linear-like Cells that :func:`mindpet.inject` can target: one adapter (a strategy object) per Cell class.

A *Linear-like* Cell computes ``y = activation(x W^T + b)`` with a 2-D ``weight`` W ``[out, in]``
(``transpose_b=True``, as ``nn.Dense``), or ``y = activation(x W + b)`` with W ``[in, out]``
(``transpose_b=False``), an optional bias ``[out]`` and an optional activation, in a compute dtype. A
:class:`LinearAdapter` says where a class keeps these; :meth:`LinearAdapter.view` reads them from one
Cell as a :class:`LinearView`, from which ``inject`` builds the delta layer that takes over the same
Parameter objects.

Built in: ``mindspore.nn.Dense`` and mindformers' ``mindformers.modules.layers.Linear`` (registered by
name, so mindformers is never imported). Register another class in one call::

    mindpet.register_linear(MyLinear, weight="kernel", bias="offset", transpose_b=False)

A registered class also covers its subclasses that keep its ``construct`` (a subclass with its own
``construct`` computes something else and must be registered itself).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Union

from mindspore import Parameter, nn
from mindspore.common import dtype as mstype
from mindspore.ops import Primitive

from mindpet._mindspore import child_cells, own_parameters

__all__ = ["LinearView", "LinearAdapter", "register_linear", "unregister_linear", "linear_adapter",
           "DENSE", "MINDFORMERS_LINEAR", "QUANTIZED_DENSE"]

# A field of an adapter: the name of an attribute of the Cell, a function of the Cell, or a constant.
Field = Union[str, Callable[[nn.Cell], Any], Any]
_FLOAT_DTYPES = (mstype.float16, mstype.float32, mstype.bfloat16)


@dataclass(frozen=True)
class LinearView:
    """What a Linear-like Cell holds, read by its adapter.

    ``weight`` ``[out_channels, in_channels]`` if ``transpose_b`` else ``[in_channels, out_channels]``;
    ``bias`` ``[out_channels]`` or None; ``activation`` a Cell, Primitive or None, applied after the bias;
    ``compute_dtype`` the dtype the Cell computes in; ``quantized`` the Cell itself when its weight is a frozen
    quantised base (``mindpet.quant.QuantizedDense``; ``weight`` is then None), else None.
    """

    in_channels: int
    out_channels: int
    weight: Parameter
    bias: Optional[Parameter]
    transpose_b: bool
    activation: Any
    compute_dtype: Any
    quantized: Any = None  # a mindpet.quant.QuantizedDense: the weight is its quantised base (weight is None)

    @property
    def has_bias(self) -> bool:
        return self.bias is not None


def _read(cell: nn.Cell, spec: Field) -> Any:
    """A field's value for ``cell``: ``getattr`` for a str, a call for a callable, else the constant."""
    if isinstance(spec, str):
        return getattr(cell, spec, None)
    if callable(spec) and not isinstance(spec, (nn.Cell, Primitive)):
        return spec(cell)
    return spec


class LinearAdapter:
    """How to read one Linear-like Cell class (the strategy ``inject`` uses for it).

    Each field is the name of an attribute of the Cell (str), a function of the Cell, or a constant.

    Args:
        weight: attribute holding the 2-D weight Parameter. Default ``'weight'``.
        bias: attribute holding the bias Parameter ``[out]`` (None there: no bias), or None: the class
            has none. Default ``'bias'``.
        transpose_b: the weight's layout: True ``[out, in]``, False ``[in, out]``. Default True.
        has_bias: whether the bias is added; None (default): whether the bias attribute holds a Parameter.
        activation: the activation applied after the bias (Cell, Primitive or None). Default
            ``'activation'`` (absent attribute: None).
        compute_dtype: the dtype the Cell computes in; None (default): the weight's dtype.

    Subclass and override :meth:`view` for a Cell these fields cannot describe.
    """

    def __init__(self, weight: str = "weight", bias: Optional[str] = "bias", transpose_b: Field = True,
                 has_bias: Field = None, activation: Field = "activation", compute_dtype: Field = None):
        for name, value in (("weight", weight), ("bias", bias)):
            if not (isinstance(value, str) and value) and not (name == "bias" and value is None):
                raise TypeError(f"For 'LinearAdapter', '{name}' must be the name of an attribute (a non-empty str)"
                                f"{' or None' if name == 'bias' else ''}, but got {value!r}.")
        self.weight = weight
        self.bias = bias
        self.transpose_b = transpose_b
        self.has_bias = has_bias
        self.activation = activation
        self.compute_dtype = compute_dtype

    def __repr__(self) -> str:
        fields = ("weight", "bias", "transpose_b", "has_bias", "activation", "compute_dtype")
        return f"{type(self).__name__}(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in fields) + ")"

    def view(self, cell: nn.Cell) -> LinearView:
        """Read ``cell``'s weight, bias, layout, activation and compute dtype, checked.

        Raises:
            ValueError: a weight that is not a 2-D Parameter, a bias that is not a Parameter of shape
                ``[out]``, a layout or ``has_bias`` that is not a bool, an activation that is not a Cell,
                Primitive or None, or a compute dtype that is not float16/float32/bfloat16 (each message
                names the class and the field).
        """
        cls = type(cell).__name__
        weight = getattr(cell, self.weight, None)
        if not isinstance(weight, Parameter) or len(weight.shape) != 2:
            got = f"shape {tuple(weight.shape)}" if isinstance(weight, Parameter) else type(weight).__name__
            raise ValueError(f"For 'inject', the Linear adapter of {cls} reads the weight from attribute "
                             f"{self.weight!r}, which must hold a 2-D Parameter, but holds a {got}.")
        transpose_b = _read(cell, self.transpose_b)
        if not isinstance(transpose_b, bool):
            raise ValueError(f"For 'inject', the Linear adapter of {cls}: 'transpose_b' must give a bool "
                             f"(True: weight [out, in]; False: [in, out]), but gave {transpose_b!r}.")
        out_channels, in_channels = weight.shape if transpose_b else weight.shape[::-1]
        bias = getattr(cell, self.bias, None) if self.bias is not None else None
        has_bias = bias is not None if self.has_bias is None else _read(cell, self.has_bias)
        if not isinstance(has_bias, bool):
            raise ValueError(f"For 'inject', the Linear adapter of {cls}: 'has_bias' must give a bool, but gave "
                             f"{has_bias!r}.")
        if not has_bias:
            bias = None
        elif not isinstance(bias, Parameter) or tuple(bias.shape) != (out_channels,):
            got = f"shape {tuple(bias.shape)}" if isinstance(bias, Parameter) else type(bias).__name__
            raise ValueError(f"For 'inject', {cls} has a bias, and its Linear adapter reads it from attribute "
                             f"{self.bias!r}, which must hold a Parameter of shape ({out_channels},), but holds "
                             f"a {got}.")
        activation = _read(cell, self.activation)
        if activation is not None and not isinstance(activation, (nn.Cell, Primitive)):
            raise ValueError(f"For 'inject', the Linear adapter of {cls}: 'activation' must give a Cell, a "
                             f"Primitive or None, but gave {type(activation).__name__}.")
        compute_dtype = weight.dtype if self.compute_dtype is None else _read(cell, self.compute_dtype)
        if compute_dtype not in _FLOAT_DTYPES:
            raise ValueError(f"For 'inject', the Linear adapter of {cls}: 'compute_dtype' must give float16, "
                             f"float32 or bfloat16, but gave {compute_dtype!r}.")
        return LinearView(int(in_channels), int(out_channels), weight, bias, transpose_b, activation,
                          compute_dtype)


DENSE = LinearAdapter()
"""``mindspore.nn.Dense``: ``weight [out, in]``, ``bias``, ``activation``, computing in the weight's dtype."""

MINDFORMERS_LINEAR = LinearAdapter(transpose_b="transpose_b", has_bias="has_bias", compute_dtype="dtype")
"""mindformers' ``Linear``: ``weight`` ``[out, in]`` if its ``transpose_b`` else ``[in, out]``, ``bias``
(``has_bias``), ``activation``, computing in its ``dtype``."""

_Key = Union[type, str]
_ADAPTERS: Dict[_Key, LinearAdapter] = {}


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_key(cls: Any, func: str) -> _Key:
    if isinstance(cls, type) and issubclass(cls, nn.Cell):
        return cls
    if isinstance(cls, str) and "." in cls:
        return cls
    raise TypeError(f"For '{func}', 'cls' must be a subclass of mindspore.nn.Cell or its full name "
                    f"('package.module.ClassName'), but got {cls!r}.")


def register_linear(cls: _Key, adapter: Optional[LinearAdapter] = None, **fields: Field) -> LinearAdapter:
    """Make the Cells of class ``cls`` targetable by :func:`mindpet.inject` (and :func:`mindpet.import_peft`).

    ``register_linear(MyLinear, weight="weight", bias="bias", transpose_b=lambda cell: cell.transpose_b)``
    builds a :class:`LinearAdapter` from the keyword fields; or pass an adapter (a subclass's instance
    for a Cell the fields cannot describe). ``cls`` may be the full name ``'package.module.ClassName'``
    of a class from a package that should not be imported. Registering a class again replaces its adapter.

    Returns:
        The adapter registered.

    Raises:
        TypeError: ``cls`` not a Cell class or full name; ``adapter`` not a LinearAdapter; both ``adapter``
            and fields given; an unknown field name.
    """
    key = _check_key(cls, "register_linear")
    if adapter is not None:
        if not isinstance(adapter, LinearAdapter):
            raise TypeError(f"For 'register_linear', 'adapter' must be a LinearAdapter, but got "
                            f"{type(adapter).__name__}.")
        if fields:
            raise TypeError(f"For 'register_linear', give either 'adapter' or the fields {sorted(fields)}, not both.")
    else:
        try:
            adapter = LinearAdapter(**fields)
        except TypeError as err:
            raise TypeError(f"For 'register_linear', {err}; the fields are weight, bias, transpose_b, has_bias, "
                            f"activation and compute_dtype.") from None
    _ADAPTERS[key] = adapter
    return adapter


def unregister_linear(cls: _Key) -> Optional[LinearAdapter]:
    """Remove the registration of ``cls`` (a class or its full name); return its adapter, or None."""
    return _ADAPTERS.pop(_check_key(cls, "unregister_linear"), None)


def linear_adapter(cell: nn.Cell) -> Optional[LinearAdapter]:
    """The adapter of ``cell``'s class, or None if it is not Linear-like.

    The nearest registered class of ``type(cell)``'s MRO counts, if ``cell`` keeps that class's
    ``construct`` (a subclass computing something else is not covered).
    """
    for klass in type(cell).__mro__:
        adapter = _ADAPTERS.get(klass) or _ADAPTERS.get(_name(klass))
        if adapter is not None:
            return adapter if type(cell).construct is klass.construct else None
    return None


def not_covered_reason(cell: nn.Cell) -> str:
    """Why :func:`linear_adapter` gives None for ``cell`` (for error messages)."""
    for klass in type(cell).__mro__[1:]:
        if klass in _ADAPTERS or _name(klass) in _ADAPTERS:
            return (f"it subclasses {klass.__name__} with its own construct, which {klass.__name__}'s registration "
                    f"does not cover")
    return "its class is not registered as Linear-like"


def registration_hint(cell: nn.Cell) -> str:
    """The call that registers ``cell``'s class, with the names of its own 2-D and 1-D Parameters (error messages)."""
    own = {name: p for name, p in own_parameters(cell).items() if p is not None}
    weight = next((n for n, p in own.items() if len(p.shape) == 2), "weight")
    bias = next((n for n, p in own.items() if len(p.shape) == 1), None)
    return (f"mindpet.register_linear({type(cell).__name__}, weight={weight!r}, bias={bias!r}, "
            f"transpose_b=<True if {weight!r} is [out, in], False if [in, out]>)")


def looks_linear(cell: nn.Cell) -> bool:
    """Whether ``cell`` may be Linear-like, registered or not: it holds a 2-D Parameter itself and its
    sub-cells (an activation, say) hold none. Containers and norms do not look so, nor MindSpore's own
    cells (``nn.Dense`` is its only Linear-like one; ``nn.Embedding``'s table is 2-D)."""
    if type(cell).__module__.split(".")[0] == "mindspore":
        return False
    own = [p for p in own_parameters(cell).values() if p is not None]
    if not any(len(p.shape) == 2 for p in own):
        return False
    return not any(child is not None and any(True for _ in child.get_parameters())
                   for child in child_cells(cell).values())


class QuantizedDenseAdapter(LinearAdapter):
    """``mindpet.quant.QuantizedDense``: a frozen quantised weight ``[out, in]`` (no float ``weight``), ``bias``,
    ``activation``, its ``compute_dtype``. The view's ``quantized`` is the cell itself: ``inject`` builds the
    delta layer on that quantised base (the one place the quantised case enters inject)."""

    def view(self, cell: nn.Cell) -> LinearView:
        return LinearView(cell.in_channels, cell.out_channels, None, cell.bias if cell.has_bias else None, True,
                          cell.activation, cell.compute_dtype, quantized=cell)


QUANTIZED_DENSE = QuantizedDenseAdapter()
"""``mindpet.quant.QuantizedDense`` (registered by name: the quant package builds on this module)."""

register_linear(nn.Dense, DENSE)
register_linear("mindpet.quant.layers.QuantizedDense", QUANTIZED_DENSE)
register_linear("mindformers.modules.layers.Linear", MINDFORMERS_LINEAR)
