"""pgqueue.login_admit_v1 called directly with an injected `now`: exact waits, doubling, the cap, the
account key, forgetting, and what a refused attempt leaves behind. No sleeping."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
ADDRESS, OTHER, ACCOUNT = "address:192.0.2.1", "address:192.0.2.2", "account:dashboard"
LOCKOUT_MS, MAX_LOCKOUT_MS, FORGET_MS = 15_000, 120_000, 3_600_000


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


def admit(conn: psycopg.Connection, t: float, *keys: tuple[str, int]) -> dict[str, tuple[int, int, int]]:
    """{key: (failures, wait_ms, lock_ms)} for one attempt at T0 + t seconds."""
    keys = keys or ((ADDRESS, 5), (ACCOUNT, 20))
    found = conn.execute(
        "SELECT key, failures, wait_ms, lock_ms FROM pgqueue.login_admit_v1(%s, %s, %s, %s, %s, %s)",
        ([k for k, _ in keys], [n for _, n in keys], LOCKOUT_MS, MAX_LOCKOUT_MS, FORGET_MS,
         T0 + timedelta(seconds=t)),
    ).fetchall()
    return {key: (failures, wait, lock) for key, failures, wait, lock in found}


def stored(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT key, failures FROM pgqueue.login_failures").fetchall())  # type: ignore[arg-type]


def test_five_attempts_are_counted_then_the_address_waits_15_s(conn: psycopg.Connection) -> None:
    for n in range(1, 5):
        assert admit(conn, 0)[ADDRESS] == (n, 0, 0)
    assert admit(conn, 0) == {ADDRESS: (5, 0, 15_000), ACCOUNT: (5, 0, 0)}  # the 5th sets the wait
    assert admit(conn, 0) == {ADDRESS: (5, 15_000, 0), ACCOUNT: (5, 0, 0)}  # refused, nothing counted
    assert admit(conn, 14.9)[ADDRESS] == (5, 100, 0)
    assert stored(conn) == {ADDRESS: 5, ACCOUNT: 5}


def test_the_wait_doubles_with_each_failure_up_to_the_cap(conn: psycopg.Connection) -> None:
    t = 0.0
    for _ in range(5):
        admit(conn, t)
    locks = []
    for _ in range(6):
        t += 200  # past any wait so far
        failures, wait, lock = admit(conn, t)[ADDRESS]
        assert failures == 6 + len(locks)
        assert wait == 0
        locks.append(lock)
    assert locks == [30_000, 60_000, 120_000, 120_000, 120_000, 120_000]
    assert admit(conn, t + 119.5)[ADDRESS][1] == 500


def test_account_failures_from_many_addresses_make_every_address_wait(conn: psycopg.Connection) -> None:
    for i in range(20):
        admit(conn, 0, (f"address:198.51.100.{i}", 5), (ACCOUNT, 20))
    assert admit(conn, 1, (OTHER, 5), (ACCOUNT, 20)) == {OTHER: (0, 0, 0), ACCOUNT: (20, 14_000, 0)}
    # the refused attempt from a new address left no row behind
    assert OTHER not in stored(conn)


def test_counts_are_forgotten_after_the_window_and_stale_rows_pruned(conn: psycopg.Connection) -> None:
    for _ in range(5):
        admit(conn, 0)
    admit(conn, 0, (OTHER, 5))
    later = FORGET_MS / 1000 + 1
    assert admit(conn, later)[ADDRESS] == (1, 0, 0)  # counting afresh
    assert admit(conn, later, (ACCOUNT, 20), ("address:203.0.113.9", 5))[ACCOUNT] == (2, 0, 0)
    assert OTHER not in stored(conn)  # forgotten rows of other keys go, a few per attempt


def test_keys_and_limits_must_pair_up(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.RaiseException, match="2 keys but 1 limits"):
        conn.execute("SELECT * FROM pgqueue.login_admit_v1(ARRAY['a', 'b'], ARRAY[5], 1, 1, 1, now())")
