"""Go-style duration strings as the SDKs send them ("300ms", "2h45m", "1d", "1w") and ISO instants."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pgqueue.errors import InvalidInput

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration string; bare numbers are seconds. Raises InvalidInput with the input."""
    if isinstance(text, bool):
        raise InvalidInput(f"invalid duration {text!r}")
    if isinstance(text, int | float):
        return float(text)
    s = text.strip()
    if not s:
        raise InvalidInput("empty duration")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return sign * float(s)
    pos = 0
    total = 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise InvalidInput(f"invalid duration {text!r}: use a number with units s, m, h, d or w, e.g. '1h30m'")
    return sign * total


def parse_instant(text: str) -> datetime | None:
    """An ISO-8601 instant (the SDKs send sleep_until targets this way), or None if it is not one."""
    if len(text) < 10:
        return None
    candidate = text.strip().replace("Z", "+00:00")
    try:
        value = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def timeout_seconds(value: str | int | float, *, now: datetime | None = None) -> float:
    """A timeout given as a duration or as an ISO instant, in seconds from now."""
    if isinstance(value, str):
        instant = parse_instant(value)
        if instant is not None:
            return (instant - (now or datetime.now(UTC))).total_seconds()
    return parse_duration(value)
