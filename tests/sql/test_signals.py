"""Signal waits and pgqueue.signal_send_v2 on real PostgreSQL, under real concurrency (one
connection per actor): one waiting run per signal name (fail / replace, even when two runs take
the name at the same moment), an expired holder gives the name up, and however many senders race,
a signal resumes its run exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from pgqueue import ids
from pgqueue.db.pool import open_pool
from pgqueue.store import pauses


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    p = await open_pool(database_url, max_size=12)
    yield p
    await p.close()


async def _function(pool: AsyncConnectionPool) -> uuid.UUID:
    async with pool.connection() as conn:
        app = await (await conn.execute(
            "INSERT INTO pgqueue.apps (name, url) VALUES ('sig', 'http://127.0.0.1:9') RETURNING id"
        )).fetchone()
        fn = await (await conn.execute(
            "INSERT INTO pgqueue.functions (app_id, slug, name, url, config) VALUES "
            "(%s, 'sig-fn', 'sig', 'http://127.0.0.1:9', '{}') RETURNING id", (app["id"],))).fetchone()
    return fn["id"]


async def _run(pool: AsyncConnectionPool, fn: uuid.UUID) -> str:
    event_id, run_id = ids.new_ulid(), ids.new_ulid()
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO pgqueue.events (id, name, data, ts) VALUES (%s, 'sig/go', %s, %s)",
                           (event_id, Jsonb({}), ids.ulid_time_ms(event_id)))
        await conn.execute(
            "INSERT INTO pgqueue.runs (id, function_id, event_id, event_ids, status, max_attempts,"
            " started_at) VALUES (%s, %s, %s, ARRAY[%s], 'running', 3, now())",
            (run_id, fn, event_id, event_id))
    return run_id


async def _wait(pool: AsyncConnectionPool, run_id: str, signal: str, *, replace: bool = False,
                timeout_s: float = 60) -> None:
    async with pool.connection() as conn, conn.transaction():
        await pauses.create_signal(conn, run_id=run_id, step_id="s1", step_name="wait", signal=signal,
                                   timeout_s=timeout_s, replace=replace)


async def _holders(pool: AsyncConnectionPool, signal: str) -> list[str]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT run_id FROM pgqueue.pauses WHERE signal = %s", (signal,))
        rows = await cur.fetchall()
    return [r["run_id"] for r in rows]


async def _take_at_once(
    pool: AsyncConnectionPool, first: str, second: str, signal: str, *, replace: bool
) -> None:
    """`first` takes the signal in an open transaction; `second` tries while it is still open
    (its insert waits on the unique index), then `first` commits."""
    async with pool.connection() as conn:
        async with conn.transaction():
            await pauses.create_signal(conn, run_id=first, step_id="s1", step_name="wait", signal=signal,
                                       timeout_s=60, replace=False)
            contender = asyncio.create_task(_wait(pool, second, signal, replace=replace))
            await asyncio.sleep(0.5)
            assert not contender.done(), "the second wait should block on the first one's uncommitted pause"
    await contender


async def test_a_second_run_is_refused_even_at_the_same_moment(pool: AsyncConnectionPool) -> None:
    fn = await _function(pool)
    first, second = await _run(pool, fn), await _run(pool, fn)
    with pytest.raises(pauses.SignalConflict):
        await _take_at_once(pool, first, second, "contended", replace=False)
    assert await _holders(pool, "contended") == [first]


async def test_replace_takes_the_name_over_even_at_the_same_moment(pool: AsyncConnectionPool) -> None:
    fn = await _function(pool)
    first, second = await _run(pool, fn), await _run(pool, fn)
    await _take_at_once(pool, first, second, "replaced", replace=True)
    assert await _holders(pool, "replaced") == [second]
    async with pool.connection() as conn:
        kept = await (await conn.execute(
            "SELECT kind, signal FROM pgqueue.pauses WHERE run_id = %s", (first,))).fetchall()
    assert kept == [{"kind": "signal", "signal": None}]  # still waiting, for its timeout


async def test_an_expired_holder_gives_the_name_up(pool: AsyncConnectionPool) -> None:
    fn = await _function(pool)
    stale, fresh = await _run(pool, fn), await _run(pool, fn)
    await _wait(pool, stale, "stale", timeout_s=0)
    await _wait(pool, fresh, "stale")  # onConflict "fail", but the holder's timeout is due
    assert await _holders(pool, "stale") == [fresh]


async def test_the_same_step_reporting_its_wait_again_is_no_conflict(pool: AsyncConnectionPool) -> None:
    fn = await _function(pool)
    run_id = await _run(pool, fn)
    await _wait(pool, run_id, "again")
    async with pool.connection() as conn, conn.transaction():
        again = await pauses.create_signal(conn, run_id=run_id, step_id="s1", step_name="wait",
                                           signal="again", timeout_s=60, replace=False)
    assert again is None
    assert await _holders(pool, "again") == [run_id]


async def test_racing_senders_resume_the_run_exactly_once(pool: AsyncConnectionPool) -> None:
    fn = await _function(pool)
    run_id = await _run(pool, fn)
    await _wait(pool, run_id, "go")
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id, max_attempts, run_at)"
            " VALUES (%s, %s, 'timeout', 's1', 3, now() + interval '1 minute')", (run_id, fn))

    async def send(n: int) -> str | None:
        async with pool.connection() as conn, conn.transaction():
            return await pauses.signal_send(conn, "go", {"sender": n})

    results = await asyncio.gather(*(send(n) for n in range(10)))
    winners = [n for n, r in enumerate(results) if r is not None]
    assert len(winners) == 1 and results[winners[0]] == run_id
    async with pool.connection() as conn:
        steps = await (await conn.execute(
            "SELECT step_id, op, memo FROM pgqueue.steps WHERE run_id = %s", (run_id,))).fetchall()
        items = await (await conn.execute(
            "SELECT kind, step_id FROM pgqueue.queue_items WHERE run_id = %s", (run_id,))).fetchall()
        cur = await conn.execute("SELECT count(*) AS step_count FROM pgqueue.steps WHERE run_id = %s", (run_id,))
        run = await cur.fetchone()
    assert steps == [{"step_id": "s1", "op": "WaitForSignal",
                      "memo": {"data": {"signal": "go", "data": {"sender": winners[0]}}}}]
    assert items == [{"kind": "call", "step_id": "step"}]  # the timeout went, the next call came
    assert run["step_count"] == 1
    assert await _holders(pool, "go") == []


@pytest.mark.parametrize(("signal", "data", "fragment"), [
    ("", None, "non-empty string"),
    ("x" * 513, None, "longer than 512 characters"),
    ("deep", "nest", "nested deeper than 128 levels"),
])
async def test_send_refuses_bad_input_with_a_clear_message(
    pool: AsyncConnectionPool, signal: str, data: object, fragment: str
) -> None:
    if data == "nest":
        for _ in range(130):
            data = [data]
    async with pool.connection() as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=fragment):
            await pauses.signal_send(conn, signal, data)
