"""Shared by the SQL tests: `Twin`, runs with leased call items to apply outcomes to, and its
fixture."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from pgqueue import ids
from pgqueue.db.pool import open_pool
from pgqueue.models import QueueItem
from pgqueue.store import queue


class Twin:
    """One function, runs with a leased call item each, and helpers to read back what an apply left."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.fn: uuid.UUID | None = None

    async def setup(self) -> None:
        async with self.pool.connection() as conn:
            app = await (await conn.execute(
                "INSERT INTO pgqueue.apps (name, url) VALUES ('twin', 'http://127.0.0.1:9') RETURNING id"
            )).fetchone()
            fn = await (await conn.execute(
                "INSERT INTO pgqueue.functions (app_id, slug, name, url, config) VALUES "
                "(%s, 'twin-fn', 'twin', 'http://127.0.0.1:9', '{}') RETURNING id", (app["id"],))).fetchone()
        self.fn = fn["id"]

    async def run(
        self, *, steps: int = 0, items: tuple[str, ...] = ("step",), status: str = "running"
    ) -> list[QueueItem]:
        event_id = ids.new_ulid()
        run_id = ids.new_ulid()
        async with self.pool.connection() as conn:
            await conn.execute("INSERT INTO pgqueue.events (id, name, data, ts)"
                               " VALUES (%s, 'twin/go', %s, %s)",
                               (event_id, Jsonb({"n": 1}), ids.ulid_time_ms(event_id)))
            await conn.execute(
                "INSERT INTO pgqueue.runs (id, function_id, event_id, event_ids, status, max_attempts,"
                " started_at) VALUES (%s, %s, %s, ARRAY[%s], 'running', 3, now())",
                (run_id, self.fn, event_id, event_id))
            # a run's step count is its stored steps' (`steps` earlier steps already stored)
            await conn.execute(
                "INSERT INTO pgqueue.steps (run_id, step_id, op, memo)"
                " SELECT %s, 'earlier-' || n, 'StepRun', '{\"data\": null}' FROM generate_series(1, %s) AS n",
                (run_id, steps))
            for step_id in items:
                await conn.execute(
                    "INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id, max_attempts)"
                    " VALUES (%s, %s, 'call', %s, 3)", (run_id, self.fn, step_id))
            claimed = await queue.claim(conn, "twin-worker", 100, 60_000)
            if status != "running":
                await conn.execute("UPDATE pgqueue.runs SET status = %s::pgqueue.run_status, ended_at = now()"
                                   " WHERE id = %s", (status, run_id))
        return sorted((i for i in claimed if i.run_id == run_id), key=lambda i: i.step_id)

    async def state(self, run_id: str) -> dict[str, Any]:
        """Everything an apply writes for a run, with ids and clocks left out."""
        async with self.pool.connection() as conn:
            run = await (await conn.execute(
                "SELECT status::text, output, error, request_version,"
                " (SELECT count(*) FROM pgqueue.steps s WHERE s.run_id = r.id) AS step_count,"
                " (SELECT coalesce(sum(s.size), 0) FROM pgqueue.steps s WHERE s.run_id = r.id) AS state_bytes,"
                " ended_at IS NOT NULL"
                " AS ended FROM pgqueue.runs r WHERE id = %s", (run_id,))).fetchone()
            steps = await (await conn.execute(
                "SELECT step_id, name, op, memo, attempt FROM pgqueue.steps WHERE run_id = %s ORDER BY seq",
                (run_id,))).fetchall()
            attempts = await (await conn.execute(
                "SELECT step_id, attempt, outcome, status_code, error FROM pgqueue.attempts WHERE run_id = %s"
                " ORDER BY id", (run_id,))).fetchall()
            items = await (await conn.execute(
                "SELECT kind, step_id, state::text, attempt, max_attempts, ckeys, priority_s"
                " FROM pgqueue.queue_items"
                " WHERE run_id = %s ORDER BY id", (run_id,))).fetchall()
            events = await (await conn.execute(
                "SELECT e.name, e.data - 'run_id' - 'event' - 'events' AS data,"
                " (e.data -> 'event') - 'id' - 'ts' AS trigger,"
                " jsonb_array_length(e.data -> 'events') AS n_events, i.event_id IS NOT NULL AS queued"
                " FROM pgqueue.events e"
                " LEFT JOIN pgqueue.event_inbox i ON i.event_id = e.id"
                " WHERE e.data ->> 'run_id' = %s ORDER BY e.id", (run_id,))).fetchall()
        return {"run": run, "steps": steps, "attempts": attempts, "items": items, "events": events}


@pytest.fixture
async def twin(database_url: str) -> AsyncIterator[Twin]:
    pool = await open_pool(database_url, max_size=4)
    t = Twin(pool)
    await t.setup()
    yield t
    await pool.close()
