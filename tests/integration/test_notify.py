"""Workers are woken (NOTIFY pgqueue_queue) only by transactions that queued work: every commit
that sends a NOTIFY takes a cluster-wide lock, so a transition that queued nothing sends none."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from pgqueue.db.notify import QUEUE_CHANNEL
from pgqueue.db.pool import open_pool
from pgqueue.executor.apply import Applier
from pgqueue.models import QueueItem
from pgqueue.protocol.outcome import Op, Ops
from pgqueue.runs import transitions
from pgqueue.store import queue
from tests.sql.test_flow_control import _function, _runs


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


@pytest.fixture
def listener(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute(f"LISTEN {QUEUE_CHANNEL}")
        yield c


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    p = await open_pool(database_url, max_size=2)
    yield p
    await p.close()


def wakeups(listener: psycopg.Connection) -> int:
    """Notifications received since the last call (those of committed transactions arrive at once;
    a short wait lets a late one in)."""
    return sum(1 for _ in listener.notifies(timeout=0.3))


def pending_sibling(conn: psycopg.Connection, run_id: str) -> None:
    """Another step of the run still to come (a parallel step), so the run waits for it."""
    conn.execute("INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id, max_attempts, run_at) "
                 "SELECT id, function_id, 'call', 'sibling', 1, now() + interval '1 hour' FROM pgqueue.runs "
                 "WHERE id = %s", (run_id,))


async def test_continuing_a_run_wakes_workers_only_when_it_queues_a_call(
    conn: psycopg.Connection, listener: psycopg.Connection, pool: AsyncConnectionPool,
) -> None:
    fn = _function(conn, "continued")
    waiting, ready = _runs(conn, fn, 2)
    conn.execute("DELETE FROM pgqueue.queue_items")
    pending_sibling(conn, waiting)
    wakeups(listener)

    async with pool.connection() as c, c.transaction():
        await transitions.continue_run(c, waiting, fn, 1)  # its sibling is still pending
    assert wakeups(listener) == 0

    async with pool.connection() as c, c.transaction():
        await transitions.continue_run(c, ready, fn, 1)  # queues its next call
    assert wakeups(listener) == 1


async def _leased(pool: AsyncConnectionPool) -> QueueItem:
    async with pool.connection() as c:
        [item] = await queue.claim(c, "w", 1, 30_000)
    return item


def _ops(*ops: Op) -> Ops:
    return Ops(ops=ops, request_version=None, no_retry=False, retry_after_s=None)


async def test_an_answer_wakes_workers_only_when_it_queues_work(
    conn: psycopg.Connection, listener: psycopg.Connection, pool: AsyncConnectionPool,
) -> None:
    fn = _function(conn, "answered")
    applier = Applier()

    # A parallel step's output while its sibling still runs: stored, nothing queued.
    [run] = _runs(conn, fn, 1)
    item = await _leased(pool)
    pending_sibling(conn, run)
    wakeups(listener)
    async with pool.connection() as c:
        result = await applier.apply(c, item, _ops(Op("StepRun", "one", data=1, has_data=True)),
                                     started_at=datetime.now(UTC))
    assert result.applied
    assert wakeups(listener) == 0
    stored = conn.execute("SELECT step_id FROM pgqueue.steps WHERE run_id = %s", (run,)).fetchall()
    assert stored == [("one",)]

    # A planned step is queued work.
    conn.execute("DELETE FROM pgqueue.queue_items")
    _runs(conn, fn, 1)
    item = await _leased(pool)
    wakeups(listener)
    async with pool.connection() as c:
        await applier.apply(c, item, _ops(Op("StepPlanned", "two", name="two")),
                            started_at=datetime.now(UTC))
    assert wakeups(listener) == 1
