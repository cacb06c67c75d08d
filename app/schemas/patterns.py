"""Regular expressions of command schemas, matched with RE2 (google-re2): linear time in the input, whatever the
pattern. Python's backtracking `re` would let a schema's `^(a+)+$` stall a worker on a client's `"aaaa…!"`.

`patternProperties` (and the `additionalProperties` check next to it) use one RE2 Set per schema object: every
member name is scanned once against all the patterns together, instead of once per pattern (600 patterns and
6,000 names were 3.6 million separate searches).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import re2

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a pattern RE2 refuses is reported to the caller, not printed on stderr
_RE2_OPTIONS.never_capture = True  # only "does it match" is ever asked


class PatternError(ValueError):
    """A regular expression RE2 cannot compile (lookaround, backreferences, too large, bad syntax)."""


def _reason(exc: Exception) -> str:
    reason = exc.args[0] if exc.args else "invalid"
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    return str(reason)


@functools.lru_cache(maxsize=4096)
def compile_pattern(pattern: str):
    """The RE2 program for a schema pattern (cached per process); PatternError when RE2 refuses it."""
    try:
        return re2.compile(pattern, options=_RE2_OPTIONS)
    except re2.error as exc:
        raise PatternError(_reason(exc)) from None


def matches(pattern: str, text: str) -> bool:
    return compile_pattern(pattern).search(text) is not None


class PatternSet:
    """Several patterns compiled into one RE2 Set: `matching(text)` → the indexes of the patterns that match
    somewhere in `text` (JSON Schema patterns are not anchored), in one linear scan."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns
        self._set = re2.Set.SearchSet(_RE2_OPTIONS)
        for pattern in patterns:
            try:
                self._set.Add(pattern)
            except re2.error as exc:
                compile_pattern(pattern)  # raises PatternError with RE2's reason when the pattern itself is bad
                raise PatternError(_reason(exc)) from None
        if patterns:
            try:
                self._set.Compile()
            except re2.error as exc:
                raise PatternError(f"the patterns together are too large for the linear-time engine: {_reason(exc)}"
                                   ) from None

    def matching(self, text: str) -> list[int]:
        if not self.patterns:
            return []
        return self._set.Match(text) or []

    def any_match(self, text: str) -> bool:
        return bool(self.patterns) and self._set.Match(text) is not None


@functools.lru_cache(maxsize=1024)
def _pattern_set(patterns: tuple[str, ...]) -> PatternSet:
    return PatternSet(patterns)


def pattern_set(patterns: Iterable[str]) -> PatternSet:
    """The (cached) PatternSet of a `patternProperties` object's keys, in their order."""
    return _pattern_set(tuple(patterns))
