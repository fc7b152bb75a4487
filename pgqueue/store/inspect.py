"""Read side for the dashboard and the REST inspection endpoints: headline metrics, queue depth,
leases, stuck runs, failures, run timelines (the views in sql/views/inspect.sql) and listings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from pgqueue.db.pool import Conn
from pgqueue.db.queries import q


async def metrics(conn: Conn) -> dict[str, Any]:
    """The one row of pgqueue.metrics()."""
    cur = await conn.execute(q("inspect_metrics"))
    row = await cur.fetchone()
    assert row is not None
    return dict(row)


async def queue_depth(conn: Conn, function_id: UUID | None = None) -> list[dict[str, Any]]:
    cur = await conn.execute(q("inspect_queue_depth"), {"function_id": function_id})
    return list(await cur.fetchall())


async def app_concurrency(conn: Conn, app_id: UUID | None = None) -> list[dict[str, Any]]:
    """Adaptive concurrency per app (pgqueue.app_concurrency): limit and calls in flight, summed
    over the workers."""
    cur = await conn.execute(q("inspect_app_concurrency"), {"app_id": app_id})
    return list(await cur.fetchall())


async def active_leases(conn: Conn, limit: int = 100) -> list[dict[str, Any]]:
    cur = await conn.execute(q("inspect_active_leases"), {"limit": limit})
    return list(await cur.fetchall())


async def stuck_runs(conn: Conn, limit: int = 100) -> list[dict[str, Any]]:
    cur = await conn.execute(q("inspect_stuck_runs"), {"limit": limit})
    return list(await cur.fetchall())


async def recent_failures(conn: Conn, limit: int = 20) -> list[dict[str, Any]]:
    cur = await conn.execute(q("inspect_recent_failures"), {"limit": limit})
    return list(await cur.fetchall())


async def run_timeline(conn: Conn, run_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(q("inspect_run_timeline"), {"run_id": run_id})
    return list(await cur.fetchall())


async def functions(conn: Conn, *, include_archived: bool = False) -> list[dict[str, Any]]:
    cur = await conn.execute(q("inspect_functions"), {"include_archived": include_archived})
    return list(await cur.fetchall())


async def function(conn: Conn, ref: str) -> dict[str, Any] | None:
    """A function by id or slug, with its app's name, URL and sync state."""
    cur = await conn.execute(q("inspect_function_get"), {"ref": ref})
    return await cur.fetchone()


async def function_run_counts(conn: Conn, function_id: UUID, since: datetime) -> dict[str, int]:
    cur = await conn.execute(q("inspect_function_run_counts"), {"function_id": function_id, "since": since})
    return {r["status"]: int(r["runs"]) for r in await cur.fetchall()}


async def runs_for_events(conn: Conn, event_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """event id → the runs it started (or is part of), for a page of events."""
    if not event_ids:
        return {}
    cur = await conn.execute(q("inspect_runs_for_events"), {"event_ids": list(event_ids)})
    out: dict[str, list[dict[str, Any]]] = {}
    for row in await cur.fetchall():
        out.setdefault(row["event_id"], []).append(row)
    return out


async def run_pending(conn: Conn, run_id: str) -> list[dict[str, Any]]:
    """A live run's queue items and pauses: what it is doing or waiting for now."""
    cur = await conn.execute(q("inspect_run_pending"), {"run_id": run_id})
    return list(await cur.fetchall())


async def run_origin(conn: Conn, run_id: str) -> dict[str, Any] | None:
    """The run a run replays or reruns (`replay_of`) and the step.invoke that started it."""
    cur = await conn.execute(q("inspect_run_origin"), {"run_id": run_id})
    return await cur.fetchone()


async def failure_handlers(conn: Conn, run_id: str, ended_at: datetime) -> list[dict[str, Any]]:
    """The runs a failed run's inngest/function.failed event started (its onFailure handler...)."""
    cur = await conn.execute(q("inspect_run_failure_handlers"), {"run_id": run_id, "ended_at": ended_at})
    return list(await cur.fetchall())


async def run_chart(conn: Conn, since: datetime, bucket_s: int, function_id: UUID | None = None) -> list[dict[str, Any]]:
    """Runs made and ended per bucket, with their duration histogram (pgqueue.run_counts)."""
    cur = await conn.execute(q("inspect_run_chart"), {"since": since, "bucket_s": bucket_s, "function_id": function_id})
    return list(await cur.fetchall())


async def live_count(conn: Conn, function_id: UUID | None = None) -> int:
    cur = await conn.execute(q("inspect_live_count"), {"function_id": function_id})
    row = await cur.fetchone()
    return int(row["live"]) if row else 0


async def concurrency_in_use(conn: Conn, function_id: UUID | None = None) -> list[dict[str, Any]]:
    """Calls in flight per function against its concurrency limit."""
    cur = await conn.execute(q("inspect_concurrency_in_use"), {"function_id": function_id})
    return list(await cur.fetchall())
