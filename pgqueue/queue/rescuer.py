"""The Rescuer service: expired leases go back to the queue as counted interruptions; an item
interrupted too often fails its run with LeaseExpired (see pgqueue.queue.interrupts).

Each round also keeps the queue tidy: items parked on a concurrency key with a free slot are
unparked (a lost wake-up), and work that paused functions queued since their pause is parked
with the rest of their held work."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from pgqueue.db.notify import Wakeup
from pgqueue.queue import interrupts
from pgqueue.service import LoopService
from pgqueue.store import control, queue

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RescueTick:
    rescued: int


class Rescuer(LoopService):
    name = "rescuer"

    def __init__(
        self, pool: AsyncConnectionPool, *, queue_wakeup: Wakeup | None = None, interval_s: float = 2.0,
        backoff_scale: float = 1.0,
    ) -> None:
        self.pool = pool
        self.backoff_scale = backoff_scale
        self.queue_wakeup = queue_wakeup
        self.interval_s = interval_s
        super().__init__()

    async def run_once(self) -> RescueTick:
        async with self.pool.connection() as conn:
            rescued = await queue.rescue_expired(conn, max_interrupts=interrupts.MAX_INTERRUPTS,
                                                 backoff_scale=self.backoff_scale)
            n = len(rescued) + await queue.unblock_sweep(conn)
            await queue.hold_paused(conn)
            # Housekeeping that must not grow without bound: expired dedupe/idempotency windows.
            await control.prune_expired_keys(conn)
        await interrupts.fail_exhausted(self.pool, rescued, interrupts.LEASE_EXPIRED_ERROR)
        if n:
            log.warning("rescued %d items whose lease expired", n)
            if self.queue_wakeup:
                self.queue_wakeup.set()
        return RescueTick(n)

    async def round(self) -> None:
        await self.run_once()

    async def pause(self) -> None:
        await asyncio.sleep(self.interval_s)
