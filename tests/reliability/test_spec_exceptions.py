"""The exception contract of the spec, walked bullet by bullet in one table.

``delta_algorithms.zh.md`` lists, for every class, the exceptions it raises ("异常"); each bullet
below is copied verbatim from that list, with a short English rendering (part of the pytest id) and
one or more calls that must raise the bullet's exception type with a message naming the argument.
``graph_operations.md`` states the errors of the graph functions in English; those rows carry its
wording. The last tests check that the table covers every bullet of the spec (when the spec is found).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.train import CheckpointConfig

from mindpet.delta import (AdapterDense, AdapterLayer, LoRADense, LowRankAdapterDense, LowRankAdapterLayer,
                           PrefixLayer, PromptTuning, RDropLoss)
from mindpet.graph import (TrainableParamsCheckPoint, freeze_delta, freeze_from_config, freeze_modules,
                           load_pretrained_and_delta)


@dataclass(frozen=True)
class Case:
    """One call that must raise ``error`` with every string of ``names`` in its message."""

    owner: str                       # class, ``Class.shard`` or graph function
    bullet: str                      # the spec's bullet, verbatim (delta) or paraphrased (graph)
    english: str                     # short English rendering of the bullet
    detail: str                      # what this case passes
    error: type
    call: Callable[[str], Any]       # receives a fresh temporary directory
    names: Tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.owner} | {self.error.__name__}: {self.english} | {self.detail}"


CASES: List[Case] = []


def bullet(owner: str, error: type, text: str, english: str,
           variants: Sequence[Tuple[str, Callable[[str], Any], Sequence[str]]]) -> None:
    """Add one spec bullet with its ``(detail, call, names)`` variants."""
    assert variants, f"bullet without a case: {text}"
    for detail, call, names in variants:
        CASES.append(Case(owner, text, english, detail, error, call, tuple(names)))


def describe(value: Any) -> str:
    """A short, stable rendering of an argument for the case id."""
    if isinstance(value, Tensor):
        return f"Tensor{tuple(value.shape)}"
    if isinstance(value, type):
        return f"class {value.__module__.split('.')[0]}.{value.__name__}"
    if isinstance(value, (nn.Cell, ops.Primitive)):
        return f"{type(value).__name__}()"
    if isinstance(value, np.ndarray):
        return f"ndarray{value.shape}"
    return repr(value)


def kw_variants(make: Callable[..., Any], items: Sequence[Tuple[str, Any]], names=None):
    """Variants that call ``make(**{arg: value})`` and expect ``arg`` (or ``names``) in the message."""
    return [(f"{arg}={describe(value)}", (lambda _d, a=arg, v=value: make(**{a: v})), names or (arg,))
            for arg, value in items]


def tensor(*shape: int) -> Tensor:
    return Tensor(np.zeros(shape, np.float32))


class _Parallel:
    """Run a call under a (semi-)auto parallel mode, then restore the previous mode."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, fn: Callable[[], Any]) -> Any:
        before = ms.get_auto_parallel_context("parallel_mode")
        ms.set_auto_parallel_context(parallel_mode=self.mode)
        try:
            return fn()
        finally:
            ms.set_auto_parallel_context(parallel_mode=before)


LOG_SOFTMAX_BULLET = "**ValueError** - 半自动并行模式或自动并行模式下，不支持LogSoftmax激活函数。"


def log_softmax_bullet(owner: str, build: Callable[[], nn.Cell], arg: str) -> None:
    """The shard bullet: a LogSoftmax activation is refused under (semi-)auto parallel."""
    bullet(f"{owner}.shard", ValueError, LOG_SOFTMAX_BULLET,
           "LogSoftmax activation not supported in semi-auto/auto parallel",
           [(f"{mode}, {arg}=LogSoftmax", (lambda _d, m=mode: _Parallel(m)(lambda: build().shard())), (arg,))
            for mode in ("semi_auto_parallel", "auto_parallel")])


# ------------------------------------------------------------------------------------------ LoRADense
def lora(**kw) -> LoRADense:
    args: Dict[str, Any] = dict(in_channels=4, out_channels=3, lora_rank=2, lora_alpha=2.0, lora_dropout=0.0,
                                compute_dtype=ms.float32)
    args.update(kw)
    return LoRADense(**args)


bullet("LoRADense", TypeError, "**TypeError** - `in_channels`，`out_channels`或`lora_rank`不是整数。",
       "in_channels, out_channels or lora_rank not an int",
       kw_variants(lora, [("in_channels", 4.0), ("out_channels", "3"), ("lora_rank", True), ("lora_rank", None)]))
