"""Which call starts a run: the claim (run_started), or the run_context query when the claim could not
lock the run row (started_now). Exactly one of them says so, which is what a run's single root span
(pgqueue.telemetry) relies on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from pgqueue import ids
from pgqueue.db.pool import open_pool
from pgqueue.store import queue, runs


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    pool = await open_pool(database_url, max_size=4)
    yield pool
    await pool.close()


async def queued_run(pool: AsyncConnectionPool) -> str:
    event_id, run_id = ids.new_ulid(), ids.new_ulid()
    async with pool.connection() as conn:
        app = await (await conn.execute(
            "INSERT INTO pgqueue.apps (name, url) VALUES (%s, 'http://127.0.0.1:9') RETURNING id",
            (f"app-{run_id}",))).fetchone()
        fn = await (await conn.execute(
            "INSERT INTO pgqueue.functions (app_id, slug, name, url, config) VALUES "
            "(%s, %s, 'f', 'http://127.0.0.1:9', '{}') RETURNING id", (app["id"], f"fn-{run_id}"))).fetchone()
        await conn.execute("INSERT INTO pgqueue.events (id, name, data, ts) VALUES (%s, 'ctx/go', %s, %s)",
                           (event_id, Jsonb({}), ids.ulid_time_ms(event_id)))
        await conn.execute(
            "INSERT INTO pgqueue.runs (id, function_id, event_id, event_ids, status, max_attempts)"
            " VALUES (%s, %s, %s, ARRAY[%s], 'queued', 1)", (run_id, fn["id"], event_id, event_id))
        await conn.execute("INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id,"
                           " max_attempts) VALUES (%s, %s, 'call', 'step', 1)", (run_id, fn["id"]))
    return run_id


async def context(pool: AsyncConnectionPool, run_id: str) -> dict[str, Any]:
    async with pool.connection() as conn:
        ctx = await runs.context(conn, run_id)
    assert ctx is not None
    return ctx


async def test_the_claim_starts_the_run_and_the_context_does_not_say_it_again(
    pool: AsyncConnectionPool,
) -> None:
    run_id = await queued_run(pool)
    async with pool.connection() as conn:
        [item] = await queue.claim(conn, "w", 10, 60_000)

    ctx = await context(pool, run_id)

    assert item.run_started is True
    assert (ctx["status"], ctx["started_now"]) == ("running", False)


async def test_a_run_row_locked_at_claim_time_is_started_by_the_context(pool: AsyncConnectionPool) -> None:
    run_id = await queued_run(pool)
    async with pool.connection() as holder, holder.transaction():
        # a foreign-key check elsewhere (an insert referencing the run) holds this lock for a moment
        await holder.execute("SELECT 1 FROM pgqueue.runs WHERE id = %s FOR KEY SHARE", (run_id,))
        async with pool.connection() as conn:
            [item] = await queue.claim(conn, "w", 10, 60_000)

    first, second = await context(pool, run_id), await context(pool, run_id)

    assert item.run_started is False
    assert first["started_now"] is True  # (its status still reads as before its own update: queued)
    assert (second["status"], second["started_now"]) == ("running", False)


async def test_the_claim_reads_each_calls_context_as_the_query_would(pool: AsyncConnectionPool) -> None:
    run_id = await queued_run(pool)
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO pgqueue.steps (run_id, step_id, name, op, memo, attempt)"
                           " VALUES (%s, 'a', 'a', 'StepRun', %s, 0)", (run_id, Jsonb({"data": [1, "x"]})))
        [item] = await queue.claim(conn, "w", 10, 60_000)

    queried = await context(pool, run_id)
    assert item.context is not None
    assert item.context["status"] == "running"  # read after the claim's own write
    assert item.context == queried
    assert item.context["steps"] == [["a", {"data": [1, "x"]}]]


async def test_a_run_the_claim_could_not_start_reads_queued_so_the_executor_starts_it(
    pool: AsyncConnectionPool,
) -> None:
    run_id = await queued_run(pool)
    async with pool.connection() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM pgqueue.runs WHERE id = %s FOR KEY SHARE", (run_id,))
        async with pool.connection() as conn:
            [item] = await queue.claim(conn, "w", 10, 60_000)
    assert item.run_started is False and item.context is not None and item.context["status"] == "queued"


async def test_the_context_lists_the_runs_events_in_its_order(pool: AsyncConnectionPool) -> None:
    """A batch run's events in the order of runs.event_ids (not by id), each once (the first place of
    an id named twice), and none for an id whose event is gone (retention)."""
    run_id = await queued_run(pool)
    later, earlier, gone = ids.new_ulid(), ids.new_ulid(), ids.new_ulid()
    async with pool.connection() as conn:
        for event_id, n in ((earlier, 1), (later, 2)):
            await conn.execute(
                "INSERT INTO pgqueue.events (id, name, data, ts) VALUES (%s, 'ctx/go', %s, %s)",
                (event_id, Jsonb({"n": n}), ids.ulid_time_ms(event_id)))
        cur = await conn.execute("SELECT event_id FROM pgqueue.runs WHERE id = %s", (run_id,))
        first = await cur.fetchone()
        await conn.execute("UPDATE pgqueue.runs SET event_ids = %s WHERE id = %s",
                           ([first["event_id"], later, gone, earlier, later], run_id))
        [item] = await queue.claim(conn, "w", 10, 60_000)

    queried = await context(pool, run_id)
    assert item.context == queried
    assert [e["id"] for e in queried["events"]] == [first["event_id"], later, earlier]
    assert [e["data"] for e in queried["events"][1:]] == [{"n": 2}, {"n": 1}]


async def test_each_event_has_a_user_object_and_its_sessions(pool: AsyncConnectionPool) -> None:
    """Inngest sends every event with `user` (`{}` when its sender gave none): JS SDK middleware
    reads event.user. `meta.sessions` only on events that carry sessions (migration 0019)."""
    run_id = await queued_run(pool)
    with_user, with_sessions = ids.new_ulid(), ids.new_ulid()
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO pgqueue.events (id, name, data, \"user\", ts)"
                           " VALUES (%s, 'ctx/go', '{}', %s, 1)", (with_user, Jsonb({"id": "u-1"})))
        await conn.execute("INSERT INTO pgqueue.events (id, name, data, ts, sessions)"
                           " VALUES (%s, 'ctx/go', '{}', 2, %s)",
                           (with_sessions, Jsonb({"conversation": "c-1"})))
        cur = await conn.execute("SELECT event_id FROM pgqueue.runs WHERE id = %s", (run_id,))
        first = await cur.fetchone()
        await conn.execute("UPDATE pgqueue.runs SET event_ids = %s WHERE id = %s",
                           ([first["event_id"], with_user, with_sessions], run_id))

    events = (await context(pool, run_id))["events"]

    assert [e["user"] for e in events] == [{}, {"id": "u-1"}, {}]
    assert ["meta" in e for e in events] == [False, False, True]
    assert events[2]["meta"] == {"sessions": {"conversation": "c-1"}}


async def _parallel_run(pool: AsyncConnectionPool, *, request_version: int, pending: str | None) -> str:
    """A run that has run steps in parallel (force_step_plan), with its next discovery call queued
    and, besides it, `pending`: another call, a wait's pause, the run's finish timeout, or nothing."""
    run_id = await queued_run(pool)
    async with pool.connection() as conn:
        await conn.execute("UPDATE pgqueue.runs SET force_step_plan = true, request_version = %s"
                           " WHERE id = %s", (request_version, run_id))
        cur = await conn.execute("SELECT function_id FROM pgqueue.runs WHERE id = %s", (run_id,))
        fn = (await cur.fetchone())["function_id"]
        if pending == "call":
            await conn.execute("INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id,"
                               " max_attempts) VALUES (%s, %s, 'call', 'sibling', 1)", (run_id, fn))
        elif pending == "finish-timeout":
            await conn.execute("INSERT INTO pgqueue.queue_items (run_id, function_id, kind, step_id,"
                               " max_attempts, run_at) VALUES (%s, %s, 'timeout', '$finish-timeout', 1,"
                               " now() + interval '1h')", (run_id, fn))
        elif pending == "wait":
            await conn.execute("INSERT INTO pgqueue.pauses (run_id, kind, step_id, event_name, expires_at)"
                               " VALUES (%s, 'wait', 'waiter', 'ctx/never', now() + interval '1h')",
                               (run_id,))
    return run_id


@pytest.mark.parametrize(("request_version", "pending", "plan"), [
    (2, None, False),  # the parallel steps have drained: checkpointing resumes (Inngest resets it)
    (2, "finish-timeout", False),  # a run-level timer is nothing the run waits for
    (2, "call", True),  # a sibling still runs (a race's loser): plan, never run inline
    (2, "wait", True),
    (1, None, True),  # version 1 (JS optimizeParallelism: false) keeps planning, as in Inngest
])
async def test_disable_immediate_execution_after_parallel_steps(
    pool: AsyncConnectionPool, request_version: int, pending: str | None, plan: bool,
) -> None:
    run_id = await _parallel_run(pool, request_version=request_version, pending=pending)

    assert (await context(pool, run_id))["force_step_plan"] is plan
