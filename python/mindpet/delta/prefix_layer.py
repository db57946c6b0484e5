r"""Prefix-Tuning (Li & Liang, 2021) in the layout of the spec's ``PrefixLayer``.

``PrefixLayer`` holds one trainable prefix for the keys and one for the values of an attention layer,
in a *sequence-first* layout (``L = prefix_token_num // batch_size`` prefix positions)::

    past_key_reparam, past_value_reparam: (L, batch_size, hidden_dim)
    axis 0: prefix position j < L   axis 1: batch slot b   axis 2: hidden, head-major
    (hidden_dim = num_heads * head_dim, so ``.reshape(L, batch_size, num_heads, head_dim)`` splits heads)

so that, as in the spec's example, ``ops.concat((past_key, key), 0)`` with a sequence-first key of shape
(seq, batch_size, hidden_dim) gives every batch element ``L`` extra key positions in front of its own:
(L + seq, batch_size, hidden_dim). A key flattened position-major, (seq * batch_size, hidden_dim) with
row ``s * batch_size + b``, works too after ``past_key.reshape(-1, hidden_dim)``. Batch-first keys
(batch, seq, hidden) take ``past_key.transpose(1, 0, 2)`` concatenated on axis 1. The attention mask
must gain ``L`` "keep" columns *at the same place* (in front), for every head:
``mindpet.delta.extend_attention_mask``.

As in the original, ``prefix_token_num`` counts prefix rows over the whole batch: each of the
``batch_size`` slots owns its own ``L`` prefix vectors, so what an example sees depends on its slot in
the batch and the batch size is fixed. For one prefix shared by every example (the paper's
formulation, any batch size, per-layer keys and values) use :class:`mindpet.delta.PrefixEncoder`.

Reparameterisation: the prefixes are initialised from Li & Liang's reparameterisation, computed once at
construction::

    E ~ N(0, 1): (prefix_token_num, embed_dim)
    [K | V] = tanh(E W1^T + b1) W2^T + b2          W1: (mid_dim, embed_dim), W2: (2 hidden_dim, mid_dim)
    row p = b * L + j of K (V) -> past_key (past_value)[j, b, :]

and then stored as the trainable Parameters themselves; the MLP is not kept. The spec's example reads
``past_key_reparam`` once in ``__init__`` and uses that object in ``construct``, so a gradient can only
reach a Parameter; an MLP output computed in ``__init__`` would be a constant (the original's bug: all
gradients zero, training did nothing). The MLP only conditions the optimisation - the trained model uses
the prefix values alone, and Li & Liang drop the MLP after training - so the model family is the same;
what is lost is the MLP's smoothing of the optimisation. ``PrefixEncoder`` keeps it, in the graph.

Names and freezing: MindSpore names a Parameter after the *first* attribute path that reaches it, and a
Cell's own attributes come before its children's. Read in ``construct`` (``self.prefix.past_key_reparam``),
the prefix keeps its delta name (``attn.prefix.mindpet_delta_prefixtuning_past_key``) and
``freeze_delta(model, 'prefix')`` keeps it trainable. Copied to an attribute as in the spec's example
(``self.past_key = ...``), it is named after that attribute (``attn.past_key``): checkpoints save and load
it under that name, but ``freeze_delta`` does not recognise it - name the attribute
``mindpet_delta_prefixtuning_past_key`` (and ``..._past_value``), or freeze with
``freeze_modules(model, include=['*'], exclude=['*past_key', '*past_value'])``.
"""
from __future__ import annotations

import math

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn
from mindspore.common.initializer import HeUniform, Normal, Uniform, initializer

from mindpet._eager import GradSafeCell
from mindpet.delta._parameters import new_parameter
from mindpet.delta._validation import check_dropout_rate, check_dtype, check_positive_int

__all__ = ["PrefixLayer"]

KEY_NAME = "mindpet_delta_prefixtuning_past_key"
VALUE_NAME = "mindpet_delta_prefixtuning_past_value"


def _init_array(init, shape: tuple) -> np.ndarray:
    """Float64 numpy draw of a MindSpore initializer (so ``mindspore.set_seed`` governs it)."""
    return initializer(init, shape, ms.float32).init_data().asnumpy().astype(np.float64)


def reparameterised_prefix(rows: int, embed_dim: int, mid_dim: int, out_dim: int) -> np.ndarray:
    """One draw of ``tanh(E W1^T + b1) W2^T + b2`` (float64, shape (rows, out_dim)).

    ``E`` ~ N(0, 1); ``W1``, ``b1``, ``W2``, ``b2`` initialised as ``nn.Dense`` initialises its own.
    """
    emb = _init_array(Normal(1.0), (rows, embed_dim))
    w1 = _init_array(HeUniform(math.sqrt(5)), (mid_dim, embed_dim))
    b1 = _init_array(Uniform(1.0 / math.sqrt(embed_dim)), (mid_dim,))
    w2 = _init_array(HeUniform(math.sqrt(5)), (out_dim, mid_dim))
    b2 = _init_array(Uniform(1.0 / math.sqrt(mid_dim)), (out_dim,))
    return np.tanh(emb @ w1.T + b1) @ w2.T + b2


