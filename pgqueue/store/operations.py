"""Operator actions' SQL: function pause, bulk cancellations, replays, pruning."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pgqueue.db.pool import Conn
from pgqueue.db.queries import q


async def resolve_function(conn: Conn, ref: str) -> dict[str, Any] | None:
    cur = await conn.execute(q("function_resolve"), {"ref": ref})
    return await cur.fetchone()


async def set_paused(conn: Conn, function_id: UUID, paused: bool) -> dict[str, Any] | None:
    """Pause (hold the function's queued work) or resume (release it), pgqueue.function_pause_v1:
    id, slug, paused_at and how many items were held or released; None for an unknown function."""
    cur = await conn.execute(q("function_set_paused"), {"id": function_id, "paused": paused})
    return await cur.fetchone()


async def live_runs_in_range(
    conn: Conn, function_id: UUID, after: datetime | None, before: datetime, *, after_id: str | None, limit: int
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        q("runs_live_in_range"),
        {"function_id": function_id, "after": after, "before": before, "after_id": after_id, "limit": limit},
    )
    return list(await cur.fetchall())


async def ended_runs_in_range(
    conn: Conn, function_id: UUID, after: datetime, before: datetime, statuses: list[str], limit: int
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        q("runs_ended_in_range"),
        {"function_id": function_id, "after": after, "before": before, "statuses": statuses, "limit": limit},
    )
    return list(await cur.fetchall())


async def create_cancellation(conn: Conn, **fields: Any) -> dict[str, Any]:
    cur = await conn.execute(q("cancellation_create"), fields)
    row = await cur.fetchone()
    assert row is not None
    return row


async def count_cancelled(conn: Conn, cancellation_id: str, n: int) -> dict[str, Any] | None:
    cur = await conn.execute(q("cancellation_count"), {"id": cancellation_id, "n": n})
    return await cur.fetchone()


async def list_cancellations(conn: Conn, limit: int) -> list[dict[str, Any]]:
    cur = await conn.execute(q("cancellation_list"), {"limit": limit})
    return list(await cur.fetchall())


async def delete_cancellation(conn: Conn, cancellation_id: str) -> bool:
    cur = await conn.execute(q("cancellation_delete"), {"id": cancellation_id})
    return await cur.fetchone() is not None


async def prune_expired_keys(conn: Conn, limit: int = 1000) -> int:
    cur = await conn.execute(q("prune_expired_keys"), {"limit": limit})
    row = await cur.fetchone()
    return int(row["pruned"]) if row else 0


async def live_runs_of_function(conn: Conn, function_id: UUID, limit: int = 1000) -> list[str]:
    cur = await conn.execute(q("runs_live_of_function"), {"function_id": function_id, "limit": limit})
    return [r["id"] for r in await cur.fetchall()]


async def rerun_step(conn: Conn, run_id: str, step: str) -> list[dict[str, Any]]:
    """The stored step `step` names (its id, else its name) in a run: one row, none, or two when a
    name alone matches several."""
    cur = await conn.execute(q("rerun_step_find"), {"run_id": run_id, "step": step})
    return list(await cur.fetchall())


async def copy_steps_before(conn: Conn, run_id: str, original_id: str, before_seq: int) -> int:
    """Copy the original's steps stored before `before_seq` into the new run; how many."""
    cur = await conn.execute(q("rerun_steps_copy"),
                             {"run_id": run_id, "original_id": original_id, "before_seq": before_seq})
    row = await cur.fetchone()
    return int(row["copied"]) if row else 0
