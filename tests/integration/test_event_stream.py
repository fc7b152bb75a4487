"""The event stream loses nothing: the runner claims pgqueue.event_inbox rows with SKIP LOCKED, so
events whose transactions commit out of order, claims that roll back, and lost NOTIFYs only delay
work. A cursor over event ids or sequence numbers would skip an event that commits late."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from pgqueue.apps import registration
from pgqueue.db.notify import Wakeup
from pgqueue.db.pool import open_pool
from pgqueue.events import ingest
from pgqueue.models import Event, QueueItem
from pgqueue.queue.worker import Worker
from pgqueue.runner.loop import Runner, RunnerTick
from pgqueue.store import apps, events

EVENT = "shop/order.created"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    pool = await open_pool(database_url, max_size=4)
    try:
        async with pool.connection() as conn, conn.transaction():
            await apps.sync(
                conn,
                registration.parse_register(
                    {
                        "appName": "shop",
                        "url": "http://127.0.0.1:9/api/inngest",
                        "functions": [{"id": "shop-on-order", "triggers": [{"event": EVENT}]}],
                    }
                ),
            )
        yield pool
    finally:
        await pool.close()


def event(label: str) -> list[Event]:
    body = f'{{"name": "{EVENT}", "data": {{"label": "{label}"}}}}'.encode()
    return ingest.parse_events(body, seed_header=None, max_event_bytes=1 << 20, max_events=10)


async def run_events(pool: AsyncConnectionPool) -> list[str]:
    """Event ids that have a run, in run-creation order."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT event_id FROM pgqueue.runs ORDER BY created_at, id")
        return [r["event_id"] for r in await cur.fetchall()]


async def inbox_seq(conn: psycopg.AsyncConnection, event_id: str) -> int:
    cur = await conn.execute("SELECT seq FROM pgqueue.event_inbox WHERE event_id = %s", (event_id,))
    row = await cur.fetchone()
    assert row is not None
    return int(row["seq"])


async def test_an_event_committed_late_is_still_processed(
    pool: AsyncConnectionPool, database_url: str
) -> None:
    runner = Runner(pool, wakeup=Wakeup())
    [a], [b] = event("A"), event("B")
    async with await psycopg.AsyncConnection.connect(
        database_url, autocommit=True, row_factory=dict_row
    ) as slow:
        async with slow.transaction():
            # A is ingested first (lower inbox seq, lower ULID) but its transaction stays open.
            assert await events.ingest(slow, [a]) == 1
            seq_a = await inbox_seq(slow, a.id)
            async with pool.connection() as conn, conn.transaction():
                assert await events.ingest(conn, [b]) == 1
            async with pool.connection() as conn:
                seq_b = await inbox_seq(conn, b.id)
            assert seq_a < seq_b and a.id < b.id  # B committed first although it sorts after A

            assert await runner.run_once() == RunnerTick(events_seen=1, runs_created=1)
            assert await run_events(pool) == [b.id]
            assert await runner.run_once() == RunnerTick(0, 0)  # A is not visible yet
        # A commits now, after B was processed: a cursor past seq_b would never look back.
    assert await runner.run_once() == RunnerTick(events_seen=1, runs_created=1)
    assert await run_events(pool) == [b.id, a.id]
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM pgqueue.event_inbox")
        assert (await cur.fetchone()) == {"n": 0}
        cur = await conn.execute("SELECT count(*) AS n FROM pgqueue.queue_items WHERE kind = 'call'")
        assert (await cur.fetchone()) == {"n": 2}


async def test_a_claim_held_by_another_runner_is_skipped_and_a_rolled_back_claim_comes_back(
    pool: AsyncConnectionPool, database_url: str
) -> None:
    runner = Runner(pool, wakeup=Wakeup())
    [a], [b] = event("A"), event("B")
    async with pool.connection() as conn, conn.transaction():
        await events.ingest(conn, [a])
        await events.ingest(conn, [b])
    # Not autocommit: the claim below runs in an implicit transaction left open.
    async with await psycopg.AsyncConnection.connect(database_url, row_factory=dict_row) as other:
        # Another runner claims A (oldest first) and stalls before creating runs.
        assert [r["id"] for r in await events.claim_inbox(other, 1)] == [a.id]
        # This runner neither waits for that lock nor sees A: it takes B.
        tick = await asyncio.wait_for(runner.run_once(), timeout=10)
        assert tick == RunnerTick(1, 1)
        assert await run_events(pool) == [b.id]
        # The other runner crashes: its claim rolls back and A is back in the inbox.
        await other.rollback()
    assert await runner.run_once() == RunnerTick(1, 1)
    assert await run_events(pool) == [b.id, a.id]