bullet("LoRADense", TypeError, "**TypeError** - `lora_alpha`不为int或float类型。",
       "lora_alpha not an int or float",
       kw_variants(lora, [("lora_alpha", "2"), ("lora_alpha", True), ("lora_alpha", None)]))
bullet("LoRADense", TypeError, "**TypeError** - `has_bias`不是bool值。", "has_bias not a bool",
       kw_variants(lora, [("has_bias", 1), ("has_bias", "True")]))
bullet("LoRADense", TypeError, "**TypeError** - `lora_dropout`不为float类型数据。", "lora_dropout not a float",
       kw_variants(lora, [("lora_dropout", 0), ("lora_dropout", "0.1")]))
bullet("LoRADense", TypeError, "**TypeError** - `activation` 不是`str`、`Cell`、`Primitive`或者`None`。",
       "activation not a str, Cell, Primitive or None",
       kw_variants(lora, [("activation", 1), ("activation", nn.ReLU)]))  # the class, not an instance
bullet("LoRADense", TypeError,
       "**TypeError** - `param_init_type`，`compute_dtype`不为`mindspore.dtype.float16`或`mindspore.dtype.float32`。",
       "param_init_type or compute_dtype not float16/float32",
       kw_variants(lora, [("param_init_type", ms.int32), ("compute_dtype", "float16"),
                          ("compute_dtype", np.float32), ("param_init_type", ms.float64)]))
bullet("LoRADense", ValueError, "**ValueError** - `in_channel` ，`out_channel`，`lora_rank`为0或负数。",
       "in_channels, out_channels or lora_rank zero or negative",
       kw_variants(lora, [("in_channels", 0), ("out_channels", -1), ("lora_rank", 0), ("lora_rank", -3)]))
bullet("LoRADense", ValueError, "**ValueError** -`lora_aplha`为0。", "lora_alpha is zero",
       kw_variants(lora, [("lora_alpha", 0), ("lora_alpha", 0.0), ("lora_alpha", -0.0)]))
bullet("LoRADense", ValueError, "**ValueError** - `lora_dropout`范围不为[0,1)。", "lora_dropout outside [0, 1)",
       kw_variants(lora, [("lora_dropout", 1.0), ("lora_dropout", -0.1), ("lora_dropout", float("nan"))]))
bullet("LoRADense", ValueError,
       "**ValueError** - `lora_a_init`为Tensor时，shape长度不等于2，或shape[0]不等于`lora_rank`，"
       "或shape[1]不等于`in_channels`。",
       "lora_a_init Tensor not of shape (lora_rank, in_channels)",
       kw_variants(lora, [("lora_a_init", tensor(2)), ("lora_a_init", tensor(3, 4)), ("lora_a_init", tensor(2, 5)),
                          ("lora_a_init", tensor(2, 4, 1))]))
bullet("LoRADense", ValueError,
       "**ValueError** - `lora_b_init`为Tensor时，shape长度不等于2，或shape[0]不等于`out_channels`，"
       "或shape[1]不等于`lora_rank`。",
       "lora_b_init Tensor not of shape (out_channels, lora_rank)",
       kw_variants(lora, [("lora_b_init", tensor(3)), ("lora_b_init", tensor(4, 2)), ("lora_b_init", tensor(3, 3))]))
bullet("LoRADense", ValueError,
       "**ValueError** - `weight_init`为Tensor时，shape长度不等于2，或shape[0]不等于`out_channels`，"
       "或shape[1]不等于`in_channels`。",
       "weight_init Tensor not of shape (out_channels, in_channels)",
       kw_variants(lora, [("weight_init", tensor(3)), ("weight_init", tensor(4, 4)), ("weight_init", tensor(3, 5))]))
log_softmax_bullet("LoRADense", lambda: lora(activation=nn.LogSoftmax()), "activation")


# ---------------------------------------------------------------------------------------- PrefixLayer
def prefix(**kw) -> PrefixLayer:
    args: Dict[str, Any] = dict(prefix_token_num=4, batch_size=2, num_heads=2, hidden_dim=4, embed_dim=4,
                                mid_dim=4, dropout_rate=0.1)
    args.update(kw)
    return PrefixLayer(**args)


for _arg in ("prefix_token_num", "batch_size", "num_heads", "hidden_dim", "embed_dim", "mid_dim"):
    bullet("PrefixLayer", TypeError, f"**TypeError** - `{_arg}`不是正整数。", f"{_arg} not a positive int",
           kw_variants(prefix, [(_arg, 2.0), (_arg, 0), (_arg, -2), (_arg, True)]))
bullet("PrefixLayer", ValueError, "**ValueError** - `prefix_token_num`不是`batch_size`的整数倍。",
       "prefix_token_num not a multiple of batch_size",
       [("prefix_token_num=3, batch_size=2", lambda _d: prefix(prefix_token_num=3, batch_size=2),
         ("prefix_token_num", "batch_size"))])
