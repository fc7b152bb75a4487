"""A run's history as its trace reads it: the run, its calls and wake-ups, its stored steps (without
their outputs), what it waits for now, and single outputs by key (sql/queries/history.sql)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgqueue.db.pool import Conn
from pgqueue.db.queries import q

# A run has at most 10,000 steps (the absolute step limit), each tried at most 21 times: bounds that
# keep one trace from reading without end whatever a table holds.
MAX_STEPS = 10_000
MAX_ATTEMPTS = 50_000


async def snapshot(conn: Conn) -> None:
    """Make the caller's (just begun) transaction read one consistent snapshot."""
    await conn.execute(q("history_snapshot"))


async def run(conn: Conn, run_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(q("history_run"), {"run_id": run_id})
    return await cur.fetchone()


async def attempts(conn: Conn, run_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(q("history_attempts"), {"run_id": run_id, "limit": MAX_ATTEMPTS})
    return list(await cur.fetchall())


async def steps(conn: Conn, run_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(q("history_steps"), {"run_id": run_id, "limit": MAX_STEPS})
    return list(await cur.fetchall())


async def pending(conn: Conn, run_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(q("history_pending"), {"run_id": run_id})
    return list(await cur.fetchall())


async def run_output(conn: Conn, run_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(q("history_run_output"), {"run_id": run_id})
    return await cur.fetchone()


async def step_output(conn: Conn, run_id: str, step_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(q("history_step_output"), {"run_id": run_id, "step_id": step_id})
    return await cur.fetchone()


async def attempt_output(conn: Conn, run_id: str, attempt_id: int) -> dict[str, Any] | None:
    cur = await conn.execute(q("history_attempt_output"), {"run_id": run_id, "attempt_id": attempt_id})
    return await cur.fetchone()


async def item_output(conn: Conn, run_id: str, item_id: int) -> dict[str, Any] | None:
    cur = await conn.execute(q("history_item_output"), {"run_id": run_id, "item_id": item_id})
    return await cur.fetchone()


async def invoked_run(
    conn: Conn, correlation_id: str, *, after: datetime, before: datetime
) -> dict[str, Any] | None:
    """The run a step.invoke started, created between `after` and `before`."""
    cur = await conn.execute(q("history_invoked_run"),
                             {"correlation_id": correlation_id, "after": after, "before": before})
    return await cur.fetchone()
