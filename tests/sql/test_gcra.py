"""Rate limit and throttle admissions (GCRA) decided in SQL with an injected `now`, checked against
their documented semantics over many arrival patterns.

rateLimit {limit L, period P}: at most L runs start in any window of length P (Inngest documents
`limit` as "the maximum number of functions to run in the given time period"). pgqueue uses GCRA
with emission interval T = ceil(P / L) (whole microseconds, so L * T >= P) and no tolerance.

throttle {limit L, period P, burst B}: Inngest's queue GCRA: L + B starts at once on an idle key,
then one start every T = P / L. A refused start is told exactly how long to wait.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
US = 1_000_000

RATE_LIMIT = "pgqueue.rate_limit_admit_v2"
THROTTLE = "pgqueue.throttle_admit_v2"


@pytest.fixture(scope="module")
def conn(module_database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(module_database_url, autocommit=True) as c:
        yield c


def at(us: int) -> datetime:
    return T0 + timedelta(microseconds=us)


_keys = iter(range(10**9))


def fresh_key(kind: str) -> str:
    return f"{kind}:test:{next(_keys)}"


def rate_limit(conn: psycopg.Connection, key: str, limit: int, period_ms: int, t_us: int) -> bool:
    row = conn.execute(f"SELECT {RATE_LIMIT}(%s, %s, %s, %s)", (key, limit, period_ms, at(t_us))).fetchone()
    assert row is not None and row[0] is not None
    return bool(row[0])


def rate_limit_each(
    conn: psycopg.Connection, key: str, limit: int, period_ms: int, times: list[int]
) -> list[bool]:
    """One decision per arrival, in order, pipelined (the server still runs them one by one)."""
    with conn.cursor() as cur:
        cur.executemany(f"SELECT {RATE_LIMIT}(%s, %s, %s, %s)",
                        [(key, limit, period_ms, at(t)) for t in times], returning=True)
        decisions = []
        while True:
            decisions.append(bool(cur.fetchone()[0]))  # type: ignore[index]
            if not cur.nextset():
                return decisions


def throttle_each(
    conn: psycopg.Connection, key: str, limit: int, period_ms: int, burst: int, times: list[int]
) -> list[float]:
    with conn.cursor() as cur:
        cur.executemany(f"SELECT {THROTTLE}(%s, %s, %s, %s, %s)",
                        [(key, limit, period_ms, burst, at(t)) for t in times], returning=True)
        waits = []
        while True:
            waits.append(float(cur.fetchone()[0]))  # type: ignore[index]
            if not cur.nextset():
                return waits


def throttle(conn: psycopg.Connection, key: str, limit: int, period_ms: int, burst: int, t_us: int) -> float:
    row = conn.execute(f"SELECT {THROTTLE}(%s, %s, %s, %s, %s)",
                       (key, limit, period_ms, burst, at(t_us))).fetchone()
    assert row is not None and row[0] is not None
    return float(row[0])


def emission_us(limit: int, period_ms: int) -> int:
    return -(-period_ms * 1000 // limit)  # ceil: L * T >= P, so L admissions always span a full period


# -- arrival patterns ------------------------------------------------------------------------------


def patterns(limit: int, period_ms: int, seed: int) -> Iterator[tuple[str, list[int]]]:
    """Arrival times (microseconds from T0, non-decreasing) that stress a limiter of L per P."""
    rng = random.Random(seed)
    p_us = period_ms * 1000
    t_us = emission_us(limit, period_ms)
    span = 2 * p_us + 3 * t_us  # long enough for every window of length P to be tried
    yield "all-at-once", [0] * (3 * limit + 5)
    yield "dense", list(range(0, span, max(1, t_us // 7)))
    for name, step in (("every-T-minus-1us", t_us - 1), ("every-T", t_us), ("every-T-plus-1us", t_us + 1)):
        yield name, list(range(0, span, max(1, step)))
    yield "period-edges", sorted(max(0, k * p_us + d) for k in range(4) for d in (-1, 0, 0, 1))
    yield "emission-edges", sorted(max(0, k * t_us + d) for k in range(3 * limit) for d in (-1, 0, 0, 1))
    for i in range(6):
        times, t = [], 0
        while t < span:
            if rng.random() < 0.3:  # a burst at one instant
                times.extend([t] * rng.randint(2, min(2 * limit + 2, 24)))
            else:
                times.append(t)
            t += int(rng.expovariate(3.0 / t_us)) if i % 2 else rng.randint(0, 2 * t_us)
        yield f"random-{i}", times


LIMITS = [(1, 1000), (2, 60_000), (3, 1000), (7, 60_000), (10, 60_000), (60, 60_000)]


# -- rate limit ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "period_ms"), LIMITS)
def test_rate_limit_never_admits_more_than_limit_in_any_period(
    conn: psycopg.Connection, limit: int, period_ms: int
) -> None:
    p_us = period_ms * 1000
    for name, times in patterns(limit, period_ms, seed=limit * 1000 + period_ms):
        key = fresh_key("ratelimit")
        decisions = rate_limit_each(conn, key, limit, period_ms, times)
        admitted = [t for t, ok in zip(times, decisions, strict=True) if ok]
        assert admitted, name
        # any half-open window [s, s + P) holds at most L admissions <=> a[i + L] - a[i] >= P
        crowded = [(a, b) for a, b in zip(admitted, admitted[limit:], strict=False) if b - a < p_us]
        assert not crowded, f"{name}: {limit + 1} admitted within {period_ms} ms, e.g. at {crowded[0]} us"


@pytest.mark.parametrize(("limit", "period_ms"), LIMITS)
def test_rate_limit_admits_exactly_when_one_emission_interval_has_passed(
    conn: psycopg.Connection, limit: int, period_ms: int
) -> None:
    """The decision is the GCRA one to the microsecond: an event is admitted iff at least
    T = ceil(P / L) has passed since the last admitted one (no tolerance, so no early admission)."""
    t_us = emission_us(limit, period_ms)
    for name, times in patterns(limit, period_ms, seed=7 * limit + period_ms):
        key = fresh_key("ratelimit")
        last: int | None = None
        for t, admitted in zip(times, rate_limit_each(conn, key, limit, period_ms, times), strict=True):
            expected = last is None or t - last >= t_us
            assert admitted is expected, (name, t, last)
            if expected:
                last = t


def test_rate_limit_of_10_per_60s_admits_10_per_minute_not_19(conn: psycopg.Connection) -> None:
    key = fresh_key("ratelimit")
    # an event every 100 ms for five minutes
    flood = list(range(0, 300 * US, US // 10))
    admitted = [t for t, ok in zip(flood, rate_limit_each(conn, key, 10, 60_000, flood), strict=True) if ok]
    assert admitted == [k * 6 * US for k in range(50)]  # one per 6 s bucket, the first at once
    in_any_minute = max(sum(1 for a in admitted if s <= a < s + 60 * US) for s in admitted)
    assert in_any_minute == 10


def test_rate_limit_keys_are_independent(conn: psycopg.Connection) -> None:
    a, b = fresh_key("ratelimit"), fresh_key("ratelimit")
    assert rate_limit(conn, a, 1, 60_000, 0) is True
    assert rate_limit(conn, a, 1, 60_000, 0) is False
    assert rate_limit(conn, b, 1, 60_000, 0) is True
    assert rate_limit(conn, a, 1, 60_000, 60 * US - 1) is False
    assert rate_limit(conn, a, 1, 60_000, 60 * US) is True


# -- throttle --------------------------------------------------------------------------------------


def drain(conn: psycopg.Connection, limit: int, period_ms: int, burst: int, backlog: int) -> list[int]:
    """Start `backlog` runs queued at T0 the way the claim does: try, and when refused come back
    exactly when told. Returns the start times (microseconds from T0)."""
    key = fresh_key("throttle")
    starts: list[int] = []
    t = 0
    while len(starts) < backlog:
        wait = throttle(conn, key, limit, period_ms, burst, t)
        if wait == 0:
            starts.append(t)
        else:
            assert wait > 0
            t += round(wait * US)
    return starts


@pytest.mark.parametrize("burst", [1, 2, 5])
def test_throttle_first_period_admissions(conn: psycopg.Connection, burst: int) -> None:
    """limit 4 per 60 s: L + B start at once, then one every 15 s (Inngest's queue GCRA)."""
    limit, period_ms = 4, 60_000
    starts = drain(conn, limit, period_ms, burst, backlog=limit + burst + 6)
    t = 15 * US
    assert starts == [0] * (limit + burst) + [k * t for k in range(1, 7)]
    assert sum(1 for s in starts if s < 60 * US) == 2 * limit + burst - 1


def test_throttle_burst_zero_means_the_default_of_one(conn: psycopg.Connection) -> None:
    assert drain(conn, 2, 1000, 0, backlog=4) == drain(conn, 2, 1000, 1, backlog=4) == [0, 0, 0, 500_000]


@pytest.mark.parametrize(("limit", "period_ms"), LIMITS)
@pytest.mark.parametrize("burst", [1, 3])
def test_throttle_decisions_and_waits_match_the_gcra_model(
    conn: psycopg.Connection, limit: int, period_ms: int, burst: int
) -> None:
    """T = ceil(P / L), tolerance tau = T * (L + B - 1): a start at t is admitted iff
    max(tat, t) - tau <= t, and a refused one is told to wait max(tat, t) - tau - t."""
    t_us = emission_us(limit, period_ms)
    tau = t_us * (limit + burst - 1)
    for name, times in patterns(limit, period_ms, seed=burst * 31 + limit):
        key = fresh_key("throttle")
        tat: int | None = None
        for t, wait in zip(times, throttle_each(conn, key, limit, period_ms, burst, times), strict=True):
            base = t if tat is None else max(tat, t)
            if base - tau <= t:
                assert wait == 0, (name, t)
                tat = base + t_us
            else:
                assert round(wait * US) == base - tau - t, (name, t)
