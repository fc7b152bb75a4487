"""Retention: delete finished runs (with their steps and attempts), old events, old bulk
cancellation records and old webhook deliveries after `PGQUEUE_RETENTION_DAYS`.

Deletes go in small batches, each its own short transaction with `FOR UPDATE SKIP LOCKED`, so the
pruner never waits on a row the queue is using and never holds locks the queue waits on. Nothing
a live window still needs is deleted: runs named by an open idempotency window, events waiting in
the runner's inbox, events of any remaining run (live, recent or replayed) and events recorded by
an open dedupe window stay (see sql/queries/retention.sql). Expired dedupe and idempotency rows
themselves are pruned by the rescuer as their windows close, as are expired cancelOn listeners and
unused pause paths (pgqueue.queue.rescuer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from pgqueue.db.pool import Conn
from pgqueue.db.queries import q
from pgqueue.store import webhooks

log = logging.getLogger(__name__)

BATCH = 500
PruneFn = Callable[[Conn, datetime, int], Awaitable[int]]


async def prune_runs(conn: Conn, cutoff: datetime, limit: int = BATCH) -> int:
    """One batch of finished runs that ended before `cutoff`; returns how many were deleted."""
    cur = await conn.execute(q("retention_prune_runs"), {"cutoff": cutoff, "limit": limit})
    return len(await cur.fetchall())


async def prune_events(conn: Conn, cutoff: datetime, limit: int = BATCH) -> int:
    """One batch of events received before `cutoff` that nothing refers to any more."""
    cur = await conn.execute(q("retention_prune_events"), {"cutoff": cutoff, "limit": limit})
    return len(await cur.fetchall())


async def prune_cancellations(conn: Conn, cutoff: datetime, limit: int = BATCH) -> int:
    cur = await conn.execute(q("retention_prune_cancellations"), {"cutoff": cutoff, "limit": limit})
    return len(await cur.fetchall())


@dataclass(frozen=True, slots=True)
class RetentionTick:
    runs_deleted: int
    events_deleted: int
    cancellations_deleted: int
    done: bool  # False when the batch budget ran out with more to delete (the next tick goes on)


class Retention:
    """The retention service: `run_once()` deletes up to `max_batches` batches per kind of row."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        retention_days: float,
        interval_s: float = 300.0,
        batch_size: int = BATCH,
        max_batches: int = 20,
        pause_s: float = 0.05,
    ) -> None:
        self.pool = pool
        self.retention = timedelta(days=retention_days)
        self.interval_s = interval_s
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.pause_s = pause_s
        self._task: asyncio.Task[None] | None = None

    async def run_once(self, *, now: datetime | None = None) -> RetentionTick:
        cutoff = (now or datetime.now(UTC)) - self.retention
        # Runs before events: an event is kept while any run still names it.
        runs, runs_done = await self._drain(prune_runs, cutoff)
        events, events_done = await self._drain(prune_events, cutoff)
        cancellations, cancellations_done = await self._drain(prune_cancellations, cutoff)
        deliveries, deliveries_done = await self._drain(webhooks.prune_deliveries, cutoff)
        cancellations_done = cancellations_done and deliveries_done
        if deliveries:
            log.info("retention: deleted %d webhook deliveries older than %s", deliveries,
                     cutoff.isoformat(timespec="seconds"))
        if runs or events or cancellations:
            log.info(
                "retention: deleted %d runs, %d events and %d cancellation records older than %s",
                runs, events, cancellations, cutoff.isoformat(timespec="seconds"),
            )
        return RetentionTick(runs, events, cancellations, runs_done and events_done and cancellations_done)

    async def _drain(self, prune: PruneFn, cutoff: datetime) -> tuple[int, bool]:
        total = 0
        for _ in range(self.max_batches):
            async with self.pool.connection() as conn, conn.transaction():
                n = await prune(conn, cutoff, self.batch_size)
            total += n
            if n < self.batch_size:
                return total, True
            await asyncio.sleep(self.pause_s)  # let the queue's own statements in between batches
        return total, False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="pgqueue-retention")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                tick = await self.run_once()
                delay = self.interval_s if tick.done else min(self.interval_s, 5.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention round failed; retrying after the interval")
                delay = self.interval_s
            await asyncio.sleep(delay)
