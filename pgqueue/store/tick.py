"""What the serverless tick needs beyond the queue itself: the executor-kick debounce and the
queue metrics it publishes."""

from __future__ import annotations

from typing import Any

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
