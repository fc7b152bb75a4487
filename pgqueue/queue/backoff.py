"""Retry schedule: Inngest's backoff table plus jitter. Pure functions (an SDK's Retry-After is
parsed with its answer, in pgqueue.protocol.outcome)."""

from __future__ import annotations

import random

# Seconds before retry n (n = the 0-based attempt that just failed), capped at the last entry.
TABLE_S = (15, 30, 60, 120, 300, 600, 1200, 2400, 3600, 7200)
JITTER_S = 30.0


def delay_s(attempt: int, *, scale: float = 1.0, rng: random.Random | None = None) -> float:
    """Delay before the retry that follows failed attempt `attempt`.

    `scale` multiplies the whole delay: 1.0 in production; tests set PGQUEUE_BACKOFF_SCALE
    (e.g. 0.001) so retries take milliseconds instead of minutes.
    """
    base = TABLE_S[min(max(attempt, 0), len(TABLE_S) - 1)]
    jitter = (rng or random).uniform(0.0, JITTER_S)
    return (base + jitter) * scale