bullet("PrefixLayer", ValueError, "**ValueError** - `dropout_rate`不在[0,1)之内。", "dropout_rate outside [0, 1)",
       kw_variants(prefix, [("dropout_rate", 1.0), ("dropout_rate", -0.5)]))


# -------------------------------------------------------------------------------------- AdapterDense
def adapter_dense(**kw) -> AdapterDense:
    args: Dict[str, Any] = dict(in_channels=4, out_channels=3, bottleneck_size=2, compute_dtype=ms.float32)
    args.update(kw)
    return AdapterDense(**args)


bullet("AdapterDense", TypeError, "**TypeError** - `in_channels`，`out_channels`或`bottleneck_size`不是正整数。",
       "in_channels, out_channels or bottleneck_size not an int",
       kw_variants(adapter_dense, [("in_channels", 4.0), ("out_channels", "3"), ("bottleneck_size", None),
                                   ("bottleneck_size", False)]))
bullet("AdapterDense", TypeError, "**TypeError** - `has_bias`不是bool值。", "has_bias not a bool",
       kw_variants(adapter_dense, [("has_bias", "yes"), ("has_bias", 0)]))
bullet("AdapterDense", TypeError, "**TypeError** - `activation`不是`str`、`Cell`、`Primitive`。",
       "activation not a str, Cell or Primitive",
       kw_variants(adapter_dense, [("activation", 3), ("activation", ops.ReLU)]))
bullet("AdapterDense", TypeError, "**TypeError** - `param_init_type`，`compute_dtype`不为`dtype`类型数据。",
       "param_init_type or compute_dtype not a dtype",
       kw_variants(adapter_dense, [("param_init_type", "float32"), ("compute_dtype", np.float16),
                                   ("compute_dtype", None)]))
bullet("AdapterDense", TypeError, "**TypeError** - non_linearity不是str类型。", "non_linearity not a str",
       kw_variants(adapter_dense, [("non_linearity", nn.GELU()), ("non_linearity", None)]))
bullet("AdapterDense", TypeError,
       "**TypeError** - `weight_init`，`bias_init`不是`Tensor`, `str`, `Initializer`, `numbers.Number`。",
       "weight_init or bias_init not a Tensor, str, Initializer or number",
       kw_variants(adapter_dense, [("weight_init", [1.0]), ("bias_init", None), ("weight_init", np.zeros((3, 4)))]))
bullet("AdapterDense", ValueError,
       "**ValueError** - `weight_init`，`bias_init`不属于提供的`initializer`函数提供的初始化方法。",
       "weight_init or bias_init an unknown initializer name",
       kw_variants(adapter_dense, [("weight_init", "no_such_init"), ("bias_init", "zeroes")]))
bullet("AdapterDense", ValueError,
       "**ValueError** - `weight_init`的shape长度不等于2，`weight_init`的shape[0]不等于`out_channels`，"
       "或者`weight_init`的shape[1]不等于`in_channels`。",
       "weight_init Tensor not of shape (out_channels, in_channels)",
       kw_variants(adapter_dense, [("weight_init", tensor(3)), ("weight_init", tensor(4, 4)),
                                   ("weight_init", tensor(3, 5))]))
bullet("AdapterDense", ValueError,
       "**ValueError** - `bias_init`的shape长度不等于1或`bias_init`的shape[0]不等于`out_channels`。",
       "bias_init Tensor not of shape (out_channels,)",
       kw_variants(adapter_dense, [("bias_init", tensor(3, 1)), ("bias_init", tensor(4))]))
bullet("AdapterDense", ValueError, "**ValueError** - `in_channel`，`out_channel`，`bottleneck_size`为0或负数。",
       "in_channels, out_channels or bottleneck_size zero or negative",
       kw_variants(adapter_dense, [("in_channels", 0), ("out_channels", -2), ("bottleneck_size", 0)]))
bullet("AdapterDense", ValueError,
       "**ValueError** - non_linearity是str类型，但不是`get_activation` 方法所支持的激活函数列表。",
       "non_linearity an unknown activation name",
       kw_variants(adapter_dense, [("non_linearity", "no_such_act")]))
bullet("AdapterDense", KeyError, "**KeyError** - `activation`不属于`get_activation`方法所支持的激活函数类型。",
       "activation an unknown activation name",
       kw_variants(adapter_dense, [("activation", "no_such_act")]))
log_softmax_bullet("AdapterDense", lambda: adapter_dense(activation="logsoftmax"), "activation")


