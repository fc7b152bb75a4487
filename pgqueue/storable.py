"""Values PostgreSQL's jsonb can store, checked before the database sees them.

JSON as the SDKs write it can hold what jsonb refuses: NaN and Infinity (Python's json.dumps writes
them for float("nan")), lone UTF-16 surrogates ("\\ud83d", what a JS String.slice through an emoji
gives), NUL characters, and nesting deeper than the server parses. Storing such a value fails
the whole transaction; a step output that can never be stored must fail its step at once instead
of being retried forever. Error payloads are not refused but scrubbed, so a failure can always be
recorded.
"""

from __future__ import annotations

import math
import re
from typing import Any

# jsonb refuses documents deeper than its parser's stack allows, and Python's json module stops near
# 1,000 levels: no real output comes near this.
MAX_DEPTH = 512
_SURROGATE = re.compile("[\ud800-\udfff]")


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which PostgreSQL cannot store"
    if _SURROGATE.search(text):
        return ("contains a lone UTF-16 surrogate (\\ud800-\\udfff, e.g. half of an emoji), "
                "which is not valid Unicode")
    return None


def problem(value: Any, *, max_depth: int = MAX_DEPTH) -> str | None:
    """Why jsonb (or the JSON pgqueue later signs and sends) cannot hold `value`, a decoded JSON
    value, or None when it can. Iterative, so a deeply nested value gets a clear answer rather than
    a RecursionError."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            reason = _string_problem(item)
            if reason:
                return reason
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "contains NaN or Infinity (or a number too large for a double), which JSON cannot hold"
        elif isinstance(item, int):
            try:
                float(item)
            except OverflowError:
                return "contains a number too large for a double-precision float"
        elif isinstance(item, dict | list):
            if depth > max_depth:
                return f"is nested deeper than {max_depth} levels"
            if isinstance(item, dict):
                stack.extend((k, depth) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
    return None


def unstorable_error(what: str, reason: str) -> dict[str, str]:
    """The error a step or run fails with when its value cannot be stored."""
    return {"name": "UnstorableOutput", "message": f"{what} {reason}"}


# Error payloads are small records; what lies deeper than this is replaced when scrubbing.
SCRUB_DEPTH = 64


def scrub(value: Any) -> Any:
    """A storable copy of an error payload: NaN/Infinity become null, NUL and lone surrogates
    U+FFFD, and anything nested deeper than SCRUB_DEPTH is replaced by a placeholder."""
    if problem(value, max_depth=SCRUB_DEPTH) is None:
        return value
    return _scrub(value, 1)


def _scrub(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value.replace("\x00", "\ufffd"))
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int) and not isinstance(value, bool) and problem(value):
        return str(value)
    if isinstance(value, dict | list) and depth > SCRUB_DEPTH:
        return "[nested too deeply]"
    if isinstance(value, dict):
        return {_scrub(k, depth) if isinstance(k, str) else k: _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, depth + 1) for v in value]
    return value
