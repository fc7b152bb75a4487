"""Debounce and batch windows under concurrent runners, through the real RunStarter.

Two runners' transactions interleave: the first opens a window and has not committed when the
second sees the same key. Without serialisation, the second finds no window row (a `SELECT ... FOR
UPDATE` of a row that does not exist yet locks nothing), opens its own, and both runs execute. With
it, the second waits for the first to commit and then joins its window: exactly one run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from pgqueue import ids
from pgqueue.apps import registration
from pgqueue.db.pool import open_pool
from pgqueue.events import ingest
from pgqueue.events.objects import event_object
from pgqueue.runner import starting
from pgqueue.store import apps, events

FUNCTIONS: list[dict[str, Any]] = [
    {"id": "deb", "triggers": [{"event": "win/deb"}],
     "debounce": {"period": "10s", "key": "event.data.k"},
     "concurrency": [{"limit": 1, "key": "event.data.user"}],
     "priority": {"run": "event.data.p"},
     "throttle": {"limit": 5, "period": "1m", "key": "event.data.user"},
     "cancel": [{"event": "win/stop", "if": "async.data.id == event.data.id"}],
     "timeouts": {"start": "30s"}},
    {"id": "bat", "triggers": [{"event": "win/bat"}], "batchEvents": {"maxSize": 10, "timeout": "10s",
                                                                        "key": "event.data.k"}},
]


@pytest.fixture
async def pools(database_url: str) -> AsyncIterator[list[AsyncConnectionPool]]:
    opened = [await open_pool(database_url, max_size=2) for _ in range(2)]
    try:
        async with opened[0].connection() as conn, conn.transaction():
            await apps.sync(conn, registration.parse_register(
                {"appName": "win", "url": "http://127.0.0.1:9/api/inngest", "functions": FUNCTIONS}))
        yield opened
    finally:
        for pool in opened:
            await pool.close()


async def stored_event(
    pool: AsyncConnectionPool, name: str, data: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    raw = json.dumps([{"name": name, "data": data}]).encode()
    [parsed] = ingest.parse_events(raw, seed_header=None, max_event_bytes=1 << 20, max_events=1)
    async with pool.connection() as conn, conn.transaction():
        await events.ingest(conn, [parsed])
        [row] = await events.get_many(conn, [parsed.id])
    return parsed.id, event_object(row)


async def function(pool: AsyncConnectionPool, fn_id: str) -> dict[str, Any]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id AS function_id, slug, config, retries, paused_at FROM pgqueue.functions"
            " WHERE slug = %s", (fn_id,))
        row = await cur.fetchone()
    assert row is not None
    return row


async def rows(pool: AsyncConnectionPool, query: str, params: Any = None) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(query, params)
        return list(await cur.fetchall())


@pytest.mark.parametrize("fn_id", ["deb", "bat"])
async def test_two_runners_open_one_window(pools: list[AsyncConnectionPool], fn_id: str) -> None:
    fn = await function(pools[0], fn_id)
    first_id, first = await stored_event(pools[0], f"win/{fn_id}", {"k": "same", "user": "u1", "id": "a"})
    second_id, second = await stored_event(pools[0], f"win/{fn_id}", {"k": "same", "user": "u1", "id": "b"})
    async with pools[0].connection() as conn_a, pools[1].connection() as conn_b:
        tx_a = conn_a.transaction()
        await tx_a.__aenter__()
        starter_a = starting.RunStarter(conn_a)
        assert await starter_a.start(fn, first_id, first) is None
        await starter_a.close()

        async def second_runner() -> None:
            async with conn_b.transaction():
                starter_b = starting.RunStarter(conn_b)
                await starter_b.start(fn, second_id, second)
                await starter_b.close()

        task = asyncio.create_task(second_runner())
        await asyncio.sleep(0.5)
        assert not task.done(), "the second runner must wait for the first runner's window"
        await tx_a.__aexit__(None, None, None)
        await asyncio.wait_for(task, 10)
    runs = await rows(pools[0], "SELECT id, event_ids FROM pgqueue.runs WHERE function_id = %s",
                      (fn["function_id"],))
    assert len(runs) == 1, runs
    expected = [second_id] if fn_id == "deb" else [first_id, second_id]
    assert runs[0]["event_ids"] == expected


async def test_debounced_run_takes_every_key_from_its_last_event(pools: list[AsyncConnectionPool]) -> None:
    fn = await function(pools[0], "deb")
    pool = pools[0]
    first_id, first = await stored_event(pool, "win/deb", {"k": "x", "user": "ann", "p": 10, "id": "first"})
    last_id, last = await stored_event(pool, "win/deb", {"k": "x", "user": "bob", "p": -5, "id": "last"})
    for event_id, event in ((first_id, first), (last_id, last)):
        async with pool.connection() as conn, conn.transaction():
            starter = starting.RunStarter(conn)
            assert await starter.start(fn, event_id, event) is None
            await starter.close()
    [run] = await rows(pool, "SELECT id, event_id, ckeys, priority_s FROM pgqueue.runs"
                             " WHERE function_id = %s", (fn["function_id"],))
    assert run["event_id"] == last_id
    assert run["ckeys"] == [f"fn:{fn['function_id']}:k:{ids.compact_key('bob')}"]
    assert run["priority_s"] == -5
    [call] = await rows(pool, "SELECT ckeys, priority_s, throttle_key FROM pgqueue.queue_items "
                              "WHERE run_id = %s AND step_id = 'step'", (run["id"],))
    assert call["ckeys"] == run["ckeys"] and call["priority_s"] == -5
    assert call["throttle_key"] == f"throttle:{fn['function_id']}:{ids.compact_key('bob')}"
    listeners = await rows(pool, "SELECT match_value FROM pgqueue.pauses"
                                 " WHERE run_id = %s AND kind = 'cancel'", (run["id"],))
    assert [p["match_value"] for p in listeners] == ["last"]


async def test_start_timeout_moves_with_the_debounce_window(pools: list[AsyncConnectionPool]) -> None:
    """timeouts.start (30 s) counts from the release of the run, which each new event postpones."""
    fn = await function(pools[0], "deb")
    pool = pools[0]
    for n in range(3):
        event_id, event = await stored_event(pool, "win/deb", {"k": "moving", "user": "u", "id": str(n)})
        async with pool.connection() as conn, conn.transaction():
            starter = starting.RunStarter(conn)
            assert await starter.start(fn, event_id, event) is None
            await starter.close()
        gap = await rows(pool, """
            SELECT extract(epoch FROM t.run_at - c.run_at) AS seconds
            FROM pgqueue.queue_items c JOIN pgqueue.queue_items t ON t.run_id = c.run_id
            JOIN pgqueue.runs r ON r.id = c.run_id
            WHERE r.function_id = %s AND c.step_id = 'step' AND t.step_id = '$start-timeout'""",
                         (fn["function_id"],))
        assert len(gap) == 1 and abs(float(gap[0]["seconds"]) - 30) < 0.01, gap
        await asyncio.sleep(0.2)
