"""Runs over time, for the dashboard's charts and `GET /v1/charts/runs`: made, completed, failed and
cancelled per bucket, the backlog (runs not over) at the end of each bucket, and p50/p99 run
duration — all from the per-minute counts and duration histograms in pgqueue.run_counts plus the
live-run count, never from the runs themselves, so a chart costs the same at 10 million runs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pgqueue.db.pool import Conn
from pgqueue.errors import InvalidInput
from pgqueue.store import inspect

RANGES = {"1h": (timedelta(hours=1), 60), "6h": (timedelta(hours=6), 300), "24h": (timedelta(days=1), 900),
          "7d": (timedelta(days=7), 6 * 3600)}  # range: (span, bucket seconds)
HISTOGRAM_BUCKETS = 25


@dataclass(frozen=True, slots=True)
class Bucket:
    at: datetime
    started: int
    completed: int
    failed: int
    cancelled: int
    backlog: int  # runs not over at the end of the bucket
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class Chart:
    range: str
    bucket_s: int
    since: datetime
    buckets: tuple[Bucket, ...]
    live: int
    p50_ms: float | None
    p99_ms: float | None
    concurrency: tuple[dict[str, Any], ...]

    def total(self, name: str) -> int:
        return sum(getattr(b, name) for b in self.buckets)


def percentile(histogram: list[int], q: float) -> float | None:
    """The q-quantile (0..1) of durations counted in run_counts' histogram: bucket b (1-based) holds
    [2^(b-2), 2^(b-1)) ms, the first everything under 1 ms; interpolated geometrically inside a bucket."""
    total = sum(histogram)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(histogram, start=1):
        if n and seen + n >= rank:
            if i == 1:
                return 0.5
            lo, hi = 2.0 ** (i - 2), 2.0 ** (i - 1)
            within = (rank - seen) / n
            return lo * math.pow(hi / lo, within)
        seen += n
    return 2.0 ** (len(histogram) - 1)


def _sum(histograms: list[list[int]]) -> list[int]:
    out = [0] * HISTOGRAM_BUCKETS
    for h in histograms:
        for i, n in enumerate(h[:HISTOGRAM_BUCKETS]):
            out[i] += int(n)
    return out


async def runs_chart(
    conn: Conn, range_name: str = "1h", function_id: UUID | None = None, now: datetime | None = None
) -> Chart:
    if range_name not in RANGES:
        raise InvalidInput(f"range must be one of {', '.join(RANGES)}")
    span, bucket_s = RANGES[range_name]
    now = now or datetime.now(UTC)
    epoch = now.timestamp()
    last = datetime.fromtimestamp(epoch - epoch % bucket_s, UTC)
    since = last - span + timedelta(seconds=bucket_s)
    rows = {r["at"]: r for r in await inspect.run_chart(conn, since, bucket_s, function_id)}
    live = await inspect.live_count(conn, function_id)
    concurrency = tuple(await inspect.concurrency_in_use(conn, function_id))
    empty = {"created": 0, "completed": 0, "failed": 0, "cancelled": 0, "duration_ms": []}
    slots = [since + timedelta(seconds=bucket_s * i) for i in range(int(span.total_seconds() // bucket_s))]
    # backlog at the end of a bucket = live now - made after it + ended after it
    backlog = live
    buckets: list[Bucket] = []
    for at in reversed(slots):
        r = rows.get(at, empty)
        hist = _sum([list(r["duration_ms"])]) if r["duration_ms"] else [0] * HISTOGRAM_BUCKETS
        buckets.append(Bucket(at, int(r["created"]), int(r["completed"]), int(r["failed"]), int(r["cancelled"]),
                              max(backlog, 0), percentile(hist, 0.5), percentile(hist, 0.99)))
        backlog += int(r["completed"]) + int(r["failed"]) + int(r["cancelled"]) - int(r["created"])
    buckets.reverse()
    overall = _sum([list(r["duration_ms"]) for r in rows.values() if r["duration_ms"]])
    return Chart(range_name, bucket_s, since, tuple(buckets), live, percentile(overall, 0.5),
                 percentile(overall, 0.99), concurrency)
