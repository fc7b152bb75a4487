"""Cron schedules and fired slots: keep schedules in step with synced triggers, claim due ones."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pgqueue.db.pool import Conn
from pgqueue.db.queries import q


async def prune_schedules(conn: Conn) -> int:
    """Drop schedules whose cron trigger no longer exists (re-sync, archive)."""
    cur = await conn.execute(q("cron_schedules_prune"))
    return len(await cur.fetchall())


async def missing_schedules(conn: Conn) -> list[dict[str, Any]]:
    cur = await conn.execute(q("cron_schedules_missing"))
    return list(await cur.fetchall())


async def insert_schedule(conn: Conn, function_id: UUID, cron: str, next_at: datetime) -> bool:
    cur = await conn.execute(
        q("cron_schedule_insert"), {"function_id": function_id, "cron": cron, "next_at": next_at}
    )
    return await cur.fetchone() is not None


async def due(conn: Conn, now: datetime, limit: int) -> list[dict[str, Any]]:
    """Due schedules, row-locked (SKIP LOCKED) until the caller's transaction ends."""
    cur = await conn.execute(q("cron_due"), {"now": now, "limit": limit})
    return list(await cur.fetchall())


async def advance(conn: Conn, function_id: UUID, cron: str, next_at: datetime) -> None:
    await conn.execute(
        q("cron_schedule_advance"), {"function_id": function_id, "cron": cron, "next_at": next_at}
    )


async def claim_tick(
    conn: Conn,
    function_id: UUID,
    scheduled_at: datetime,
    cron: str,
    *,
    run_id: str | None,
    skip_reason: str | None = None,
) -> bool:
    """True when this caller owns the slot (function, scheduled_at); False if it already fired."""
    cur = await conn.execute(
        q("cron_tick_claim"),
        {
            "function_id": function_id,
            "scheduled_at": scheduled_at,
            "cron": cron,
            "run_id": run_id,
            "skip_reason": skip_reason,
        },
    )
    return await cur.fetchone() is not None


async def skip_tick(conn: Conn, function_id: UUID, scheduled_at: datetime, reason: str) -> None:
    await conn.execute(
        q("cron_tick_skip"), {"function_id": function_id, "scheduled_at": scheduled_at, "reason": reason}
    )


async def prune_ticks(conn: Conn, retention_s: float, limit: int = 1000) -> int:
    """Delete fired slots older than `retention_s` (by the database clock)."""
    cur = await conn.execute(q("cron_ticks_prune"), {"retention_s": retention_s, "limit": limit})
    return cur.rowcount or 0