# -------------------------------------------------------------------------------------- AdapterLayer
def adapter_layer(**kw) -> AdapterLayer:
    args: Dict[str, Any] = dict(hidden_size=4, bottleneck_size=2, compute_dtype=ms.float32)
    args.update(kw)
    return AdapterLayer(**args)


bullet("AdapterLayer", TypeError, "**TypeError** - hidden_size，bottleneck_size不是int类型数据。",
       "hidden_size or bottleneck_size not an int",
       kw_variants(adapter_layer, [("hidden_size", 4.0), ("bottleneck_size", "2")]))
bullet("AdapterLayer", TypeError, "**TypeError** - bottleneck_size不为int类型数据。", "bottleneck_size not an int",
       kw_variants(adapter_layer, [("bottleneck_size", 2.0), ("bottleneck_size", True)]))
bullet("AdapterLayer", TypeError, "**TypeError** - non_linearity不是str类型。", "non_linearity not a str",
       kw_variants(adapter_layer, [("non_linearity", ops.GeLU()), ("non_linearity", 1)]))
bullet("AdapterLayer", TypeError,
       "**TypeError** - param_init_type，compute_dtype不为dtype类型数据;或是为dtype类型，"
       "但不在[mindspore.dtype.float32, mindspore.dtype.float16]范围内。",
       "param_init_type or compute_dtype not float32/float16",
       kw_variants(adapter_layer, [("param_init_type", "float32"), ("compute_dtype", ms.int32),
                                   ("compute_dtype", ms.bfloat16)]))
bullet("AdapterLayer", ValueError, "**ValueError** - hidden_size，bottleneck_size为0或负数。",
       "hidden_size or bottleneck_size zero or negative",
       kw_variants(adapter_layer, [("hidden_size", 0), ("bottleneck_size", -1)]))
bullet("AdapterLayer", ValueError,
       "**ValueError** - non_linearity是str类型，但不是`get_activation` 方法所支持的激活函数列表。",
       "non_linearity an unknown activation name",
       kw_variants(adapter_layer, [("non_linearity", "no_such_act")]))
log_softmax_bullet("AdapterLayer", lambda: adapter_layer(non_linearity="logsoftmax"), "non_linearity")


# ------------------------------------------------------------------------------- LowRankAdapterDense
def lr_dense(**kw) -> LowRankAdapterDense:
    args: Dict[str, Any] = dict(in_channels=4, out_channels=4, reduction_factor=2, low_rank_size=1,
                                compute_dtype=ms.float32)
    args.update(kw)
    return LowRankAdapterDense(**args)


_LR_DTYPE = ("**TypeError** - param_init_type，compute_dtype不为dtype类型数据;或是为dtype类型，"
             "但不在[mindspore.dtype.float32, mindspore.dtype.float16]范围内。")
_LR_NONLIN = "**ValueError** - non_linearity是str类型，但不是`get_activation` 方法所支持的激活函数列表。"

bullet("LowRankAdapterDense", TypeError, "**TypeError** - in_channels，out_channels不是int类型数据。",
       "in_channels or out_channels not an int",
       kw_variants(lr_dense, [("in_channels", 4.0), ("out_channels", "4")]))
bullet("LowRankAdapterDense", TypeError, "**TypeError** - has_bias不是bool值。", "has_bias not a bool",
       kw_variants(lr_dense, [("has_bias", None)]))
bullet("LowRankAdapterDense", TypeError, "**TypeError** - activation不是str、Cell、Primitive。",
       "activation not a str, Cell or Primitive", kw_variants(lr_dense, [("activation", 2.5)]))
bullet("LowRankAdapterDense", TypeError,
       "**TypeError** - weight_init，bias_init不是[Tensor, str, Initializer, numbers.Number]类型。",
       "weight_init or bias_init not a Tensor, str, Initializer or number",
       kw_variants(lr_dense, [("weight_init", None), ("bias_init", (0.0,))]))
bullet("LowRankAdapterDense", TypeError, "**TypeError** - reduction_factor、low_rank_size不为int类型数据。",
       "reduction_factor or low_rank_size not an int",
       kw_variants(lr_dense, [("reduction_factor", 2.0), ("low_rank_size", "1")]))
bullet("LowRankAdapterDense", TypeError, "**TypeError** - low_rank_w_init不属于str类型，亦不是Initializer类型。",
       "low_rank_w_init neither a str nor an Initializer",
       kw_variants(lr_dense, [("low_rank_w_init", 0.5), ("low_rank_w_init", tensor(4, 1))]))
bullet("LowRankAdapterDense", TypeError, "**TypeError** - non_linearity不是str类型。", "non_linearity not a str",
       kw_variants(lr_dense, [("non_linearity", nn.ReLU())]))
bullet("LowRankAdapterDense", TypeError, _LR_DTYPE, "param_init_type or compute_dtype not float32/float16",
       kw_variants(lr_dense, [("param_init_type", ms.float64), ("compute_dtype", "float16")]))
