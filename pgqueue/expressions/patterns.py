"""Regular expressions for `matches()`, with RE2 semantics in linear time (google-re2, the library Go's
regexp package mirrors and Inngest's evaluator uses).

A pattern is compiled once and kept in a bounded LRU cache. RE2 refuses what it cannot run in linear time
(backreferences, lookaround); that is a Fault naming the pattern, never a crash. `matches()` is an
unanchored search, like CEL's `matches` (Go's regexp.MatchString): use ^ and $ to anchor.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Final

import re2  # pyright: ignore[reportMissingTypeStubs]

from pgqueue.expressions import budget, limits
from pgqueue.expressions.faults import Fault

CACHE_SIZE: Final = 256
"""Distinct patterns kept compiled; literal patterns of synced functions and recent ones from event data."""

# RE2 syntax Go's regexp does not accept, refused so a pattern means the same here as in Inngest.
_GO_REFUSES: Final = {"C": "\\C (any byte) is not supported"}


def _options() -> Any:
    options = re2.Options()
    options.never_capture = True  # matches() only asks whether there is a match: no submatch tracking
    options.log_errors = False  # a refused pattern becomes an expression error, not a line on stderr
    return options


_OPTIONS: Final = _options()


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled pattern. `size` is RE2's program size: a search takes at most that many steps per byte."""

    source: str
    regexp: Any
    size: int

    def search(self, subject: str) -> bool:
        """Whether the pattern matches anywhere in `subject`; charges the budget for the worst case."""
        data = utf8(subject)
        budget.spend(1 + ((len(data) * self.size) >> 4))
        return self.regexp.search(data) is not None


def utf8(text: str) -> bytes:
    """`text` as UTF-8. Lone surrogates (JSON allows "\\ud800") become U+FFFD, as Go's decoder makes them."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def _shown(pattern: str) -> str:
    return repr(pattern if len(pattern) <= 80 else pattern[:77] + "...")


def _go_problem(pattern: str) -> str | None:
    """Why Go's regexp refuses a pattern RE2 accepts, or None. Escapes are two characters; \\Q...\\E is
    literal text."""
    i, n = 0, len(pattern)
    while i < n - 1:
        if pattern[i] != "\\":
            i += 1
            continue
        escape = pattern[i + 1]
        if escape == "Q":
            end = pattern.find("\\E", i + 2)
            if end < 0:
                return None
            i = end + 2
            continue
        if escape in _GO_REFUSES:
            return _GO_REFUSES[escape]
        i += 2
    return None


@functools.lru_cache(maxsize=CACHE_SIZE)
def compile_pattern(pattern: str) -> Pattern:
    """The compiled pattern; raises Fault naming the pattern when it is too long or RE2 refuses it."""
    if len(pattern) > limits.MAX_PATTERN_CHARS:
        limit = limits.MAX_PATTERN_CHARS
        raise Fault(f"matches(): the pattern is {len(pattern)} characters long; the limit is {limit}")
    try:
        regexp = re2.compile(utf8(pattern), _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "refused"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        hint = ""
        backreference = reason.startswith("invalid escape sequence: \\") and reason[-1:].isdigit()
        if backreference or "invalid perl operator" in reason:
            hint = " (RE2 has no backreferences or lookaround)"
        raise Fault(f"matches(): invalid pattern {_shown(pattern)}: {reason}{hint}") from None
    problem = _go_problem(pattern)
    if problem is not None:
        raise Fault(f"matches(): invalid pattern {_shown(pattern)}: {problem}")
    return Pattern(pattern, regexp, int(regexp.programsize))
