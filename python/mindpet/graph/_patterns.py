"""Shell-style name patterns for freezing: validation and matching.

Patterns use :func:`fnmatch.fnmatchcase`: ``*`` matches any run of characters including dots,
``?`` one character, ``[seq]`` / ``[!seq]`` a character set; matching is case-sensitive and a
pattern without wildcards matches exactly one name.
"""
from __future__ import annotations

import re
from fnmatch import translate
from typing import Any, Iterable, List, Optional, Sequence

from mindspore import nn


def check_cell(model: Any, func: str, arg: str = "model") -> None:
    """TypeError unless ``model`` is a ``mindspore.nn.Cell``."""
    if not isinstance(model, nn.Cell):
        raise TypeError(f"For '{func}', '{arg}' must be a mindspore.nn.Cell, "
                        f"but got {type(model).__name__}.")


def check_pattern_list(value: Any, arg: str, func: str) -> Optional[List[str]]:
    """Return ``value`` as a list of patterns, or None if it is None.

    Raises TypeError unless ``value`` is None or a non-empty list whose items are all str;
    the message names the argument and, for a bad item, its index and value.
    """
    if value is None:
        return None
    if not isinstance(value, list):
        raise TypeError(f"For '{func}', '{arg}' must be a non-empty list of str, "
                        f"but got {type(value).__name__}: {value!r}.")
    if not value:
        raise TypeError(f"For '{func}', '{arg}' must be a non-empty list of str, but got an empty list.")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise TypeError(f"For '{func}', every item of '{arg}' must be a str, but {arg}[{index}] is "
                            f"{item!r} of type {type(item).__name__}.")
    return list(value)


def _compile(pattern: str) -> "re.Pattern[str]":
    return re.compile(translate(pattern))


class PatternSet:
    """A compiled list of patterns that answers "does any pattern match this name"."""

    def __init__(self, patterns: Sequence[str]):
        self.patterns = list(patterns)
        self._compiled = [_compile(p) for p in self.patterns]

    def matches(self, name: str) -> bool:
        return any(c.match(name) for c in self._compiled)

    def unmatched(self, names: Iterable[str]) -> List[str]:
        """The patterns that match none of ``names``, in the order given."""
        names = list(names)
        return [p for p, c in zip(self.patterns, self._compiled) if not any(c.match(n) for n in names)]


def check_all_match(patterns: Optional[PatternSet], names: Sequence[str], arg: str, func: str) -> None:
    """ValueError naming every pattern of ``arg`` that matches no parameter name."""
    if patterns is None:
        return
    missing = patterns.unmatched(names)
    if missing:
        raise ValueError(f"For '{func}', these '{arg}' patterns match no parameter of the model: {missing}. "
                         f"Patterns are case-sensitive shell wildcards over names from "
                         f"model.parameters_and_names(), e.g. '*head*' or 'encoder.layers.0.*'.")


def include_exclude_targets(names: Sequence[str], include: Optional[PatternSet],
                            exclude: Optional[PatternSet]) -> dict:
    """Map each name matched by exactly one side to its new ``requires_grad``.

    Matched by include only -> False (frozen); by exclude only -> True (trainable); by both or
    neither -> absent (unchanged).
    """
    targets = {}
    for name in names:
        inc = include is not None and include.matches(name)
        exc = exclude is not None and exclude.matches(name)
        if inc and not exc:
            targets[name] = False
        elif exc and not inc:
            targets[name] = True
    return targets