bullet("LowRankAdapterDense", ValueError,
       "**ValueError** - weight_init，bias_init不属于提供的`initializer`函数提供的初始化方法。",
       "weight_init or bias_init an unknown initializer name",
       kw_variants(lr_dense, [("weight_init", "gaussian"), ("bias_init", "no_such_init")]))
bullet("LowRankAdapterDense", ValueError,
       "**ValueError** - weight_init的类型为Tensor，1）其shape长度不等于2；2）weight_init 的shape[0]不等于"
       "out_channels；3） weight_init的shape[1]不等于 in_channels。",
       "weight_init Tensor not of shape (out_channels, in_channels)",
       kw_variants(lr_dense, [("weight_init", tensor(4, 4, 1)), ("weight_init", tensor(5, 4)),
                              ("weight_init", tensor(4, 3))]))
bullet("LowRankAdapterDense", ValueError,
       "**ValueError** - bias_init的类型为Tensor，1）shape长度不等于1；2）bias_init 的shape[0]不等于out_channels。",
       "bias_init Tensor not of shape (out_channels,)",
       kw_variants(lr_dense, [("bias_init", tensor(4, 1)), ("bias_init", tensor(3))]))
bullet("LowRankAdapterDense", ValueError,
       "**ValueError** - in_channel ，out_channel，reduction_factor、low_rank_size为0或负数。",
       "in_channels, out_channels, reduction_factor or low_rank_size zero or negative",
       kw_variants(lr_dense, [("in_channels", 0), ("out_channels", -4), ("reduction_factor", 0),
                              ("low_rank_size", -1)]))
bullet("LowRankAdapterDense", ValueError,
       "**ValueError** - low_rank_w_init属于str类型，但不是Initializer支持的初始化类型值。",
       "low_rank_w_init an unknown initializer name",
       kw_variants(lr_dense, [("low_rank_w_init", "xavier")]))
bullet("LowRankAdapterDense", KeyError,
       "**KeyError** - activation不属于mindspore中 `get_activation` 方法所支持的激活函数类型。",
       "activation an unknown activation name",
       kw_variants(lr_dense, [("activation", "relu7")]))
bullet("LowRankAdapterDense", ValueError, _LR_NONLIN, "non_linearity an unknown activation name",
       kw_variants(lr_dense, [("non_linearity", "gelu2")]))
bullet("LowRankAdapterDense", ValueError, "**ValueError** - reduction_factor值大于out_channels。",
       "reduction_factor greater than out_channels",
       [("reduction_factor=5, out_channels=4", lambda _d: lr_dense(reduction_factor=5),
         ("reduction_factor", "out_channels"))])
log_softmax_bullet("LowRankAdapterDense", lambda: lr_dense(activation=ops.LogSoftmax()), "activation")


# ------------------------------------------------------------------------------- LowRankAdapterLayer
def lr_layer(**kw) -> LowRankAdapterLayer:
    args: Dict[str, Any] = dict(hidden_size=4, reduction_factor=2, compute_dtype=ms.float32)
    args.update(kw)
    return LowRankAdapterLayer(**args)


bullet("LowRankAdapterLayer", TypeError, "**TypeError** - hidden_size不是int类型数据。", "hidden_size not an int",
       kw_variants(lr_layer, [("hidden_size", 4.0), ("hidden_size", None)]))
bullet("LowRankAdapterLayer", TypeError, "**TypeError** - reduction_factor、low_rank_size不为int类型数据。",
       "reduction_factor or low_rank_size not an int",
       kw_variants(lr_layer, [("reduction_factor", "2"), ("low_rank_size", 1.0)]))
bullet("LowRankAdapterLayer", TypeError, "**TypeError** - low_rank_w_init不属于str类型，亦不是Initializer类型。",
       "low_rank_w_init neither a str nor an Initializer",
       kw_variants(lr_layer, [("low_rank_w_init", 1), ("low_rank_w_init", None)]))
bullet("LowRankAdapterLayer", TypeError, "**TypeError** - non_linearity不是str类型。", "non_linearity not a str",
       kw_variants(lr_layer, [("non_linearity", ops.ReLU())]))
bullet("LowRankAdapterLayer", TypeError, _LR_DTYPE, "param_init_type or compute_dtype not float32/float16",
       kw_variants(lr_layer, [("param_init_type", ms.int8), ("compute_dtype", None)]))
bullet("LowRankAdapterLayer", ValueError, "**ValueError** - reduction_factor、low_rank_size为0或负数。",
       "reduction_factor or low_rank_size zero or negative",
       kw_variants(lr_layer, [("reduction_factor", 0), ("low_rank_size", 0), ("low_rank_size", -2)]))
