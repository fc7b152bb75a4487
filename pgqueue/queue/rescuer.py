"""The Rescuer service: expired leases go back to the queue as counted interruptions; an item
interrupted too often fails its run with LeaseExpired (see pgqueue.queue.interrupts).

Each round also keeps the queue tidy: items parked on a concurrency key with a free slot are
unparked (a wake-up the normal path missed: counted and logged apart, none expected), work that
paused functions queued since their pause is parked with the rest of their held work, and what
would otherwise grow without bound is pruned: expired dedupe and idempotency windows, cancelOn
listeners past their timeout, realtime messages past their retention, and once a minute the pause
paths no pause uses any more (it briefly locks out pause creation) and the throttle and rate-limit
keys idle for a minute (it reads that table). Once a minute it also makes the history's time
partitions ahead of need (pgqueue.history_ensure_v1), so no insert waits for one."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import psycopg
from psycopg_pool import AsyncConnectionPool

from pgqueue.db.notify import Wakeup
from pgqueue.queue import interrupts
from pgqueue.service_loop import LoopService
from pgqueue.store import flow_control, operations, partitions, pauses, queue
from pgqueue.store import realtime as realtime_store

log = logging.getLogger(__name__)


PATHS_PRUNE_INTERVAL_S = 60.0  # pause paths and idle GCRA keys, and history partitions made ahead
PARTITIONS_AHEAD_S = 86400.0  # a day of a stopped rescuer costs nothing (with sets of 8 hours or more)
PARTITION_LOCK_TIMEOUT_MS = 2000


@dataclass(frozen=True, slots=True)
class RescueTick:
    rescued: int  # items whose lease expired, handed back to the queue
    pruned: int = 0  # housekeeping rows deleted: expired windows and listeners, unused pause paths
    unparked: int = 0  # parked items whose concurrency slot was free: a wake-up the normal path missed


class Rescuer(LoopService):
    name = "rescuer"

    def __init__(
        self, pool: AsyncConnectionPool, *, queue_wakeup: Wakeup | None = None, interval_s: float = 2.0,
        backoff_scale: float = 1.0, partition_width_s: float = 86400.0,
        realtime_retention_s: float = 600.0,
    ) -> None:
        self.pool = pool
        self.backoff_scale = backoff_scale
        self.partition_width_s = partition_width_s
        self.realtime_retention_s = realtime_retention_s
        self.queue_wakeup = queue_wakeup
        self.interval_s = interval_s
        self._paths_pruned_at: float | None = None
        self._gcra_pruned_at: float | None = None
        self._partitions_checked_at: float | None = None
        super().__init__()

    async def run_once(self) -> RescueTick:
        async with self.pool.connection() as conn:
            rescued = await queue.rescue_expired(conn, max_interrupts=interrupts.MAX_INTERRUPTS,
                                                 backoff_scale=self.backoff_scale)
            unparked = await queue.unblock_sweep(conn)
            if rescued or unparked:
                await queue.count_housekeeping(conn, leases_expired=len(rescued), missed_unparks=unparked)
            await queue.hold_paused(conn)
            pruned = await operations.prune_expired_keys(conn) + await pauses.expire_cancel_listeners(conn)
            pruned += await realtime_store.prune(conn, retention_s=self.realtime_retention_s)
            now = time.monotonic()
            if self._paths_pruned_at is None or now - self._paths_pruned_at >= PATHS_PRUNE_INTERVAL_S:
                paths = await pauses.prune_paths(conn)
                if paths is not None:  # None: pauses being created kept it busy; next round
                    self._paths_pruned_at = now
                    pruned += paths
            if self._gcra_pruned_at is None or now - self._gcra_pruned_at >= PATHS_PRUNE_INTERVAL_S:
                pruned += await flow_control.prune_idle_gcra(conn)
                self._gcra_pruned_at = now
        if self._partitions_checked_at is None or now - self._partitions_checked_at >= PATHS_PRUNE_INTERVAL_S:
            await self.make_partitions()
            async with self.pool.connection() as conn:
                stale = await partitions.reconcile_live_runs(conn)
            if stale:
                log.warning("%d runs had ended without their end recorded in live_runs", stale)
            self._partitions_checked_at = now
        await interrupts.fail_exhausted(self.pool, rescued, interrupts.LEASE_EXPIRED_ERROR)
        if rescued:
            log.warning("rescued %d items whose lease expired", len(rescued))
        if unparked:
            log.warning("unparked %d items waiting on a concurrency key with a free slot (a missed wake-up)",
                        unparked)
        if (rescued or unparked) and self.queue_wakeup:
            self.queue_wakeup.set()
        return RescueTick(len(rescued), pruned, unparked)

    async def make_partitions(self) -> int:
        """History partitions ahead of time (never on the hot path): each set in its own transaction,
        giving up on a busy lock until the next check. Returns how many sets were made."""
        # every set lies on the hot path (its locks): a day ahead, but at most three sets and at least one
        ahead_s = max(self.partition_width_s, min(PARTITIONS_AHEAD_S, 3 * self.partition_width_s))
        made = 0
        for _ in range(64):
            try:
                async with self.pool.connection() as conn, conn.transaction():
                    if not await partitions.partitions_due(conn, ahead_s):
                        break
                    await partitions.lock_timeout(conn, PARTITION_LOCK_TIMEOUT_MS)
                    made += await partitions.ensure_partitions(conn, self.partition_width_s, ahead_s)
            except psycopg.errors.LockNotAvailable:
                log.info("history partitions: a table was busy; the next check makes them")
                break
        if made:
            log.info("made %d history partition set(s) ahead", made)
        return made

    async def round(self) -> None:
        await self.run_once()

    async def pause(self) -> None:
        await asyncio.sleep(self.interval_s)
