"""The one pattern language of mindpet, over parameter names (freezing) and cell paths (``inject``).

A pattern is a case-sensitive shell wildcard matched against the whole name (:func:`fnmatch.fnmatchcase`:
``*`` matches any run of characters including dots, ``?`` one character, ``[seq]`` / ``[!seq]`` a
character set; without wildcards it matches exactly one name), or, after the prefix ``re:``, a regular
expression that must match the whole name.
"""
from __future__ import annotations

import re
from fnmatch import translate
from typing import Any, Callable, Iterable, List, Optional, Sequence

REGEX_PREFIX = "re:"


def compile_pattern(pattern: str, arg: str, func: str) -> Callable[[str], bool]:
    """A predicate "``pattern`` matches the whole name"; ValueError (naming ``func`` and ``arg``) for a bad regex."""
    if pattern.startswith(REGEX_PREFIX):
        try:
            regex = re.compile(pattern[len(REGEX_PREFIX):])
        except re.error as err:
            raise ValueError(f"For '{func}', {arg} pattern {pattern!r} is not a valid regular expression: "
                             f"{err}.") from err
        return lambda name: regex.fullmatch(name) is not None
    wildcard = re.compile(translate(pattern))
    return lambda name: wildcard.match(name) is not None


def check_patterns(value: Any, arg: str, func: str) -> List[str]:
    """``value`` (a str, or a non-empty list or tuple of non-empty str) as a list; TypeError naming ``arg``."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(f"For '{func}', '{arg}' must be a str or a non-empty list of str, but got "
                        f"{type(value).__name__}: {value!r}.")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item or item == REGEX_PREFIX:
            raise TypeError(f"For '{func}', every item of '{arg}' must be a non-empty str, but {arg}[{i}] "
                            f"is {item!r}.")
    return list(value)


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


class PatternSet:
    """A compiled list of patterns that answers "does any pattern match this name"."""

    def __init__(self, patterns: Sequence[str], arg: str = "patterns", func: str = "mindpet"):
        self.patterns = list(patterns)
        self._compiled = [compile_pattern(p, arg, func) for p in self.patterns]

    def matches(self, name: str) -> bool:
        return any(match(name) for match in self._compiled)

    def unmatched(self, names: Iterable[str]) -> List[str]:
        """The patterns that match none of ``names``, in the order given."""
        names = list(names)
        return [p for p, match in zip(self.patterns, self._compiled) if not any(match(n) for n in names)]


def check_all_match(patterns: Optional[PatternSet], names: Sequence[str], arg: str, func: str) -> None:
    """ValueError naming every pattern of ``arg`` that matches no parameter name."""
    if patterns is None:
        return
    missing = patterns.unmatched(names)
    if missing:
        raise ValueError(f"For '{func}', these '{arg}' patterns match no parameter of the model: {missing}. "
                         f"Patterns are case-sensitive shell wildcards over names from "
                         f"model.parameters_and_names(), e.g. '*head*' or 'encoder.layers.0.*', or "
                         f"'re:<regex>' matched against the full name.")


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