bullet("LowRankAdapterLayer", ValueError,
       "**ValueError** - low_rank_w_init属于str类型，但不是Initializer支持的初始化类型值。",
       "low_rank_w_init an unknown initializer name",
       kw_variants(lr_layer, [("low_rank_w_init", "no_such_init")]))
bullet("LowRankAdapterLayer", ValueError, _LR_NONLIN, "non_linearity an unknown activation name",
       kw_variants(lr_layer, [("non_linearity", "no_such_act")]))
bullet("LowRankAdapterLayer", ValueError, "**ValueError** - reduction_factor值大于hidden_size。",
       "reduction_factor greater than hidden_size",
       [("reduction_factor=8, hidden_size=4", lambda _d: lr_layer(reduction_factor=8),
         ("reduction_factor", "hidden_size"))])
log_softmax_bullet("LowRankAdapterLayer", lambda: lr_layer(non_linearity="logsoftmax"), "non_linearity")


# ----------------------------------------------------------------------------------------- RDropLoss
def rdrop(alpha: Any, mode: int) -> Any:
    """Call ``RDropLoss`` in ``mode`` (restoring PYNATIVE) and force the result."""
    ms.set_context(mode=mode)
    try:
        logits = Tensor(np.zeros((4, 3), np.float32))
        labels = Tensor(np.array([0, 0, 1, 1], np.int32))
        return RDropLoss()(logits, labels, alpha).asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


bullet("RDropLoss", TypeError, "**TypeError** - 输入的alpha参数不为int或者float。", "alpha not an int or float",
       [(f"alpha={alpha!r} ({name})", (lambda _d, a=alpha, m=mode: rdrop(a, m)), ("alpha",))
        for alpha in ("4", None, True) for name, mode in (("pynative", ms.PYNATIVE_MODE), ("graph", ms.GRAPH_MODE))])


# -------------------------------------------------------------------------------------- PromptTuning
def prompt(**kw) -> PromptTuning:
    args: Dict[str, Any] = dict(num_virtual_tokens=3, token_dim=4, num_transformer_submodules=1)
    args.update(kw)
    return PromptTuning(**args)


for _arg in ("num_virtual_tokens", "token_dim", "num_transformer_submodules"):
    bullet("PromptTuning", TypeError, f"**TypeError** - `{_arg}`不是正整数。", f"{_arg} not a positive int",
           kw_variants(prompt, [(_arg, 2.0), (_arg, 0), (_arg, -1), (_arg, None)]))


# ----------------------------------------------------------------------------------- graph functions
class ToyNet(nn.Cell):
    """``body`` Dense + LoRA-named pair + ``head`` Dense."""

    def __init__(self):
        super().__init__()
        self.body = nn.Dense(4, 4)
        self.mindpet_delta_lora_a = Parameter(Tensor(np.zeros((2, 4), np.float32)), name="mindpet_delta_lora_a")
        self.mindpet_delta_lora_b = Parameter(Tensor(np.zeros((4, 2), np.float32)), name="mindpet_delta_lora_b")
        self.head = nn.Dense(4, 2)

    def construct(self, x):
        h = self.body(x) + ops.matmul(ops.matmul(x, self.mindpet_delta_lora_a.T), self.mindpet_delta_lora_b.T)
        return self.head(h)


def _config(directory: str, text: str, name: str = "freeze.yaml") -> str:
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def _config_symlink(directory: str) -> str:
    target = _config(directory, "freeze:\n  include: ['*body*']\n", "real.yaml")
    link = os.path.join(directory, "link.yaml")
    os.symlink(target, link)
    return freeze_from_config(ToyNet(), link)


def _ckpt(directory: str, name: str, net: nn.Cell = None) -> str:
    path = os.path.join(directory, name)
    ms.save_checkpoint(net if net is not None else ToyNet(), path)
    return path


