"""Validation of ``shard`` strategies (checkable without devices)."""
from __future__ import annotations

from typing import Any, Optional, Sequence



def check_strategy(strategy: Any, name: str, cls_name: str, input_ranks: Optional[Sequence[int]] = None,
                   entry_rank: Optional[int] = None) -> tuple:
    """Check a strategy: a tuple holding one tuple of positive ints per input.

    ``input_ranks`` (when known) gives the rank of each input: the number of inner tuples must equal
    ``len(input_ranks)`` and each inner tuple's length the input's rank. ``entry_rank`` (when the
    number of inputs is free but their rank known) is the length every inner tuple must have.
    """
    if not isinstance(strategy, tuple) or not strategy or not all(isinstance(s, tuple) for s in strategy):
        raise TypeError(f"For '{cls_name}', '{name}' must be a tuple of tuples (one per input), but got {strategy!r}.")
    for dims in strategy:
        for d in dims:
            if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
                raise ValueError(f"For '{cls_name}', '{name}' must hold positive ints, but got {strategy!r}.")
    if entry_rank is not None and any(len(dims) != entry_rank for dims in strategy):
        raise ValueError(f"For '{cls_name}', every entry of '{name}' must have {entry_rank} dims (the rank of the "
                         f"data it splits), but got {strategy!r}.")
    if input_ranks is not None:
        if len(strategy) != len(input_ranks):
            raise ValueError(f"For '{cls_name}', '{name}' must have {len(input_ranks)} entries (one per input), "
                             f"but got {len(strategy)}: {strategy!r}.")
        for i, (dims, rank) in enumerate(zip(strategy, input_ranks)):
            if len(dims) != rank:
                raise ValueError(f"For '{cls_name}', entry {i} of '{name}' must have {rank} dims "
                                 f"(the rank of input {i}), but got {dims!r}.")
    return strategy


def check_strategies(cls_name: str, strategies: dict) -> None:
    """Validate several strategies, ``{name: (strategy, input_ranks)}``, before any is attached."""
    for name, (strategy, ranks) in strategies.items():
        if strategy is not None:
            check_strategy(strategy, name, cls_name, ranks)


def apply_strategies(pairs: Sequence[tuple]) -> None:
    """Attach each strategy to its primitive (``[(primitive, strategy)]``; None is skipped)."""
    for prim, strategy in pairs:
        if strategy is not None:
            prim.shard(strategy)
