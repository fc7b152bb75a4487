"""pgqueue.run_counts_add_v1, the per-minute counts the charts and the dashboard read instead of
counting runs: each run lands in its function's minute, by status, and its duration in the
histogram's power-of-two bucket; adding to a minute already counted sums."""

from __future__ import annotations

import math
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


def bucket(ms: float) -> int:
    """The histogram's bucket of a duration, 1-based: 1 below 1 ms, then one per doubling, 25 caps it."""
    return min(25, max(1, math.floor(math.log(max(ms, 0.5)) / math.log(2)) + 2))


@pytest.mark.parametrize("hash_joins", [True, False], ids=["planner-default", "as-in-the-group-commit"])
def test_counts_and_histograms_per_function_and_minute(conn: psycopg.Connection, hash_joins: bool) -> None:
    rng = random.Random(7)
    functions = [uuid.uuid4() for _ in range(30)]
    base = datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC)
    expected_status: Counter[tuple[datetime, uuid.UUID, str]] = Counter()
    expected_hist: dict[tuple[datetime, uuid.UUID], list[int]] = {}
    if not hash_joins:  # complete_v2 runs with hash and merge joins off, and so does this function within it
        conn.execute("SET enable_hashjoin = off")
        conn.execute("SET enable_mergejoin = off")
    for _ in range(3):  # the second and third calls add to rows the first made
        fns, statuses, ats, durations = [], [], [], []
        for _ in range(200):
            fn, status = rng.choice(functions), rng.choice(["created", "completed", "failed", "cancelled"])
            at = base + timedelta(seconds=rng.randrange(0, 90))
            choices = [0.1, 0.7, 1.0, 3.0, 250.0, 9e9, rng.uniform(0, 5e4)]
            ms = None if status == "created" else rng.choice(choices)
            fns.append(fn), statuses.append(status), ats.append(at), durations.append(ms)
            minute = at.replace(second=0, microsecond=0)
            expected_status[(minute, fn, status)] += 1
            hist = expected_hist.setdefault((minute, fn), [0] * 25)
            if ms is not None:
                hist[bucket(ms) - 1] += 1
        conn.execute("SELECT pgqueue.run_counts_add_v1(%s::uuid[], %s::text[], %s::timestamptz[],"
                     " %s::float8[])", (fns, statuses, ats, durations))
    rows = conn.execute(
        "SELECT minute, function_id, sum(created)::int, sum(completed)::int, sum(failed)::int,"
        " sum(cancelled)::int, array_agg(duration_ms) FROM pgqueue.run_counts WHERE function_id = ANY(%s)"
        " GROUP BY minute, function_id", (functions,)).fetchall()
    assert rows
    assert {(m, f) for m, f, *_ in rows} == set(expected_hist)
    for minute, fn, created, completed, failed, cancelled, hists in rows:
        got = [sum(h[i] for h in hists) for i in range(25)]  # the shards of one minute and function
        assert got == expected_hist[(minute, fn)], (minute, fn)
        assert (created, completed, failed, cancelled) == tuple(
            expected_status[(minute, fn, s)] for s in ("created", "completed", "failed", "cancelled"))
