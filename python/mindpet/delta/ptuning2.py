r"""P-Tuning v2 (Liu et al., 2022): trainable prefix keys and values for every attention layer.

``PrefixEncoder`` is the class mindformers imports (``from mindpet.delta.ptuning2 import PrefixEncoder``,
ChatGLM2's ``ChatGLM2WithPtuning2``), with the signature and outputs of mindpet 1.0.4::

    PrefixEncoder(pre_seq_len, num_layers, num_heads, kv_channels, prefix_projection, projection_dim,
                  dropout_prob)
    construct(batch_size, dtype=mindspore.float16) -> num_layers tensors (2, batch_size, num_heads,
                                                      pre_seq_len, kv_channels)

Computation, with ``D = num_layers * 2 * num_heads * kv_channels``::

    E: (pre_seq_len, D)                     mindpet_delta_ptuning2_embedding.embedding_table, N(0, 0.01^2)
    P = E                                   prefix_projection=False
    P = tanh(E W1^T + b1) W2^T + b2         prefix_projection=True; W1 (projection_dim, D), W2 (D, projection_dim)
    P -> cast(dtype) -> (pre_seq_len, 2 num_layers, num_heads, kv_channels) -> (2 num_layers, num_heads,
         pre_seq_len, kv_channels) -> broadcast over the batch -> dropout (training mode, per element)
    layer i: P[2i : 2i + 2] = (key, value), each (batch_size, num_heads, pre_seq_len, kv_channels)

Row ``j`` of ``E`` is the embedding of prefix position ``j``; all positions are always used, so ``E``
itself is the lookup of positions ``0 .. pre_seq_len - 1``. Flat column ``c`` of ``P`` belongs to layer
``c // (2 H d)``, key (0) or value (1) ``(c // (H d)) % 2``, head ``(c // d) % H``, channel ``c % d``:
the layout of :meth:`mindpet.delta.PrefixEncoder.prefixes` (Prefix-Tuning, ``mindpet.delta.prefix_attention``).
In an attention block: ``k = concat((key, k), 2)``, ``v = concat((value, v), 2)`` with ``k, v`` of
shape (batch, heads, seq, head_dim), and the mask gains ``pre_seq_len`` visible columns in front
(:func:`mindpet.delta.extend_attention_mask`).

Relation to :class:`mindpet.delta.PrefixEncoder` (Prefix-Tuning, Li & Liang): same prefix layout and
the same reparameterisation idea, but that class embeds the prefix in a small ``embed_dim`` and always
maps it up through its MLP, returns ``(key, value)`` pairs in the parameter dtype and names its
parameters ``mindpet_delta_prefixtuning_*``; this one embeds the prefix directly at full width ``D``
(the MLP, optional, maps ``D -> projection_dim -> D``), stacks key and value, casts to the requested
``dtype`` and names its parameters ``mindpet_delta_ptuning2_*``. Both share the package's argument
checks and ``get_dropout``. ``mindpet.delta.PrefixEncoder`` stays the Prefix-Tuning class; this one is
imported from ``mindpet.delta.ptuning2``.

Freezing and names: ``freeze_delta(net, 'ptuning2')`` keeps exactly the parameters below trainable. Their
names are those of mindpet 1.0.4, so its checkpoints load by name::

    mindpet_delta_ptuning2_embedding.embedding_table          (pre_seq_len, D)
    mindpet_delta_ptuning2_dense_in.weight, .bias              (projection_dim, D), (projection_dim,)
    mindpet_delta_ptuning2_dense_out.weight, .bias             (D, projection_dim), (D,)

Differences from mindpet 1.0.4 (this package's rules win):

- 1.0.4 also held the position indices ``0 .. pre_seq_len - 1`` as an int64 Parameter
  ``mindpet_delta_ptuning2_prefix`` (``requires_grad=False``). Here ``freeze_delta`` makes every
  ``mindpet_delta_<mode>`` parameter trainable (``shared/spec/graph_operations.md``), which would hand an
  integer tensor to the optimizer, and the indices are not needed (the lookup of all positions is ``E``),
  so there is no such Parameter: that entry of a 1.0.4 checkpoint is reported as not loaded, harmlessly.
- Arguments are checked as everywhere in the package: a TypeError or ValueError naming the argument
  (``bool`` is not an int; ``prefix_projection`` must be a bool; ``dropout_prob`` a number in [0, 1);
  ``projection_dim`` a positive int when ``prefix_projection`` is True, else ignored as in 1.0.4);
  ``construct`` checks ``batch_size`` (positive int) and ``dtype`` (float16, float32 or bfloat16).
- 1.0.4's optional ``parallel_config`` and ``out_perm`` arguments and its ``shard`` method are not
  provided (mindformers passes neither and never calls ``shard`` on this class); new is the
  keyword-only ``param_dtype`` (1.0.4: float32 always, still the default).
- The MLP runs once on ``E`` and the result is broadcast over the batch (1.0.4 tiled the positions over
  the batch first and ran the MLP per example): the same values, computed once.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common import dtype as mstype
from mindspore.common.initializer import Normal, initializer

from mindpet._eager import GradSafeCell
from mindpet.delta._validation import check_bool, check_dtype, check_positive_int
from mindpet.utils.version_control import get_dropout

__all__ = ["PrefixEncoder", "OUTPUT_DTYPES"]

#: dtypes ``construct`` casts the prefixes to.
OUTPUT_DTYPES = (mstype.float16, mstype.float32, mstype.bfloat16)
EMBEDDING_SIGMA = 0.01  # MindSpore's 'normal' initializer, as in 1.0.4


class _PrefixEmbedding(GradSafeCell):
    """The embedding table of the prefix positions, ``embedding_table: (pre_seq_len, D)``."""

    def __init__(self, pre_seq_len: int, width: int, param_dtype) -> None:
        super().__init__()
        self.embedding_table = Parameter(
            initializer(Normal(EMBEDDING_SIGMA), (pre_seq_len, width), param_dtype), name="embedding_table")

    def construct(self) -> Tensor:
        """The embeddings of all positions ``0 .. pre_seq_len - 1``, i.e. the table."""
        return self.embedding_table


class PrefixEncoder(GradSafeCell):
    r"""P-Tuning v2 prefixes for ``num_layers`` attention layers (module docstring: formula, names).

    Args:
        pre_seq_len: prefix positions added in front of every layer's keys and values.
        num_layers: attention layers that receive a prefix.
        num_heads: key/value heads per layer (the query-group count under multi-query attention).
        kv_channels: size of one head.
        prefix_projection: compute the prefixes through the two-layer tanh MLP (True) or use the
            embedding directly (False).
        projection_dim: hidden size of that MLP (used only when ``prefix_projection`` is True).
        dropout_prob: dropout probability on the prefixes in training mode, in [0, 1).
        param_dtype (keyword-only): dtype of the parameters (float32 default, float16 or bfloat16).

    Inputs:
        batch_size: positive int. dtype: output dtype (default float16, as in 1.0.4).

    Outputs:
        tuple of ``num_layers`` Tensors (2, batch_size, num_heads, pre_seq_len, kv_channels); ``[0]`` the
        key prefix, ``[1]`` the value prefix.

    Raises:
        TypeError: a size not an int (bool included); ``prefix_projection`` not a bool; ``dropout_prob``
            not a number; ``param_dtype`` or the ``dtype`` input not float16/float32/bfloat16; a
            ``batch_size`` input that is not an int.
        ValueError: a size (or ``batch_size``) not positive; ``dropout_prob`` outside [0, 1).
    """

    def __init__(self, pre_seq_len: int, num_layers: int, num_heads: int, kv_channels: int,
                 prefix_projection: bool, projection_dim: Optional[int], dropout_prob: float, *,
                 param_dtype=ms.float32) -> None:
        super().__init__()
        cls = type(self).__name__
        for name, value in (("pre_seq_len", pre_seq_len), ("num_layers", num_layers),
                            ("num_heads", num_heads), ("kv_channels", kv_channels)):
            check_positive_int(value, name, cls)
        self.prefix_projection = check_bool(prefix_projection, "prefix_projection", cls)
        if prefix_projection:
            check_positive_int(projection_dim, "projection_dim", cls)
        check_dtype(param_dtype, "param_dtype", cls, OUTPUT_DTYPES)
        self.dropout = get_dropout(dropout_prob)  # validates dropout_prob, then builds the layer
        self.dropout_prob = float(dropout_prob)
        self.pre_seq_len, self.num_layers = pre_seq_len, num_layers
        self.num_heads, self.kv_channels = num_heads, kv_channels
        self.projection_dim = projection_dim if prefix_projection else None
        self.param_dtype = param_dtype
        width = num_layers * 2 * num_heads * kv_channels

        # Attribute order as in 1.0.4, so that the Parameter names (first attribute path) are the same.
        self.mindpet_delta_ptuning2_embedding = _PrefixEmbedding(pre_seq_len, width, param_dtype)
        if prefix_projection:
            self.mindpet_delta_ptuning2_dense_in = nn.Dense(width, projection_dim, dtype=param_dtype)
            self.mindpet_delta_ptuning2_tanh = nn.Tanh()
            self.mindpet_delta_ptuning2_dense_out = nn.Dense(projection_dim, width, dtype=param_dtype)
            self.mindpet_delta_ptuning2_trans = nn.SequentialCell(
                self.mindpet_delta_ptuning2_dense_in, self.mindpet_delta_ptuning2_tanh,
                self.mindpet_delta_ptuning2_dense_out)

    def flat_prefixes(self) -> Tensor:
        """``P``: (pre_seq_len, num_layers * 2 * num_heads * kv_channels) in ``param_dtype`` (no dropout)."""
        flat = self.mindpet_delta_ptuning2_embedding()
        if self.prefix_projection:
            flat = self.mindpet_delta_ptuning2_trans(flat)
        return flat

    def construct(self, batch_size: int, dtype=mstype.float16) -> Tuple[Tensor, ...]:
        _check_inputs(batch_size, dtype)
        kv = ops.cast(self.flat_prefixes(), dtype)
        kv = kv.reshape(self.pre_seq_len, self.num_layers * 2, self.num_heads, self.kv_channels)
        kv = kv.transpose(1, 2, 0, 3)  # (2 L, H, pre_seq_len, d)
        kv = ops.broadcast_to(kv.expand_dims(1), (self.num_layers * 2, batch_size, self.num_heads,
                                                  self.pre_seq_len, self.kv_channels))
        kv = self.dropout(kv)
        return ops.split(kv, 2, 0)


def _check_inputs(batch_size: Any, dtype: Any) -> None:
    """TypeError/ValueError for a bad ``batch_size`` or ``dtype`` (graph-mode compatible: constants)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"For 'PrefixEncoder', 'batch_size' must be an int, but got {batch_size}.")
    if batch_size <= 0:
        raise ValueError(f"For 'PrefixEncoder', 'batch_size' must be a positive int, but got {batch_size}.")
    if dtype not in OUTPUT_DTYPES:
        raise TypeError(f"For 'PrefixEncoder', 'dtype' must be one of [mindspore.float16, mindspore.float32, "
                        f"mindspore.bfloat16], but got {dtype}.")
