"""Run rows: creation, the call context, state-guarded finish and cancel, reads for the API."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from pgqueue.db.pool import Conn
from pgqueue.db.queries import q


async def create_many(conn: Conn, runs: Sequence[dict[str, Any]]) -> int:
    """runs: [{id, function_id, event_id, event_ids, max_attempts}]; each gets its first call item."""
    if not runs:
        return 0
    payload = [{**r, "function_id": str(r["function_id"])} for r in runs]
    cur = await conn.execute(q("run_create"), {"runs": Jsonb(payload)})
    row = await cur.fetchone()
    return int(row["created"]) if row else 0


async def context(conn: Conn, run_id: str) -> dict[str, Any] | None:
    """pgqueue.run_context_v1 (None: the run is gone), starting the run if its claim could not."""
    cur = await conn.execute(q("run_context"), {"run_id": run_id})
    row = await cur.fetchone()
    return row["context"] if row else None


async def lock(conn: Conn, run_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(q("run_lock"), {"run_id": run_id})
    return await cur.fetchone()


async def set_request_version(conn: Conn, run_id: str, version: int) -> None:
    await conn.execute(q("run_set_request_version"), {"run_id": run_id, "version": version})


async def force_step_plan(conn: Conn, run_id: str) -> None:
    await conn.execute(q("run_force_step_plan"), {"run_id": run_id})


async def finish(
    conn: Conn, run_id: str, *, status: str, output: Any = None, error: Any = None,
    call: tuple[datetime, int, int] | None = None,
) -> dict[str, Any] | None:
    """Completed/failed; None when the run was already finished (someone else won). `call`: the
    start, attempt and queue item of the call whose answer ended it (recorded on the run, not as an
    attempt)."""
    cur = await conn.execute(
        q("run_finish"),
        {
            "run_id": run_id,
            "status": status,
            "output": Jsonb(output) if output is not None else None,
            "error": Jsonb(error) if error is not None else None,
            "call_started_at": call[0] if call else None,
            "call_attempt": call[1] if call else None,
            "call_item_id": call[2] if call else None,
        },
    )
    return await cur.fetchone()


async def cancel(conn: Conn, run_id: str, reason: str) -> dict[str, Any] | None:
    cur = await conn.execute(q("run_cancel"), {"run_id": run_id, "reason": reason})
    return await cur.fetchone()


async def get(conn: Conn, run_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(q("run_get"), {"run_id": run_id})
    return await cur.fetchone()


async def list_for_event(conn: Conn, event_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(q("run_list_for_event"), {"event_id": event_id})
    return list(await cur.fetchall())


async def list_runs(
    conn: Conn,
    *,
    status: str | None = None,
    function: str | UUID | None = None,
    before_id: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Newest first; keyset paging with `before_id` (the last id of the previous page)."""
    cur = await conn.execute(
        q("run_list"),
        {
            "status": status,
            "function": str(function) if function else None,
            "before_id": before_id,
            "created_after": created_after,
            "created_before": created_before,
            "limit": limit,
        },
    )
    return list(await cur.fetchall())


async def idempotency_claim(conn: Conn, function_id: UUID, key: str, run_id: str) -> bool:
    cur = await conn.execute(q("idempotency_claim"), {"function_id": function_id, "key": key, "run_id": run_id})
    row = await cur.fetchone()
    return bool(row and row["claimed"])


async def singleton_claim(conn: Conn, function_id: UUID, key: str, run_id: str) -> str | None:
    """None when the new run holds the slot, else the id of the active run holding it."""
    cur = await conn.execute(q("singleton_claim"), {"function_id": function_id, "key": key, "run_id": run_id})
    row = await cur.fetchone()
    return row["holder"] if row else None


async def singleton_take(conn: Conn, function_id: UUID, key: str, run_id: str) -> None:
    await conn.execute(q("singleton_take"), {"function_id": function_id, "key": key, "run_id": run_id})


async def singleton_release(conn: Conn, run_id: str) -> None:
    await conn.execute(q("singleton_release"), {"run_id": run_id})


async def set_correlation(conn: Conn, run_id: str, correlation_id: str) -> None:
    """Mark a run started by step.invoke with the caller's correlation id."""
    await conn.execute(q("run_set_correlation"), {"run_id": run_id, "correlation_id": correlation_id})


async def page(
    conn: Conn,
    *,
    time_field: str,
    after_time: datetime,
    before_time: datetime,
    statuses: list[str] | None = None,
    function_ids: list[UUID] | None = None,
    app_ids: list[UUID] | None = None,
    cursor: str | None = None,
    oldest_first: bool = False,
    limit: int = 40,
) -> list[dict[str, Any]]:
    """Runs whose `time_field` (queued, started or ended) is in [after_time, before_time), in keyset
    pages by id: newest first after `cursor` (the last id of the previous page), or oldest first."""
    params = {
        "time_field": time_field, "from": after_time, "until": before_time, "statuses": statuses,
        "function_ids": function_ids, "app_ids": app_ids, "limit": limit,
    }
    if oldest_first:
        cur = await conn.execute(q("run_page_oldest_first"), {**params, "after_id": cursor})
    else:
        cur = await conn.execute(q("run_page"), {**params, "before_id": cursor})
    return list(await cur.fetchall())


async def page_count(
    conn: Conn,
    *,
    time_field: str,
    after_time: datetime,
    before_time: datetime,
    statuses: list[str] | None = None,
    function_ids: list[UUID] | None = None,
    app_ids: list[UUID] | None = None,
    cap: int = 10_000,
) -> int:
    """How many runs `page`'s filter matches, counted up to `cap`."""
    cur = await conn.execute(q("run_page_count"), {
        "time_field": time_field, "from": after_time, "until": before_time, "statuses": statuses,
        "function_ids": function_ids, "app_ids": app_ids, "cap": cap,
    })
    row = await cur.fetchone()
    return int(row["runs"]) if row else 0


async def search_page(
    conn: Conn, *, after: datetime, before: datetime, before_id: str | None, function_id: UUID | None,
    status: str | None, contains: dict[str, Any] | None, limit: int,
) -> list[dict[str, Any]]:
    """A page of candidate runs for a search, each with its event (sql/queries/runs.sql)."""
    cur = await conn.execute(q("run_search_page"), {
        "after": after, "before": before, "before_id": before_id, "function_id": function_id, "status": status,
        "contains": Jsonb(contains) if contains is not None else None, "limit": limit})
    return list(await cur.fetchall())


async def search_timeout(conn: Conn, ms: int) -> None:
    """Bound every statement of the caller's transaction to `ms` milliseconds."""
    await conn.execute(q("search_timeout"), {"ms": ms})
