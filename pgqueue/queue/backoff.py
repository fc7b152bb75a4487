"""Retry schedule: Inngest's backoff table plus jitter, and Retry-After parsing. Pure functions."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from pgqueue.durations import parse_instant

# Seconds before retry n (n = the 0-based attempt that just failed), capped at the last entry.
TABLE_S = (15, 30, 60, 120, 300, 600, 1200, 2400, 3600, 7200)
JITTER_S = 30.0
RETRY_AFTER_MIN_S = 1.0
RETRY_AFTER_MAX_S = 86400.0


def delay_s(attempt: int, *, scale: float = 1.0, rng: random.Random | None = None) -> float:
    """Delay before the retry that follows failed attempt `attempt`.

    `scale` multiplies the whole delay: 1.0 in production; tests set PGQUEUE_BACKOFF_SCALE
    (e.g. 0.001) so retries take milliseconds instead of minutes.
    """
    base = TABLE_S[min(max(attempt, 0), len(TABLE_S) - 1)]
    jitter = (rng or random).uniform(0.0, JITTER_S)
    return (base + jitter) * scale


def retry_after_s(header: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds, ISO-8601 or RFC 1123), clamped 1 s..24 h."""
    if not header:
        return None
    value = header.strip()
    seconds: float | None = None
    if value.isdigit() and len(value) <= 7:
        seconds = float(value)
    else:
        when = parse_instant(value)
        if when is None:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, RETRY_AFTER_MIN_S), RETRY_AFTER_MAX_S)