class PrefixLayer(GradSafeCell):
    r"""Trainable key and value prefixes of one attention layer (the spec's ``PrefixLayer``).

    Attributes ``past_key_reparam`` and ``past_value_reparam`` are the trainable Parameters (names
    contain ``mindpet_delta_prefixtuning``), of shape (prefix_token_num // batch_size, batch_size,
    hidden_dim); see the module docstring for the layout. Reading them once in ``__init__`` (the spec's
    example) or in ``construct`` both train. Calling the layer, ``past_key, past_value = prefix()``,
    returns them with dropout (``dropout_rate``) applied in training mode; the attributes carry none.

    Args:
        prefix_token_num: prefix rows over the whole batch; a multiple of ``batch_size``.
        batch_size: the model's (fixed) batch size.
        num_heads: attention heads of the model; ``hidden_dim`` must be a multiple of it.
        hidden_dim: model hidden size (``num_heads * head_dim``).
        embed_dim: size of the reparameterisation's prefix embedding.
        mid_dim: hidden size of the reparameterisation MLP.
        dropout_rate: dropout on the prefixes when the layer is called, in [0, 1).
        param_dtype: dtype of the prefix Parameters (float32 or float16), keyword only.

    Raises:
        TypeError: ``prefix_token_num``, ``batch_size``, ``num_heads``, ``hidden_dim``, ``embed_dim`` or
            ``mid_dim`` is not a positive int (bool included); ``dropout_rate`` not an int or float;
            ``param_dtype`` not float16/float32.
        ValueError: ``prefix_token_num`` not a multiple of ``batch_size``; ``hidden_dim`` not a multiple
            of ``num_heads``; ``dropout_rate`` outside [0, 1).
    """

    def __init__(self, prefix_token_num: int, batch_size: int, num_heads: int, hidden_dim: int,
                 embed_dim: int, mid_dim: int = 512, dropout_rate: float = 0.1, *,
                 param_dtype=ms.float32) -> None:
        super().__init__()
        cls = type(self).__name__
        for name, value in (("prefix_token_num", prefix_token_num), ("batch_size", batch_size),
                            ("num_heads", num_heads), ("hidden_dim", hidden_dim),
                            ("embed_dim", embed_dim), ("mid_dim", mid_dim)):
            check_positive_int(value, name, cls, negative_error=TypeError)
        if prefix_token_num % batch_size:
            raise ValueError(f"For '{cls}', 'prefix_token_num' must be a multiple of 'batch_size' "
                             f"({batch_size}), but got {prefix_token_num}.")
        if hidden_dim % num_heads:
            raise ValueError(f"For '{cls}', 'hidden_dim' must be a multiple of 'num_heads' "
                             f"({num_heads}), but got {hidden_dim}.")
        self.dropout_rate = check_dropout_rate(dropout_rate, "dropout_rate", cls)
        check_dtype(param_dtype, "param_dtype", cls)

        self.prefix_token_num = prefix_token_num
        self.batch_size = batch_size
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.embed_dim = embed_dim
        self.mid_dim = mid_dim
        self.head_dim = hidden_dim // num_heads
        self.prefix_len = prefix_token_num // batch_size

        kv = reparameterised_prefix(prefix_token_num, embed_dim, mid_dim, 2 * hidden_dim)
        # row p = b * L + j  ->  [j, b, :]
        kv = kv.reshape(batch_size, self.prefix_len, 2 * hidden_dim).transpose(1, 0, 2)
        shape = (self.prefix_len, batch_size, hidden_dim)
        self.mindpet_delta_prefixtuning_past_key = new_parameter(
            Tensor(kv[..., :hidden_dim].astype(np.float32)), shape, param_dtype, KEY_NAME)
        self.mindpet_delta_prefixtuning_past_value = new_parameter(
            Tensor(kv[..., hidden_dim:].astype(np.float32)), shape, param_dtype, VALUE_NAME)
        self.dropout = nn.Dropout(p=self.dropout_rate)

    @property
    def past_key_reparam(self) -> Parameter:
        """Trainable key prefix, (prefix_token_num // batch_size, batch_size, hidden_dim)."""
        return self.mindpet_delta_prefixtuning_past_key

    @property
    def past_value_reparam(self) -> Parameter:
        """Trainable value prefix, (prefix_token_num // batch_size, batch_size, hidden_dim)."""
        return self.mindpet_delta_prefixtuning_past_value

    def construct(self):
        """(past_key, past_value), each (L, batch_size, hidden_dim), with dropout in training mode."""
        return (self.dropout(self.mindpet_delta_prefixtuning_past_key),
                self.dropout(self.mindpet_delta_prefixtuning_past_value))
