"""Flow-control keys of any size: an idempotency or singleton key far past PostgreSQL's btree limit
(about 2,700 bytes per index entry) still starts its run, still dedupes, and never blocks the
events behind it. The keys are random hex, so compression cannot shrink them under the limit."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from pgqueue.apps import registration
from pgqueue.db.notify import Wakeup
from pgqueue.db.pool import open_pool
from pgqueue.events import ingest
from pgqueue.runner.loop import Runner
from pgqueue.store import apps, events


def wide_text(n: int) -> str:
    """n random 3-byte UTF-8 characters from a 20,000-code-point range: incompressible."""
    return "".join(chr(0x4E00 + secrets.randbelow(20_000)) for _ in range(n))


STOP = wide_text(512)  # the longest event name there is, 1,536 bytes

FUNCTIONS: list[dict[str, Any]] = [
    {"id": "idem", "triggers": [{"event": "keys/idem"}], "idempotency": "event.data.k"},
    {"id": "solo", "triggers": [{"event": "keys/solo"}],
     "singleton": {"mode": "skip", "key": "event.data.k"}},
    {"id": "plain", "triggers": [{"event": "keys/plain"}]},
    {"id": "watch", "triggers": [{"event": "keys/watch"}],
     "cancel": [{"event": STOP, "if": "event.data.k == async.data.k"}]},
]


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    pool = await open_pool(database_url, max_size=4)
    try:
        async with pool.connection() as conn, conn.transaction():
            await apps.sync(conn, registration.parse_register(
                {"appName": "keys", "url": "http://127.0.0.1:9/api/inngest", "functions": FUNCTIONS}))
        yield pool
    finally:
        await pool.close()


async def send(pool: AsyncConnectionPool, name: str, data: dict[str, Any]) -> str:
    body = json.dumps({"name": name, "data": data}).encode()
    [event] = ingest.parse_events(body, seed_header=None, max_event_bytes=1 << 20, max_events=1)
    async with pool.connection() as conn, conn.transaction():
        await events.ingest(conn, [event])
    return event.id


async def runs_of(pool: AsyncConnectionPool, event_id: str) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM pgqueue.runs WHERE event_id = %s", (event_id,))
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


async def skip_reason(pool: AsyncConnectionPool, event_id: str) -> str | None:
    async with pool.connection() as conn:
        row = await events.get(conn, event_id)
    assert row is not None
    return row["skip_reason"]


async def drain(runner: Runner, pool: AsyncConnectionPool) -> None:
    for _ in range(3):  # bounded: a batch that rolls back would leave the inbox full
        await runner.run_once()
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM pgqueue.event_inbox")
        assert await cur.fetchone() == {"n": 0}


async def test_a_long_idempotency_key_starts_one_run_and_still_dedupes(pool: AsyncConnectionPool) -> None:
    runner = Runner(pool, wakeup=Wakeup())
    key = secrets.token_hex(4000)
    first = await send(pool, "keys/idem", {"k": key})
    healthy = await send(pool, "keys/plain", {})
    await drain(runner, pool)
    assert await runs_of(pool, first) == 1
    assert await runs_of(pool, healthy) == 1

    again = await send(pool, "keys/idem", {"k": key})
    other = await send(pool, "keys/idem", {"k": secrets.token_hex(4000)})
    await drain(runner, pool)
    assert await runs_of(pool, again) == 0
    assert (await skip_reason(pool, again) or "").startswith("skipped: a run with the same idempotency key")
    assert await runs_of(pool, other) == 1


async def test_a_long_singleton_key_holds_the_slot(pool: AsyncConnectionPool) -> None:
    runner = Runner(pool, wakeup=Wakeup())
    key = secrets.token_hex(4000)
    first = await send(pool, "keys/solo", {"k": key})
    healthy = await send(pool, "keys/plain", {})
    await drain(runner, pool)
    assert await runs_of(pool, first) == 1
    assert await runs_of(pool, healthy) == 1

    second = await send(pool, "keys/solo", {"k": key})  # the first run is still queued
    other = await send(pool, "keys/solo", {"k": secrets.token_hex(4000)})
    await drain(runner, pool)
    assert await runs_of(pool, second) == 0
    reason = await skip_reason(pool, second) or ""
    assert reason.startswith("skipped: singleton function already has an active run")
    assert await runs_of(pool, other) == 1


async def test_a_long_cancel_match_value_is_matched_without_the_index(pool: AsyncConnectionPool) -> None:
    # Event name and match value together are past a btree entry's limit: the listener is stored
    # unindexed (evaluated for every event of that name) and still cancels the run.
    runner = Runner(pool, wakeup=Wakeup())
    key = wide_text(512)
    watched = await send(pool, "keys/watch", {"k": key})
    healthy = await send(pool, "keys/plain", {})
    await drain(runner, pool)
    assert await runs_of(pool, watched) == 1
    assert await runs_of(pool, healthy) == 1
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT match_path FROM pgqueue.pauses WHERE kind = 'cancel'")
        assert await cur.fetchall() == [{"match_path": None}]

    await send(pool, STOP, {"k": wide_text(512)})  # another key: not this run
    await drain(runner, pool)
    await send(pool, STOP, {"k": key})
    await drain(runner, pool)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status::text AS status FROM pgqueue.runs WHERE event_id = %s", (watched,))
        assert await cur.fetchone() == {"status": "cancelled"}
