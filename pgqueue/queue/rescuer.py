"""The Rescuer service: expired leases go back to the queue as counted interruptions; an item
interrupted too often fails its run with LeaseExpired (see pgqueue.queue.interrupts).

Each round also keeps the queue tidy: items parked on a concurrency key with a free slot are
unparked (a lost wake-up), work that paused functions queued since their pause is parked with the
rest of their held work, and what would otherwise grow without bound is pruned: expired dedupe and
idempotency windows, cancelOn listeners past their timeout, realtime messages past their retention,
and once a minute the pause paths no pause uses any more (it briefly locks out pause creation) and
the throttle and rate-limit keys idle for a minute (it reads that table)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from pgqueue.db.notify import Wakeup
from pgqueue.queue import interrupts
from pgqueue.service_loop import LoopService
from pgqueue.store import flow_control, operations, pauses, queue
from pgqueue.store import realtime as realtime_store

log = logging.getLogger(__name__)


PATHS_PRUNE_INTERVAL_S = 60.0  # pause paths and idle GCRA keys


@dataclass(frozen=True, slots=True)
class RescueTick:
    rescued: int
    pruned: int = 0  # housekeeping rows deleted: expired windows and listeners, unused pause paths


class Rescuer(LoopService):
    name = "rescuer"

    def __init__(
        self, pool: AsyncConnectionPool, *, queue_wakeup: Wakeup | None = None, interval_s: float = 2.0,
        backoff_scale: float = 1.0, realtime_retention_s: float = 600.0,
    ) -> None:
        self.pool = pool
        self.backoff_scale = backoff_scale
        self.realtime_retention_s = realtime_retention_s
        self.queue_wakeup = queue_wakeup
        self.interval_s = interval_s
        self._paths_pruned_at: float | None = None
        self._gcra_pruned_at: float | None = None
        super().__init__()

    async def run_once(self) -> RescueTick:
        async with self.pool.connection() as conn:
            rescued = await queue.rescue_expired(conn, max_interrupts=interrupts.MAX_INTERRUPTS,
                                                 backoff_scale=self.backoff_scale)
            n = len(rescued) + await queue.unblock_sweep(conn)
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
        await interrupts.fail_exhausted(self.pool, rescued, interrupts.LEASE_EXPIRED_ERROR)
        if n:
            log.warning("rescued %d items whose lease expired", n)
            if self.queue_wakeup:
                self.queue_wakeup.set()
        return RescueTick(n, pruned)

    async def round(self) -> None:
        await self.run_once()

    async def pause(self) -> None:
        await asyncio.sleep(self.interval_s)
