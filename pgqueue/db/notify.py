"""LISTEN/NOTIFY wake-ups. A notification is only a hint that work may exist; every consumer also
polls, so a lost NOTIFY (listener down, connection dropped) only delays work until the next poll."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "pgqueue_events"
QUEUE_CHANNEL = "pgqueue_queue"


class Wakeup:
    """An asyncio.Event that coalesces many wake-ups into one."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        finally:
            self._event.clear()
        return True


class Listener:
    """One dedicated connection LISTENing on channels; reconnects after failures."""

    def __init__(self, conninfo: str, wakeups: dict[str, Wakeup]) -> None:
        self._conninfo = conninfo
        self._wakeups = wakeups
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pgqueue-listener")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        delay = 0.2
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    for channel in self._wakeups:
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self.connected.set()
                    delay = 0.2
                    # Work may have arrived while we were not listening.
                    for wakeup in self._wakeups.values():
                        wakeup.set()
                    async for note in conn.notifies():
                        wakeup = self._wakeups.get(note.channel)
                        if wakeup:
                            wakeup.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost: polling covers the gap
                self.connected.clear()
                log.warning("listener connection lost (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
