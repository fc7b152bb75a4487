"""The loop shared by background services: one round, then a pause, forever, surviving errors.

Each service keeps its testable `run_once()`; `round()` is what the loop calls (often run_once,
the runner drains) and `pause()` how it waits (a sleep, or a NOTIFY wake-up with a poll timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)


class LoopService:
    name = "service"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    async def round(self) -> None:
        raise NotImplementedError

    async def pause(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"pgqueue-{self.name}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s round failed; retrying after its pause", self.name)
            await self.pause()
