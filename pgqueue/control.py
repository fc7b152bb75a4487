"""Operator actions on runs (cancel), as plain database operations that work across restarts."""

from __future__ import annotations

from typing import Any

from pgqueue.db.pool import Conn
from pgqueue.errors import Conflict, NotFound
from pgqueue import transitions
from pgqueue.store import runs


async def cancel_run(conn: Conn, run_id: str, *, reason: str) -> dict[str, Any]:
    """Cancel a live run: queued items removed, an in-flight call's result discarded (its lease
    is fenced by the deleted item), inngest/function.cancelled emitted. Lock order: run, items."""
    async with conn.transaction():
        locked = await runs.lock(conn, run_id)
        if locked is None:
            raise NotFound(f"run {run_id} not found")
        if locked["status"] not in ("queued", "running"):
            raise Conflict(f"run {run_id} already ended with status {locked['status']}")
        await transitions.cancel(conn, run_id, reason=reason)
        row = await runs.get(conn, run_id)
    assert row is not None
    return row
