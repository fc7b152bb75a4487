"""What the serverless tick needs beyond the queue itself: the executor-kick debounce and the
queue metrics it publishes."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from pgqueue.db.pool import Conn
from pgqueue.db.queries import q


async def claim_kick(conn: Conn, debounce_ms: int) -> bool:
    """True for exactly one caller per debounce window."""
    cur = await conn.execute(q("executor_kick_claim"), {"debounce_ms": debounce_ms})
    return await cur.fetchone() is not None


async def queue_metrics(conn: Conn) -> dict[str, Any]:
    cur = await conn.execute(q("queue_metrics"))
    row = await cur.fetchone()
    assert row is not None
    return dict(row)


async def scan_ended(conn: Conn) -> None:
    await conn.execute(q("executor_scan_ended"))


async def claim_linger(conn: Conn, me: UUID, seconds: float) -> bool:
    cur = await conn.execute(q("executor_linger_claim"), {"me": me, "seconds": seconds})
    return await cur.fetchone() is not None


async def release_linger(conn: Conn, me: UUID) -> None:
    await conn.execute(q("executor_linger_release"), {"me": me})


async def next_wake_in(conn: Conn) -> float | None:
    """Seconds until the next queue item or cron slot is due (negative: overdue), None if none."""
    cur = await conn.execute(q("executor_next_wake"))
    row = await cur.fetchone()
    return None if row is None or row["wait"] is None else float(row["wait"])
