"""Pausing a function holds its queued work, in SQL: pgqueue.function_pause_v1, the claim
(claim_v4), the worker's next-due query, the rescuer's hold sweep and the inspection views."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from pgqueue.db.queries import q
from tests.sql.test_flow_control import _function, _runs


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


def pause(conn: psycopg.Connection, fn: uuid.UUID, paused: bool = True) -> int:
    row = conn.execute(q("function_set_paused"), {"id": fn, "paused": paused}).fetchone()
    assert row is not None
    return int(row[3])


def claim(conn: psycopg.Connection, n: int = 50) -> list[str]:
    rows = conn.execute("SELECT run_id FROM pgqueue.claim_v4('w', %s, 30000)", (n,)).fetchall()
    return [r[0] for r in rows]


def next_due(conn: psycopg.Connection) -> object:
    row = conn.execute(q("queue_next_due")).fetchone()
    assert row is not None
    return row[0]


def test_a_paused_functions_work_is_held_and_other_functions_are_not(conn: psycopg.Connection) -> None:
    held, free = _function(conn, "held"), _function(conn, "free")
    held_runs = _runs(conn, held, 3)
    free_runs = _runs(conn, free, 2)
    assert pause(conn, held) == 3

    assert sorted(claim(conn)) == sorted(free_runs)
    assert claim(conn) == []
    # parked: the legacy claim (workers of an earlier release during a deploy) does not take them either
    assert conn.execute("SELECT count(*) FROM pgqueue.claim_v1('w', 50, 30000)").fetchone() == (0,)
    assert next_due(conn) is None  # an idle worker has nothing to wake up for
    depth = conn.execute("SELECT status, items FROM pgqueue.queue_depth WHERE function_slug = 'held'")
    assert depth.fetchall() == [("paused", 3)]
    metrics = conn.execute("SELECT items_due FROM pgqueue.metrics()").fetchone()
    assert metrics == (0,)

    assert conn.execute("SELECT run_id FROM pgqueue.claim_v4('w', 50, 30000)").fetchall() == []
    assert pause(conn, held, paused=False) == 3
    assert sorted(claim(conn)) == sorted(held_runs)


def test_resume_releases_held_work_in_order(conn: psycopg.Connection) -> None:
    fn = _function(conn, "ordered")
    runs = _runs(conn, fn, 3)
    # due 10, 20 and 30 s ago (the last run the longest), and the first run with 60 s of priority
    for n, run in enumerate(runs, start=1):
        conn.execute("UPDATE pgqueue.queue_items SET run_at = now() - make_interval(secs => %s)"
                     " WHERE run_id = %s", (10 * n, run))
    conn.execute("UPDATE pgqueue.queue_items SET priority_s = 60 WHERE run_id = %s", (runs[0],))
    pause(conn, fn)
    pause(conn, fn, paused=False)
    assert [claim(conn, 1) for _ in range(4)] == [[runs[0]], [runs[2]], [runs[1]], []]


def test_work_queued_after_the_pause_is_held_too(conn: psycopg.Connection) -> None:
    fn = _function(conn, "late")
    pause(conn, fn)
    # what an in-flight call queues after the pause (its next step, a retry) is not parked yet
    late = _runs(conn, fn, 2)
    assert claim(conn) == []
    assert next_due(conn) is None
    assert conn.execute(q("queue_hold_paused")).fetchone() == (2,)  # the rescuer parks it
    assert conn.execute("SELECT count(*) FROM pgqueue.queue_items WHERE blocked_key = %s",
                        (f"$paused:{fn}",)).fetchone() == (2,)
    assert conn.execute(q("queue_hold_paused")).fetchone() == (0,)
    pause(conn, fn, paused=False)
    assert sorted(claim(conn)) == sorted(late)


def test_a_resume_takes_back_items_parked_on_a_concurrency_key(conn: psycopg.Connection) -> None:
    fn = _function(conn, "keyed")
    runs = _runs(conn, fn, 3, ckeys=["fn:keyed"], climits=[1])
    [first] = claim(conn)
    assert parked_on_key(conn) == 2
    assert pause(conn, fn) == 2  # parked on the key, now held for the pause
    # the leased call ends: its slot's wake-up finds nothing parked on the key
    conn.execute("DELETE FROM pgqueue.queue_items WHERE run_id = %s", (first,))
    assert claim(conn) == []
    pause(conn, fn, paused=False)
    assert claim(conn) == [runs[1]]  # the key admits one again; the other waits on it
    assert parked_on_key(conn) == 1
    assert claim(conn) == []


def parked_on_key(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM pgqueue.queue_items WHERE blocked_key = 'fn:keyed'").fetchone()
    assert row is not None
    return int(row[0])


def test_pause_of_an_unknown_function_changes_nothing(conn: psycopg.Connection) -> None:
    assert conn.execute(q("function_set_paused"), {"id": uuid.uuid4(), "paused": True}).fetchone() is None
