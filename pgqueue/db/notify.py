"""LISTEN/NOTIFY wake-ups. A notification is only a hint that work may exist; every consumer also
polls, so a lost NOTIFY (listener down, connection dropped) only delays work until the next poll.

Realtime also reads the payloads (the ids of new messages, pgqueue/realtime/hub.py) and is told
when the listener (re)connects, since notifications sent while it was away are lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "pgqueue_events"
QUEUE_CHANNEL = "pgqueue_queue"
REALTIME_CHANNEL = "pgqueue_realtime"  # payload: ids of new realtime messages, comma-separated


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
    """One dedicated connection LISTENing on channels; reconnects after failures.

    `payloads` maps a channel to a function called with each notification's payload, in the order
    PostgreSQL delivers them (commit order); `on_connect` is called each time the connection is
    (re)established, before any notification of that connection."""

    def __init__(
        self,
        conninfo: str,
        wakeups: dict[str, Wakeup],
        *,
        payloads: dict[str, Callable[[str], None]] | None = None,
        on_connect: Callable[[], None] | None = None,
        name: str = "pgqueue-listener",
    ) -> None:
        self._conninfo = conninfo
        self._wakeups = wakeups
        self._payloads = payloads or {}
        self._on_connect = on_connect
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

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
                    for channel in {**self._wakeups, **self._payloads}:
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self.connected.set()
                    delay = 0.2
                    # Work may have arrived while we were not listening.
                    if self._on_connect is not None:
                        self._on_connect()
                    for wakeup in self._wakeups.values():
                        wakeup.set()
                    async for note in conn.notifies():
                        handler = self._payloads.get(note.channel)
                        if handler is not None:
                            handler(note.payload)
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
