"""History partitions and retention (sql/functions/history.sql): make partitions ahead, expire whole
partition sets past the retention window, prune what the archive partitions no longer keep."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgqueue.db.pool import Conn
from pgqueue.db.queries import q


@dataclass(frozen=True, slots=True)
class Expired:
    suffix: str  # the partition set, e.g. p20261207t0000
    part: str  # runs (with steps and attempts) | events
    kept: int  # rows moved into the archive partition


async def lock_timeout(conn: Conn, ms: int) -> None:
    """For the current transaction: give up on a lock after `ms` instead of queueing the hot path."""
    await conn.execute(q("partitions_lock_timeout"), {"ms": ms})


async def partitions_due(conn: Conn, ahead_s: float) -> bool:
    cur = await conn.execute(q("partitions_due"), {"ahead_s": ahead_s})
    row = await cur.fetchone()
    return bool(row and row["due"])


async def ensure_partitions(conn: Conn, width_s: float, ahead_s: float) -> int:
    """Make the next partition set if one is due; returns how many were made (0 or 1)."""
    cur = await conn.execute(q("partitions_ensure"), {"width_s": width_s, "ahead_s": ahead_s})
    row = await cur.fetchone()
    return int(row["made"]) if row else 0


async def expire(conn: Conn, retention_s: float, now: datetime | None = None) -> Expired | None:
    """Expire one partition set's runs or events; None: nothing is due."""
    cur = await conn.execute(q("partitions_expire"), {"now": now, "retention_s": retention_s})
    row = await cur.fetchone()
    return Expired(row["suffix"], row["part"], int(row["kept"])) if row else None


async def prune(conn: Conn, retention_s: float, limit: int, now: datetime | None = None) -> tuple[int, int]:
    """One batch of rows the archive and default partitions no longer keep: (runs, events) deleted."""
    cur = await conn.execute(q("partitions_prune"), {"now": now, "retention_s": retention_s, "limit": limit})
    row = await cur.fetchone()
    return (int(row["runs_deleted"]), int(row["events_deleted"])) if row else (0, 0)


async def partitions(conn: Conn) -> list[dict[str, Any]]:
    cur = await conn.execute(q("partitions_list"))
    return list(await cur.fetchall())


async def reconcile_live_runs(conn: Conn, limit: int = 1000) -> int:
    """Drop live_runs rows of runs that ended without their end being recorded; returns how many."""
    cur = await conn.execute(q("live_runs_reconcile"), {"limit": limit})
    row = await cur.fetchone()
    return int(row["dropped"]) if row else 0


async def prune_cancellations(conn: Conn, cutoff: datetime, limit: int) -> int:
    cur = await conn.execute(q("cancellations_prune"), {"cutoff": cutoff, "limit": limit})
    return len(await cur.fetchall())