def _truncated_ckpt(directory: str) -> str:
    path = _ckpt(directory, "full.ckpt")
    with open(path, "rb") as handle:
        data = handle.read()
    bad = os.path.join(directory, "truncated.ckpt")
    with open(bad, "wb") as handle:
        handle.write(data[: len(data) // 2])
    return bad


def _callback_symlink(directory: str) -> Any:
    real = os.path.join(directory, "real")
    os.mkdir(real)
    link = os.path.join(directory, "ckpt_link")
    os.symlink(real, link)
    return TrainableParamsCheckPoint(link)


G = "graph_operations.md"
bullet("freeze_modules", TypeError, f"{G}: model not an nn.Cell -> TypeError", "model not an nn.Cell",
       [("model=object()", lambda _d: freeze_modules(object(), include=["*"]), ("model",))])
bullet("freeze_modules", ValueError, f"{G}: include and exclude both None -> ValueError",
       "include and exclude both None",
       [("include=None, exclude=None", lambda _d: freeze_modules(ToyNet()), ("include", "exclude"))])
bullet("freeze_modules", TypeError, f"{G}: include/exclude given but not a non-empty list of str -> TypeError",
       "include/exclude not a non-empty list of str",
       [(f"{arg}={describe(value)}", (lambda _d, a=arg, v=value: freeze_modules(ToyNet(), **{a: v})), (arg,))
        for arg, value in (("include", "*body*"), ("include", []), ("exclude", [1]), ("exclude", ("*head*",)))])
bullet("freeze_modules", ValueError, f"{G}: a pattern that matches no parameter -> ValueError naming the pattern",
       "pattern matches no parameter",
       [("include=['*bdy*']", lambda _d: freeze_modules(ToyNet(), include=["*bdy*"]), ("*bdy*", "include")),
        ("exclude=['Head*']", lambda _d: freeze_modules(ToyNet(), exclude=["Head*"]), ("Head*", "exclude"))])
bullet("freeze_delta", TypeError, f"{G}: model not an nn.Cell -> TypeError (as freeze_modules)",
       "model not an nn.Cell", [("model=None", lambda _d: freeze_delta(None, "lora"), ("model",))])
bullet("freeze_delta", ValueError, f"{G}: unknown mode -> ValueError listing the valid modes", "unknown mode",
       [("mode='loraa'", lambda _d: freeze_delta(ToyNet(), "loraa"), ("mode", "loraa", "lora", "low_rank_adapter"))])
bullet("freeze_delta", TypeError, f"{G}: mode must be a str", "mode not a str",
       [("mode=1", lambda _d: freeze_delta(ToyNet(), 1), ("mode",))])
bullet("freeze_delta", ValueError, f"{G}: a pattern that matches no parameter -> ValueError naming the pattern",
       "pattern matches no parameter",
       [("exclude=['*heda*']", lambda _d: freeze_delta(ToyNet(), "lora", exclude=["*heda*"]), ("*heda*",))])
bullet("freeze_delta", TypeError, f"{G}: include/exclude given but not a non-empty list of str -> TypeError",
       "include/exclude not a non-empty list of str",
       [("exclude='*head*'", lambda _d: freeze_delta(ToyNet(), "lora", exclude="*head*"), ("exclude",))])
_FILE_ERRORS = [
    ("missing file", FileNotFoundError, lambda d: freeze_from_config(ToyNet(), os.path.join(d, "none.yaml"))),
    ("symlink", ValueError, _config_symlink),
    ("empty file", ValueError, lambda d: freeze_from_config(ToyNet(), _config(d, ""))),
    ("no freeze key", ValueError, lambda d: freeze_from_config(ToyNet(), _config(d, "frozen:\n  include: ['*']\n"))),
    ("freeze not a mapping", TypeError, lambda d: freeze_from_config(ToyNet(), _config(d, "freeze: ['*body*']\n"))),
    ("unknown keys", ValueError,
     lambda d: freeze_from_config(ToyNet(), _config(d, "freeze:\n  include: ['*body*']\n  exlude: ['*head*']\n"))),
]
for _what, _error, _call in _FILE_ERRORS:
    bullet("freeze_from_config", _error, f"{G}: {_what} -> clear error naming the file", _what,
           [(_what, _call, (".yaml",))])
bullet("TrainableParamsCheckPoint", ValueError, f"{G}: directory None or empty -> ValueError",
       "directory None or empty",
       [(f"directory={value!r}", (lambda _d, v=value: TrainableParamsCheckPoint(v)), ("directory",))
        for value in (None, "", "   ")])
bullet("TrainableParamsCheckPoint", ValueError, f"{G}: directory a symlink -> error", "directory a symlink",
       [("directory=<symlink>", _callback_symlink, ("directory", "symbolic link"))])
bullet("TrainableParamsCheckPoint", TypeError, f"{G}: config not a CheckpointConfig -> TypeError",
       "config not a CheckpointConfig",
       [(f"config={describe(value)}", (lambda d, v=value: TrainableParamsCheckPoint(d, config=v)), ("config",))
        for value in ({"save_checkpoint_steps": 1}, CheckpointConfig)])
bullet("load_pretrained_and_delta", ValueError,
       f"{G}: strict=True and a missing or unexpected key -> ValueError listing the keys",
       "strict and missing keys",
       [("delta file without head", lambda d: load_pretrained_and_delta(
           ToyNet(), _ckpt(d, "pre.ckpt", nn.Dense(4, 4)), _ckpt(d, "delta.ckpt"), strict=True),
         ("strict", "missing"))])
bullet("load_pretrained_and_delta", ValueError, "issue: a truncated or corrupt file -> ValueError naming the file",
       "truncated checkpoint", [("delta_ckpt truncated", lambda d: load_pretrained_and_delta(
           ToyNet(), _ckpt(d, "pre.ckpt"), _truncated_ckpt(d)), ("delta_ckpt", "truncated.ckpt"))])
bullet("load_pretrained_and_delta", FileNotFoundError, f"{G}: a missing file -> FileNotFoundError naming it",
       "missing file", [("pretrained_ckpt missing", lambda d: load_pretrained_and_delta(
           ToyNet(), os.path.join(d, "gone.ckpt"), _ckpt(d, "delta.ckpt")), ("pretrained_ckpt", "gone.ckpt"))])
bullet("load_pretrained_and_delta", TypeError, f"{G}: network not an nn.Cell -> TypeError", "network not a Cell",
       [("network=dict", lambda d: load_pretrained_and_delta({}, _ckpt(d, "a.ckpt"), _ckpt(d, "b.ckpt")),
         ("network",))])

DELTA_OWNERS = ("LoRADense", "PrefixLayer", "AdapterDense", "AdapterLayer", "LowRankAdapterDense",
                "LowRankAdapterLayer", "RDropLoss", "PromptTuning")


# ----------------------------------------------------------------------------------------- the tests
@pytest.fixture(autouse=True)
def _pynative():
    """Constructor checks do not depend on the mode; PYNATIVE avoids compiling anything."""
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    yield
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_auto_parallel_context(parallel_mode="stand_alone")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_spec_exception(case: Case, tmp_path):
    with pytest.raises(case.error) as info:
        case.call(str(tmp_path))
    message = str(info.value)
    for name in case.names:
        assert name in message, f"{case.error.__name__} message does not name {name!r}: {message}"


def _normalise(text: str) -> str:
    return re.sub(r"[\s`*]", "", text)


def _spec_bullets(path: Path) -> Dict[str, List[str]]:
    """``{owner: [bullet, ...]}`` from the exception lists of the user document."""
    owner, in_list, found = "", False, {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        match = re.search(r"class\s+tk\.delta\.\w+\.(\w+)", line)
        if match:
            owner, in_list = match.group(1), False
        elif stripped.startswith("shard(") and owner and not owner.endswith(".shard"):
            owner = owner + ".shard"
        elif stripped == "**异常**":
            in_list = True
        elif in_list and stripped.startswith(("- ", "* ")):
            found.setdefault(owner, []).append(stripped[2:])
        elif in_list and stripped.startswith("#"):
            in_list = False
    return found


SPEC_FILE = "delta_algorithms.zh.md"
REPO_ROOT = Path(__file__).resolve().parents[2]


def _spec_path(repo_root: Path = REPO_ROOT) -> Path:
    """The user document: in ``$MINDPET_SPEC_DIR`` when set (then it must be there: a wrong setting fails),
    else in ``shared/spec`` beside the repository (``<repo>/../shared/spec``, where CI has it); skip if
    neither (a clone without the spec)."""
    if os.environ.get("MINDPET_SPEC_DIR"):
        path = Path(os.environ["MINDPET_SPEC_DIR"]) / SPEC_FILE
        if not path.is_file():
            pytest.fail(f"MINDPET_SPEC_DIR is set but {path} does not exist")
        return path
    path = repo_root.parent / "shared" / "spec" / SPEC_FILE
    if path.is_file():
        return path
    pytest.skip(f"{SPEC_FILE} not found beside the repository ({path}; set MINDPET_SPEC_DIR); the table still runs")


def test_table_covers_every_spec_bullet():
    spec = _spec_bullets(_spec_path())
    assert set(o.split(".")[0] for o in spec) == set(DELTA_OWNERS)
    table: Dict[str, set] = {}
    for case in CASES:
        table.setdefault(case.owner, set()).add(_normalise(case.bullet))
    for owner, bullets in spec.items():
        for text in bullets:
            assert _normalise(text) in table.get(owner, set()), f"{owner}: spec bullet without a case: {text}"
    spec_count = sum(len(set(map(_normalise, b))) for b in spec.values())
    delta_count = sum(len(v) for k, v in table.items() if k.split(".")[0] in DELTA_OWNERS)
    assert delta_count == spec_count, "the table holds a delta bullet that is not in the spec"


def test_every_bullet_has_a_case_per_error_type():
    """Each bullet's text starts with the exception its cases expect (delta bullets)."""
    for case in CASES:
        if case.owner.split(".")[0] in DELTA_OWNERS:
            assert case.bullet.startswith(f"**{case.error.__name__}**"), case.id