async def test_a_lost_notify_only_delays_work_until_the_next_poll(pool: AsyncConnectionPool) -> None:
    # No Listener: the NOTIFY sent by ingest reaches nobody and the wake-up is never set.
    runner = Runner(pool, wakeup=Wakeup(), poll_interval_s=0.05)
    runner.start()
    try:
        [a] = event("A")
        async with pool.connection() as conn, conn.transaction():
            await events.ingest(conn, [a])
        async with asyncio.timeout(10):
            while await run_events(pool) != [a.id]:
                await asyncio.sleep(0.02)
    finally:
        await runner.stop()


async def test_the_runner_hands_the_calls_it_queues_to_its_worker_in_the_same_transaction(
    pool: AsyncConnectionPool,
) -> None:
    started: list[QueueItem] = []
    release = asyncio.Event()

    async def execute(item: QueueItem) -> None:
        started.append(item)
        await release.wait()

    worker = Worker(pool, execute, wakeup=Wakeup(), lease_ms=60_000)  # its claim loop never runs
    runner = Runner(pool, wakeup=Wakeup(), handoff=worker)
    [a] = event("A")
    async with pool.connection() as conn:
        await events.ingest(conn, [a])

    assert await runner.run_once() == RunnerTick(1, 1, handed=1)
    await asyncio.sleep(0)  # the adopted call's task starts
    assert [i.kind for i in started] == ["call"] and started[0].context is not None
    assert started[0].context["status"] == "running"
    async with pool.connection() as conn:
        run = await (await conn.execute(
            "SELECT r.created_at, r.started_at, q.state::text AS state, q.leased_by FROM pgqueue.runs r"
            " JOIN pgqueue.queue_items q ON q.run_id = r.id WHERE r.event_id = %s", (a.id,))).fetchone()
    # leased and started in the runner's transaction (one now() for both)
    assert (run["state"], run["leased_by"], run["started_at"]) == ("leased", worker.name, run["created_at"])
    release.set()
    await asyncio.gather(*(task for _, task in worker.inflight.values()))


async def test_a_hand_off_rolled_back_with_its_transaction_leases_nothing(pool: AsyncConnectionPool) -> None:
    async def execute(item: QueueItem) -> None:
        raise AssertionError("nothing was handed over")

    worker = Worker(pool, execute, wakeup=Wakeup(), lease_ms=60_000)

    class FailsAtCommit:
        """The claim succeeds; the runner's COMMIT then fails (a deferred check, standing in for
        anything that fails a commit)."""

        async def claim_in(self, conn: psycopg.AsyncConnection) -> list[QueueItem]:
            items = await worker.claim_in(conn)
            assert items
            await conn.execute("CREATE TEMP TABLE doomed (x int)")
            await conn.execute("CREATE FUNCTION pg_temp.refuse() RETURNS trigger LANGUAGE plpgsql AS "
                               "$$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$")
            await conn.execute("CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON doomed DEFERRABLE INITIALLY "
                               "DEFERRED FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse()")
            await conn.execute("INSERT INTO doomed VALUES (1)")
            return items

        def adopt(self, items: list[QueueItem]) -> None:
            worker.adopt(items)

        def abandon(self, items: list[QueueItem]) -> None:
            worker.abandon(items)

    runner = Runner(pool, wakeup=Wakeup(), handoff=FailsAtCommit())
    [a] = event("A")
    async with pool.connection() as conn:
        await events.ingest(conn, [a])
    with pytest.raises(psycopg.errors.RaiseException, match="refused at commit"):
        await runner.run_once()
    assert worker.inflight == {} and worker._handed == 0  # the slots are free again
    async with pool.connection() as conn:
        leased = await (await conn.execute(
            "SELECT count(*) AS n FROM pgqueue.queue_items WHERE state = 'leased'")).fetchone()
    assert leased["n"] == 0 and await run_events(pool) == []  # all rolled back: the event is in the inbox
    assert await Runner(pool, wakeup=Wakeup()).run_once() == RunnerTick(1, 1)
