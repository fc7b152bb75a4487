"""Flow-control calls made when runs are created (rate limit, debounce, batching)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from pgqueue.db.pool import Conn
from pgqueue.db.queries import q


async def rate_limit_admit(conn: Conn, key: str, limit: int, period_ms: int) -> bool:
    cur = await conn.execute(q("flow_rate_limit_admit"), {"key": key, "limit": limit, "period_ms": period_ms})
    row = await cur.fetchone()
    return bool(row and row["admitted"])


async def debounce_push(
    conn: Conn, function_id: UUID, key: str, event_id: str, period_s: float, timeout_s: float | None,
    shape: dict[str, Any],
) -> dict[str, Any] | None:
    """The waiting run that took this event (with `shape`: its keys now come from this event)."""
    cur = await conn.execute(
        q("flow_debounce_push"),
        {"function_id": function_id, "key": key, "event_id": event_id, "period_s": period_s,
         "timeout_s": timeout_s, "shape": Jsonb(shape)},
    )
    return await cur.fetchone()


async def debounce_open(conn: Conn, function_id: UUID, key: str, run_id: str) -> None:
    await conn.execute(q("flow_debounce_open"), {"function_id": function_id, "key": key, "run_id": run_id})


async def batch_append(conn: Conn, function_id: UUID, key: str, event_id: str, max_size: int) -> str | None:
    cur = await conn.execute(
        q("flow_batch_append"),
        {"function_id": function_id, "key": key, "event_id": event_id, "max_size": max_size},
    )
    row = await cur.fetchone()
    return row["run_id"] if row else None


async def batch_open(conn: Conn, function_id: UUID, key: str, run_id: str) -> None:
    await conn.execute(q("flow_batch_open"), {"function_id": function_id, "key": key, "run_id": run_id})


async def prune_idle_gcra(conn: Conn, limit: int = 10_000) -> int:
    """Forget throttle and rate-limit keys idle for over a minute (they admit as new keys do)."""
    cur = await conn.execute(q("gcra_prune_idle"), {"limit": limit})
    row = await cur.fetchone()
    return int(row["pruned"]) if row else 0
