"""The engine's own interruptions of a call, bounded: every way an item goes back to the queue
without the app's answer being applied is counted on the item (`queue_items.interrupts`).

An interruption is not the app's failure, so it does not use one of the app's attempts: its lease
expired (the worker crashed or hung: LeaseExpired), applying the answer failed (EngineError), or an
executor invocation ended with the call still running (CallTimedOut). The first one retries at once,
later ones after the retry backoff; at MAX_INTERRUPTS the run fails with the named error, so no
item can go round forever.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from pgqueue import errors
from pgqueue.runs import transitions
from pgqueue.store import queue, runs, steps

log = logging.getLogger(__name__)

MAX_INTERRUPTS = 5


LEASE_EXPIRED_ERROR = {
    "name": "LeaseExpired",
    "message": f"the call outlived its lease {MAX_INTERRUPTS} times (worker crash, hang or timeout); "
               "the run is failed rather than retried forever",
}


def engine_error(exc: BaseException) -> dict[str, str]:
    # The exception's type and first line only: no traceback, no parameters (they may carry secrets).
    return {"name": "EngineError",
            "message": f"pgqueue could not apply the call's result: {errors.brief(exc)}"}


async def interrupt(
    pool: AsyncConnectionPool, leases: Sequence[tuple[int, UUID]], error: dict[str, Any], *,
    backoff_scale: float = 1.0,
) -> int:
    """Hand leased items back, counted; fail the runs of those whose budget is spent. Returns how
    many items were handed back or ended."""
    async with pool.connection() as conn:
        rows = await queue.interrupt(conn, leases, error, max_interrupts=MAX_INTERRUPTS,
                                     backoff_scale=backoff_scale)
    await fail_exhausted(pool, rows, error)
    return len(rows)


async def fail_exhausted(
    pool: AsyncConnectionPool, rows: Sequence[dict[str, Any]], error: dict[str, Any]
) -> int:
    """Fail the run of every exhausted row (held with its lease token). Each in its own transaction,
    so one that cannot be failed does not hold up the others; if even that fails, the item's lease
    runs out and the rescuer hands it over again."""
    failed = 0
    for row in rows:
        if not row["exhausted"]:
            continue
        try:
            if await _fail(pool, row, error):
                failed += 1
        except Exception:
            log.exception("could not fail run %s after its interruptions; retrying when its lease expires",
                          row["run_id"])
    return failed


async def _fail(pool: AsyncConnectionPool, row: dict[str, Any], error: dict[str, Any]) -> bool:
    async with pool.connection() as conn, conn.transaction():
        run = await runs.lock(conn, row["run_id"])
        held = await queue.lock_leased(conn, row["id"], row["lease_token"])
        if run is None or held is None:
            return False
        live = run["status"] in ("queued", "running")
        await steps.record_attempt(
            conn, run_id=row["run_id"], item_id=row["id"], step_id=held["step_id"], attempt=held["attempt"],
            outcome="failed" if live else "discarded", error=error,
            started_at=held["leased_at"] or datetime.now(UTC),
        )
        if not live:  # the run ended meanwhile (a cancel): only the item is left to drop
            await queue.delete(conn, row["id"])
            return False
        log.warning("run %s failed: %s", row["run_id"], error["message"])
        return await transitions.finish(conn, run, "failed", error=error)
