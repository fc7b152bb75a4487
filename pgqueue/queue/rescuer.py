"""The Rescuer service: expired leases go back to the queue through the retry path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from pgqueue.db.notify import Wakeup
from pgqueue.store import control, queue

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RescueTick:
    rescued: int


class Rescuer:
    def __init__(self, pool: AsyncConnectionPool, *, queue_wakeup: Wakeup | None = None, interval_s: float = 2.0) -> None:
        self.pool = pool
        self.queue_wakeup = queue_wakeup
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> RescueTick:
        async with self.pool.connection() as conn:
            n = await queue.rescue_expired(conn)
            n += await queue.unblock_sweep(conn)
            # Housekeeping that must not grow without bound: expired dedupe/idempotency windows.
            await control.prune_expired_keys(conn)
        if n:
            log.warning("rescued %d items whose lease expired", n)
            if self.queue_wakeup:
                self.queue_wakeup.set()
        return RescueTick(n)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="pgqueue-rescuer")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rescue round failed")
            await asyncio.sleep(self.interval_s)
