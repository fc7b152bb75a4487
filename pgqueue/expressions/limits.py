"""Limits that keep parsing, checking and evaluating an expression bounded in time and memory."""

from __future__ import annotations

from typing import Final

VARIABLES: Final = ("event", "async", "vars")
"""Top-level variables an expression may read; anything else is refused when the app syncs."""

MAX_SOURCE_BYTES: Final = 16 * 1024
"""Longer expressions are refused: parsing cost and error messages stay bounded."""

MAX_DEPTH: Final = 100
"""Deepest nesting of the syntax tree; keeps every recursive pass far from Python's recursion limit."""

MAX_STEPS: Final = 100_000
"""Macro iterations (all, exists, map, ...) one evaluation may perform, nested macros included."""

MAX_PATTERN_CHARS: Final = 1000
"""Longest regular expression `matches()` accepts."""

INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1
UINT64_MAX: Final = (1 << 64) - 1
