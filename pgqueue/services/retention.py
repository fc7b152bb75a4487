"""Retention: history older than `PGQUEUE_RETENTION_DAYS` goes a partition at a time.

Events, runs, steps and attempts live in time partitions (migration 0017). A round expires every
partition set past the window (pgqueue.history_expire_v1): the few rows retention keeps — live runs
and their steps, attempts and events, runs that ended within the window, what an idempotency or
dedupe window or the runner's inbox still names — move into the small archive partition below the
sets, and the rest is dropped with its files: no WAL per row, no dead tuples, space returned at
once. Then it prunes, in small batches, the rows the archive (and the DEFAULT partitions, for ids
that are not ULIDs of a covered time) no longer keeps, old bulk-cancellation records and old
webhook deliveries.

An expiry holds ACCESS EXCLUSIVE on the parent tables for milliseconds; it waits for a lock at most
`lock_timeout_ms` and otherwise gives up until the next round, so the queue never waits behind it
for long. Partitions are made ahead of time by the rescuer (pgqueue.queue.rescuer), not here.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg_pool import AsyncConnectionPool

from pgqueue.service_loop import LoopService
from pgqueue.store import partitions, webhooks

log = logging.getLogger(__name__)

BATCH = 1000


@dataclass(frozen=True, slots=True)
class RetentionTick:
    expired: tuple[partitions.Expired, ...] = field(default_factory=tuple)  # partition sets, in order
    runs_deleted: int = 0  # row by row, from the archive and default partitions
    events_deleted: int = 0
    cancellations_deleted: int = 0
    done: bool = True  # False: a lock was busy or a budget ran out; the next round goes on


class Retention(LoopService):
    """The retention service: `run_once()` expires what is due and prunes up to `max_batches`."""

    name = "retention"

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        retention_days: float,
        interval_s: float = 300.0,
        batch_size: int = BATCH,
        max_batches: int = 20,
        lock_timeout_ms: int = 500,
    ) -> None:
        self.pool = pool
        self.retention = timedelta(days=retention_days)
        self.interval_s = interval_s
        self.batch_size = batch_size
        self.max_batches = max_batches
        self.lock_timeout_ms = lock_timeout_ms
        self._last: RetentionTick | None = None
        super().__init__()

    async def run_once(self, *, now: datetime | None = None) -> RetentionTick:
        now = now or datetime.now(UTC)
        seconds = self.retention.total_seconds()
        expired: list[partitions.Expired] = []
        done = True
        for _ in range(100):  # a set's runs, then its events, then the emptied sets: bounded anyway
            try:
                async with self.pool.connection() as conn, conn.transaction():
                    await partitions.lock_timeout(conn, self.lock_timeout_ms)
                    step = await partitions.expire(conn, seconds, now=now)
            except psycopg.errors.LockNotAvailable:
                log.info("retention: the history tables were busy for %d ms; the next round retries",
                         self.lock_timeout_ms)
                done = False
                break
            if step is None:
                break
            expired.append(step)
        runs = events = 0
        for _ in range(self.max_batches):
            async with self.pool.connection() as conn, conn.transaction():
                r, e = await partitions.prune(conn, seconds, self.batch_size, now=now)
            runs, events = runs + r, events + e
            if r < self.batch_size and e < self.batch_size:
                break
        else:
            done = False
        async with self.pool.connection() as conn, conn.transaction():
            cancellations = await partitions.prune_cancellations(conn, now - self.retention, self.batch_size)
        deliveries = 0
        for _ in range(self.max_batches):  # webhook deliveries (with the raw requests of failed ones)
            async with self.pool.connection() as conn, conn.transaction():
                n = await webhooks.prune_deliveries(conn, now - self.retention, self.batch_size)
            deliveries += n
            if n < self.batch_size:
                break
        else:
            done = False
        if deliveries:
            log.info("retention: deleted %d webhook deliveries older than %s", deliveries,
                     (now - self.retention).isoformat(timespec="seconds"))
        for step in expired:
            log.info("retention: partition %s %s expired, %d rows kept", step.suffix, step.part, step.kept)
        if runs or events or cancellations:
            log.info("retention: deleted %d runs, %d events and %d cancellation records older than %s",
                     runs, events, cancellations, (now - self.retention).isoformat(timespec="seconds"))
        tick = RetentionTick(tuple(expired), runs, events, cancellations, done)
        self._last = tick
        return tick

    async def round(self) -> None:
        await self.run_once()

    async def pause(self) -> None:
        busy = self._last is not None and not self._last.done
        await asyncio.sleep(min(self.interval_s, 5.0) if busy else self.interval_s)
