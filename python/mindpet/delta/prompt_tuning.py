r"""Prompt-Tuning (Lester et al., 2021): trainable virtual-token embeddings prepended to the input.

``PromptTuning`` is an embedding table of ``num_virtual_tokens * num_transformer_submodules`` rows::

    table: (num_virtual_tokens * num_transformer_submodules, token_dim)   mindpet_delta_prompttuning_embedding
    ids (batch, n) int -> table[ids]: (batch, n, token_dim)

and :func:`prepend_prompt` puts its output in front of a model's token embeddings and extends the
attention mask::

    prompt = self.prompt_cell(self.prompt_ids)            # prompt_ids: PromptTuning.default_ids(batch)
    embeddings, mask = prepend_prompt(embeddings, prompt, mask)   # (batch, n + seq, hidden), (batch, n + seq)

Only the table trains (freeze mode ``'prompttuning'``); the model sees ``n`` extra positions.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import mindspore as ms
from mindspore import Tensor, ops
from mindspore.common.initializer import Normal

from mindpet._eager import GradSafeCell
from mindpet.delta._parameters import InitType, new_parameter
from mindpet.delta._validation import (check_bool, check_dtype, check_indices_in_range, check_init,
                                       check_positive_int)

__all__ = ["PromptTuning", "prepend_prompt"]

_ID_DTYPES = (ms.int32, ms.int64)


class PromptTuning(GradSafeCell):
    r"""Trainable prompt embeddings (the spec's ``PromptTuning``).

    ``construct(prompt_ids)``: ``prompt_ids`` (batch, num_virtual_tokens * num_transformer_submodules),
    int32 or int64, each in [0, num_virtual_tokens * num_transformer_submodules) -> (batch,
    num_virtual_tokens * num_transformer_submodules, token_dim), dtype ``param_dtype``.
    ``default_ids(batch_size)`` gives the usual ids, ``arange`` repeated over the batch.

    Args:
        num_virtual_tokens: prompt length per transformer sub-module.
        token_dim: embedding size of the model (its ``hidden_size``).
        num_transformer_submodules: transformer sub-modules of the model (2 for encoder-decoder).
        embedding_init: initializer of the table (name, Initializer, number, or a Tensor of the table's
            shape - e.g. rows of the model's vocabulary embedding, which Lester et al. found best).
            Default: N(0, 0.01^2), as ``nn.Embedding``. Keyword only.
        param_dtype: dtype of the table (float32 or float16). Keyword only.
        check_ids: check on every call that the ids are in range (see below). Default: True. Keyword only.

    Raises:
        TypeError: ``num_virtual_tokens``, ``token_dim`` or ``num_transformer_submodules`` not a positive
            int (bool included); bad ``embedding_init`` type; ``param_dtype`` not float16/float32;
            ``check_ids`` not a bool; ``prompt_ids`` not int32/int64 (when called).
        ValueError: unknown initializer name, or an ``embedding_init`` Tensor of the wrong shape;
            ``prompt_ids`` not 2-D, or (``check_ids``) an id outside
            [0, num_virtual_tokens * num_transformer_submodules) (when called eagerly; compiled: see below).

    Checks of ``prompt_ids``: dtype and rank are checked in both modes (in GRAPH mode when the graph
    compiles). With ``check_ids`` the range of the values is checked on every call in both modes, also
    inside a compiled model or training step (an unchecked negative id reads the last row). Run eagerly
    (PYNATIVE) the ids are read on the host (ValueError); compiled (GRAPH mode, ``ms.jit``) MindSpore's
    ``Assert`` kernel, ordered before the lookup, stops the graph with ``RuntimeError: assert failed``
    (a Python raise there cannot coexist with ``ops.Custom`` kernels in MindSpore 2.10), after which
    MindSpore refuses to run that compiled graph again ("An error occurred in the previous step"; a new
    network or a recompilation runs). ``check_ids=False`` removes the check (compiled out in GRAPH mode).
    """

    def __init__(self, num_virtual_tokens: int, token_dim: int, num_transformer_submodules: int = 1, *,
                 embedding_init: InitType = "normal", param_dtype=ms.float32, check_ids: bool = True) -> None:
        super().__init__()
        cls = type(self).__name__
        for name, value in (("num_virtual_tokens", num_virtual_tokens), ("token_dim", token_dim),
                            ("num_transformer_submodules", num_transformer_submodules)):
            check_positive_int(value, name, cls, negative_error=TypeError)
        rows = num_virtual_tokens * num_transformer_submodules
        check_init(embedding_init, "embedding_init", cls, shape=(rows, token_dim))
        check_dtype(param_dtype, "param_dtype", cls)
        check_bool(check_ids, "check_ids", cls)
        self.check_ids = check_ids
        self.num_virtual_tokens = num_virtual_tokens
        self.token_dim = token_dim
        self.num_transformer_submodules = num_transformer_submodules
        self.total_virtual_tokens = rows
        if isinstance(embedding_init, str) and embedding_init.lower() == "normal":
            embedding_init = Normal(0.01)
        self.mindpet_delta_prompttuning_embedding = new_parameter(
            embedding_init, (rows, token_dim), param_dtype, "mindpet_delta_prompttuning_embedding")

    def default_ids(self, batch_size: int) -> Tensor:
        """int32 ids (batch_size, total_virtual_tokens): row ``b`` is ``0, 1, ..., n - 1``."""
        check_positive_int(batch_size, "batch_size", type(self).__name__)
        ids = np.tile(np.arange(self.total_virtual_tokens, dtype=np.int32), (batch_size, 1))
        return Tensor(ids)

    def construct(self, prompt_ids: Tensor) -> Tensor:
        if prompt_ids.dtype not in _ID_DTYPES:
            raise TypeError(f"For 'PromptTuning', 'prompt_ids' must be int32 or int64, but got {prompt_ids.dtype}.")
        if prompt_ids.ndim != 2:
            raise ValueError(f"For 'PromptTuning', 'prompt_ids' must be 2-D (batch, num_virtual_tokens * "
                             f"num_transformer_submodules), but got shape {prompt_ids.shape}.")
        if self.check_ids:
            prompt_ids = check_indices_in_range(prompt_ids, self.total_virtual_tokens, "prompt_ids", "PromptTuning")
        return ops.gather(self.mindpet_delta_prompttuning_embedding, prompt_ids, 0)


def prepend_prompt(embeddings: Tensor, prompt: Tensor, attention_mask: Optional[Tensor] = None,
                   keep_length: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """Put ``prompt`` in front of ``embeddings`` and extend ``attention_mask`` with ones.

    ``embeddings`` (batch, seq, hidden); ``prompt`` (batch, n, hidden), cast to the dtype of
    ``embeddings``; ``attention_mask`` (batch, seq) keep-mask (1 = attend; any dtype) or None.
    Returns ``(embeddings, mask)``: (batch, n + seq, hidden) and (batch, n + seq) (None if no mask).
    With ``keep_length=True`` both are cut back to ``seq`` positions, as in the spec's example: the
    last ``n`` positions are dropped, so leave at least ``n`` padding positions at the end.

    Raises:
        TypeError: an input not a Tensor (mask may be None); ``keep_length`` not a bool.
        ValueError: ranks or sizes that do not fit together.
    """
    func = "prepend_prompt"
    for name, value in (("embeddings", embeddings), ("prompt", prompt)):
        if not isinstance(value, Tensor):
            raise TypeError(f"For '{func}', '{name}' must be a Tensor, but got {type(value)}.")
    check_bool(keep_length, "keep_length", func)
    if embeddings.ndim != 3 or prompt.ndim != 3 or prompt.shape[0] != embeddings.shape[0] \
            or prompt.shape[2] != embeddings.shape[2]:
        raise ValueError(f"For '{func}', 'embeddings' (batch, seq, hidden) and 'prompt' (batch, n, hidden) must "
                         f"agree, but got {embeddings.shape} and {prompt.shape}.")
    batch, seq, _ = embeddings.shape
    n = prompt.shape[1]
    out = ops.concat((prompt.astype(embeddings.dtype), embeddings), 1)
    mask = None
    if attention_mask is not None:
        if not isinstance(attention_mask, Tensor):
            raise TypeError(f"For '{func}', 'attention_mask' must be a Tensor or None, but got {type(attention_mask)}.")
        if attention_mask.shape != (batch, seq):
            raise ValueError(f"For '{func}', 'attention_mask' must have shape {(batch, seq)}, "
                             f"but got {attention_mask.shape}.")
        ones = ops.ones((batch, n), attention_mask.dtype)
        mask = ops.concat((ones, attention_mask), 1)
    if keep_length:
        out = out[:, :seq]
        if mask is not None:
            mask = mask[:, :seq]
    return out, mask
