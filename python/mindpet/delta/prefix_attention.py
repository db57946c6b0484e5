r"""Prefix-Tuning for a standard multi-head attention: per-layer prefix keys and values.

``PrefixEncoder`` produces, inside the graph (so its reparameterisation trains), one key prefix and one
value prefix per attention layer, shared by every example of the batch (Li & Liang, 2021)::

    E: (prefix_len, embed_dim)                         mindpet_delta_prefixtuning_embedding
    P = tanh(E W1^T + b1) W2^T + b2: (prefix_len, num_layers * 2 * num_heads * head_dim)
    P -> (num_layers, 2, num_heads, prefix_len, head_dim) -> dropout -> broadcast over the batch
    layer i: key_i = P[i, 0], value_i = P[i, 1], each (batch, num_heads, prefix_len, head_dim)

With ``reparameterize=False`` the prefixes are a Parameter of that shape, trained directly.

Inside an attention block with keys and values of shape (batch, num_heads, seq, head_dim)::

    k = ops.concat((prefix_key, k), 2)        # (batch, heads, prefix_len + seq, head_dim)
    v = ops.concat((prefix_value, v), 2)
    mask = extend_attention_mask(mask, prefix_len)   # (..., prefix_len + seq): prefix always visible
    scores = q @ k^T / sqrt(head_dim) + (1 - mask) * (-1e4); out = softmax(scores) @ v

Queries keep their length, so the block's output shape is unchanged.
"""
from __future__ import annotations

from typing import Tuple, Union

import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import Normal

from mindpet._eager import GradSafeCell
from mindpet.delta._parameters import new_parameter
from mindpet.delta._validation import check_bool, check_dropout_rate, check_dtype, check_int, check_positive_int

__all__ = ["PrefixEncoder", "extend_attention_mask"]


class PrefixEncoder(GradSafeCell):
    r"""Trainable prefix keys and values for ``num_layers`` attention layers.

    ``construct(batch_size)`` returns a tuple of ``num_layers`` pairs ``(key, value)``, each of shape
    (batch_size, num_heads, prefix_len, head_dim) and dtype ``param_dtype``. Every parameter name
    contains ``mindpet_delta_prefixtuning`` (freeze mode ``'prefixtuning'`` keeps exactly them).

    Args:
        num_layers: attention layers that receive a prefix.
        num_heads: heads per layer.
        head_dim: size of one head.
        prefix_len: prefix positions added to every layer's keys and values.
        mid_dim: hidden size of the reparameterisation MLP.
        embed_dim: size of the prefix embedding (default ``num_heads * head_dim``).
        dropout_rate: dropout on the prefixes in training mode, in [0, 1).
        reparameterize: compute the prefixes through the MLP (True) or train them directly (False).
        param_dtype: dtype of the parameters and outputs (float32 or float16).

    Raises:
        TypeError: a size not a positive int (bool included); ``dropout_rate`` not a number;
            ``reparameterize`` not a bool; ``param_dtype`` not float16/float32.
        ValueError: ``dropout_rate`` outside [0, 1).
    """

    def __init__(self, num_layers: int, num_heads: int, head_dim: int, prefix_len: int,
                 mid_dim: int = 512, embed_dim: Union[int, None] = None, dropout_rate: float = 0.0,
                 reparameterize: bool = True, param_dtype=ms.float32) -> None:
        super().__init__()
        cls = type(self).__name__
        for name, value in (("num_layers", num_layers), ("num_heads", num_heads),
                            ("head_dim", head_dim), ("prefix_len", prefix_len), ("mid_dim", mid_dim)):
            check_positive_int(value, name, cls, negative_error=TypeError)
        embed_dim = num_heads * head_dim if embed_dim is None else embed_dim
        check_positive_int(embed_dim, "embed_dim", cls, negative_error=TypeError)
        self.dropout_rate = check_dropout_rate(dropout_rate, "dropout_rate", cls)
        self.reparameterize = check_bool(reparameterize, "reparameterize", cls)
        check_dtype(param_dtype, "param_dtype", cls)
        self.num_layers, self.num_heads, self.head_dim = num_layers, num_heads, head_dim
        self.prefix_len, self.mid_dim, self.embed_dim = prefix_len, mid_dim, embed_dim
        self.param_dtype = param_dtype
        out_dim = num_layers * 2 * num_heads * head_dim

        if self.reparameterize:
            self.mindpet_delta_prefixtuning_embedding = new_parameter(
                Normal(1.0), (prefix_len, embed_dim), param_dtype, "mindpet_delta_prefixtuning_embedding")
            self.mindpet_delta_prefixtuning_mlp = nn.SequentialCell(
                nn.Dense(embed_dim, mid_dim, dtype=param_dtype), nn.Tanh(),
                nn.Dense(mid_dim, out_dim, dtype=param_dtype))
        else:
            self.mindpet_delta_prefixtuning_past_key_values = new_parameter(
                Normal(1.0), (prefix_len, out_dim), param_dtype, "mindpet_delta_prefixtuning_past_key_values")
        self.dropout = nn.Dropout(p=self.dropout_rate)

    def prefixes(self) -> Tensor:
        """All prefixes, (num_layers, 2, num_heads, prefix_len, head_dim) (no batch, no dropout)."""
        if self.reparameterize:
            flat = self.mindpet_delta_prefixtuning_mlp(self.mindpet_delta_prefixtuning_embedding)
        else:
            flat = self.mindpet_delta_prefixtuning_past_key_values
        kv = flat.reshape(self.prefix_len, self.num_layers, 2, self.num_heads, self.head_dim)
        return kv.transpose(1, 2, 3, 0, 4)

    def construct(self, batch_size: int) -> Tuple[Tuple[Tensor, Tensor], ...]:
        kv = self.dropout(self.prefixes())
        shape = (batch_size, self.num_heads, self.prefix_len, self.head_dim)
        out = ()
        for i in range(self.num_layers):
            out += ((ops.broadcast_to(kv[i, 0], shape), ops.broadcast_to(kv[i, 1], shape)),)
        return out


def extend_attention_mask(mask: Tensor, prefix_len: int, keep_value=1) -> Tensor:
    """Prepend ``prefix_len`` columns of ``keep_value`` to the last (key) axis of ``mask``.

    ``mask`` (..., seq_k) of any rank >= 1 and dtype (bool, int or float; e.g. (batch, seq_k) or
    (batch, 1 or heads, seq_q, seq_k)) -> (..., prefix_len + seq_k), same dtype, so the prefix
    positions - which sit in front of the keys - are visible to every query of every head. For a
    keep-mask (1 = attend) ``keep_value`` is 1 (True for bool); for an additive mask pass 0.
    """
    if not isinstance(mask, Tensor):
        raise TypeError(f"For 'extend_attention_mask', 'mask' must be a Tensor, but got {type(mask).__name__}.")
    check_int(prefix_len, "prefix_len", "extend_attention_mask")
    if prefix_len < 0:
        raise ValueError(f"For 'extend_attention_mask', 'prefix_len' must be >= 0, but got {prefix_len}.")
    if mask.ndim < 1:
        raise ValueError("For 'extend_attention_mask', 'mask' must have rank >= 1, but got a scalar.")
    if prefix_len == 0:
        return mask
    ones = ops.fill(mask.dtype, mask.shape[:-1] + (prefix_len,), keep_value)
    return ops.concat((ones, mask), -1)
