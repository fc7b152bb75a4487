"""Event rows: ingest (insert + NOTIFY in the caller's transaction), inbox claims, reads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from pgqueue import ids
from pgqueue.db.pool import Conn
from pgqueue.db.queries import q
from pgqueue.models import Event


async def ingest(conn: Conn, events: Sequence[Event]) -> int:
    """Store events; returns how many were handed to the runner (duplicates are not)."""
    rows = [
        {**e.to_row(), "dedupe_key": ids.compact_key(e.external_id) if e.external_id is not None else None}
        for e in events
    ]
    cur = await conn.execute(q("event_ingest"), {"events": Jsonb(rows)})
    row = await cur.fetchone()
    return int(row["queued"]) if row else 0


async def take_from_inbox(conn: Conn, event_ids: Sequence[str]) -> list[str]:
    """Remove these events from the inbox (the caller handles them); returns them in inbox order."""
    cur = await conn.execute(q("event_inbox_take"), {"ids": list(event_ids)})
    return [r["event_id"] for r in await cur.fetchall()]


async def claim_inbox(conn: Conn, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` events from the inbox (oldest first), as event_get_many's rows."""
    cur = await conn.execute(q("event_inbox_claim"), {"limit": limit})
    return list(await cur.fetchall())


async def get_many(conn: Conn, event_ids: Sequence[str]) -> list[dict[str, Any]]:
    cur = await conn.execute(q("event_get_many"), {"ids": list(event_ids)})
    return list(await cur.fetchall())


async def get(conn: Conn, event_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(q("event_get"), {"id": event_id})
    return await cur.fetchone()


async def list_events(
    conn: Conn,
    *,
    name: str | None = None,
    before_id: str | None = None,
    received_after: datetime | None = None,
    received_before: datetime | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        q("event_list"),
        {
            "name": name,
            "before_id": before_id,
            "received_after": received_after,
            "received_before": received_before,
            "limit": limit,
        },
    )
    return list(await cur.fetchall())


async def set_skip_reason(conn: Conn, event_id: str, reason: str) -> None:
    await conn.execute(q("event_set_skip_reason"), {"id": event_id, "reason": reason})


async def finish_heard(conn: Conn, correlation_id: str | None) -> bool:
    """Does anything listen for a run's inngest/function.finished? (pgqueue.finish_heard_v1)"""
    cur = await conn.execute(q("event_finish_heard"), {"correlation_id": correlation_id})
    row = await cur.fetchone()
    return bool(row and row["heard"])


async def insert_internal(conn: Conn, name: str, data: dict[str, Any]) -> str:
    """Emit an internal event (inngest/function.finished, ...) into the runner's inbox."""
    event_id = ids.new_ulid()
    await conn.execute(
        q("event_insert_internal"),
        {"id": event_id, "name": name, "data": Jsonb(data), "ts": ids.ulid_time_ms(event_id)},
    )
    return event_id


async def insert_direct(conn: Conn, name: str, data: dict[str, Any], *, user: dict[str, Any] | None = None,
                        v: str | None = None, sessions: dict[str, str] | None = None) -> dict[str, Any]:
    """Store an event that starts one known run (no trigger matching)."""
    event_id = ids.new_ulid()
    cur = await conn.execute(
        q("event_insert_direct"),
        {"id": event_id, "name": name, "data": Jsonb(data), "user": Jsonb(user) if user is not None else None,
         "ts": ids.ulid_time_ms(event_id), "v": v, "sessions": Jsonb(sessions) if sessions else None},
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def search_page(
    conn: Conn, *, after: datetime, before: datetime, before_id: str | None, name: str | None,
    contains: dict[str, Any] | None, limit: int,
) -> list[dict[str, Any]]:
    """A page of candidate events for a search (sql/queries/events.sql)."""
    cur = await conn.execute(q("event_search_page"), {
        "after": after, "before": before, "before_id": before_id, "name": name,
        "contains": Jsonb(contains) if contains is not None else None, "limit": limit})
    return list(await cur.fetchall())
