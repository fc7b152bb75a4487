"""The hub of one API process: its subscribers, and the loop that brings them the messages of
their channels from PostgreSQL, in order.

Messages reach the hub two ways. A NOTIFY on `pgqueue_realtime` names the ids of new messages; the
hub reads those of the channels it has subscribers for (`realtime_fetch_ids`). And for each channel
it can read the messages after the last id it saw there (`realtime_fetch_after`): for a subscriber
that joins (it is not sent anything live until that read has brought it up to date), after the
listener reconnects (notifications sent meanwhile are lost), now and then as a safety net, and on
every round when the hub polls instead of listening (behind a transaction pooler, where LISTEN
cannot work, unless PGQUEUE_REALTIME_LISTEN_URL gives a direct connection). Within a channel ids
follow commit order (sql/functions/realtime.sql), so "after the last id" never skips a message, and
every subscriber gets a channel's messages once each, in id order.

One loop reads and delivers; handing a message to a subscriber never waits. Each subscriber has a
bounded buffer (PGQUEUE_REALTIME_BUFFER_MESSAGES / _BYTES) that its connection drains; a subscriber
that falls that far behind (it stopped reading, its network is slow) is closed with the reason
logged, so it never holds up publishers, the loop or other subscribers, and its memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from pgqueue.db import notify
from pgqueue.realtime import tokens
from pgqueue.store import realtime as store

log = logging.getLogger(__name__)

# Most messages of one channel read in one go; a longer backlog takes further rounds at once.
FETCH_LIMIT = 1000
# Most ids read in one query; ids that pile up past PENDING_LIMIT (the loop fell behind a burst)
# are dropped for a per-channel catch-up instead, which finds the same messages.
IDS_PER_QUERY = 5000
PENDING_LIMIT = 100_000
# While listening, channels are also read "after the last id" this often (a safety net).
SAFETY_S = 30.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as subscribers receive it, shared by all of them: `text` is the wire JSON, or
    for a durable endpoint's stream (`raw`) the SSE text itself."""

    id: int
    channel: str
    topic: str
    text: str
    raw: bool

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Delivery:
        raw = row["kind"] == "raw"
        return cls(int(row["id"]), row["channel"], row["topic"], row["raw"] if raw else row["wire"], raw)

    @property
    def size(self) -> int:
        return len(self.text)


class Subscriber:
    """One connection's subscription: a channel, topics, and the messages waiting to be sent."""

    def __init__(self, channel: str, topics: Iterable[str], *, start_id: int, max_messages: int,
                 max_bytes: int) -> None:
        self.channel = channel
        self.topics = frozenset(topics)
        self.last_id = start_id
        self.live = False  # brought up to date once; until then only its catch-up read feeds it
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.closed: str | None = None  # why, once closed
        self.delivered = 0
        self._queue: deque[Delivery] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self._closed = asyncio.Event()

    @property
    def queued(self) -> tuple[int, int]:
        return len(self._queue), self._bytes

    def wants(self, message: Delivery) -> bool:
        return message.id > self.last_id and message.topic in self.topics

    def offer(self, message: Delivery) -> bool:
        """Queue a message without waiting; False (and closed) when that would pass a bound."""
        if self.closed is not None:
            return False
        if len(self._queue) + 1 > self.max_messages or self._bytes + message.size > self.max_bytes:
            self.close(
                f"fell behind: {len(self._queue)} messages ({self._bytes} bytes) waiting to be sent;"
                f" the limit is {self.max_messages} messages / {self.max_bytes} bytes"
                " (PGQUEUE_REALTIME_BUFFER_MESSAGES / _BYTES)"
            )
            return False
        self._queue.append(message)
        self._bytes += message.size
        self.last_id = message.id
        self._ready.set()
        return True

    def close(self, reason: str) -> None:
        """Closed for `reason`: what waits is dropped (the connection is being closed, nothing more
        will be sent on it), which frees its memory at once."""
        if self.closed is None:
            self.closed = reason
            self._queue.clear()
            self._bytes = 0
            self._ready.set()
            self._closed.set()

    async def wait_closed(self) -> str:
        await self._closed.wait()
        assert self.closed is not None
        return self.closed

    async def next_batch(self, timeout: float) -> list[Delivery]:
        """Every message waiting (at once if any, else after the first arrives), [] after `timeout`
        or when closed with nothing left."""
        if not self._queue and self.closed is None:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
        batch = list(self._queue)
        self._queue.clear()
        self._bytes = 0
        self.delivered += len(batch)
        return batch


@dataclass(frozen=True, slots=True)
class HubStats:
    mode: str  # "listen" or "poll"
    listening: bool
    subscribers: int
    channels: int
    queued_messages: int
    queued_bytes: int
    delivered: int
    dropped: int
    last_drop: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "listening": self.listening, "subscribers": self.subscribers,
                "channels": self.channels, "queued_messages": self.queued_messages,
                "queued_bytes": self.queued_bytes, "delivered": self.delivered, "dropped": self.dropped,
                "last_drop": self.last_drop}


class Hub:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        listen_conninfo: str | None,
        poll_interval_s: float = 0.05,
        buffer_messages: int = 1000,
        buffer_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.pool = pool
        self.poll_interval_s = poll_interval_s
        self.buffer_messages = buffer_messages
        self.buffer_bytes = buffer_bytes
        self._channels: dict[str, set[Subscriber]] = {}
        self._cursor: dict[str, int] = {}  # per channel: the last id this hub read there
        self._pending: list[int] = []
        self._joining: set[Subscriber] = set()
        self._resync = True
        self._wake = asyncio.Event()
        self._listener = (
            notify.Listener(listen_conninfo, {}, payloads={notify.REALTIME_CHANNEL: self._notified},
                            on_connect=self._reconnected, name="pgqueue-realtime-listener")
            if listen_conninfo else None
        )
        self._task: asyncio.Task[None] | None = None
        self._delivered_gone = 0  # messages sent to subscribers that have left
        self._dropped = 0
        self._last_drop: str | None = None

    # -- life -------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._listener is not None:
            self._listener.start()
        self._task = asyncio.create_task(self._loop(), name="pgqueue-realtime-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._listener is not None:
            await self._listener.stop()
        for subs in list(self._channels.values()):
            for sub in list(subs):
                sub.close("the server is shutting down")
        self._channels.clear()

    @property
    def listening(self) -> bool:
        return self._listener is not None and self._listener.connected.is_set()

    def stats(self) -> HubStats:
        subs = [s for group in self._channels.values() for s in group]
        return HubStats(
            mode="listen" if self._listener is not None else "poll",
            listening=self.listening,
            subscribers=len(subs),
            channels=len(self._channels),
            queued_messages=sum(s.queued[0] for s in subs),
            queued_bytes=sum(s.queued[1] for s in subs),
            delivered=self._delivered_gone + sum(s.delivered for s in subs),
            dropped=self._dropped,
            last_drop=self._last_drop,
        )

    # -- subscribers --------------------------------------------------------------------------------

    async def subscribe(self, channel: str, topics: Iterable[str], *, since: int | None = None) -> Subscriber:
        """A subscriber to `topics` of `channel` that receives what is published from now on (after
        message id `since` when given: 0 replays what is still kept). A durable endpoint's stream
        (topic `$stream`) is always replayed from its start: its channel is one run."""
        names = frozenset(topics)
        if since is None and tokens.STREAM_TOPIC in names:
            since = 0
        if since is None:
            async with self.pool.connection() as conn:
                since = await store.channel_head(conn, channel)
        sub = Subscriber(channel, names, start_id=since, max_messages=self.buffer_messages,
                         max_bytes=self.buffer_bytes)
        group = self._channels.setdefault(channel, set())
        if not group:
            self._cursor[channel] = since
        group.add(sub)
        self._joining.add(sub)
        self._wake.set()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._joining.discard(sub)
        group = self._channels.get(sub.channel)
        if group is None or sub not in group:
            return
        group.discard(sub)
        self._delivered_gone += sub.delivered
        if not group:
            del self._channels[sub.channel]
            self._cursor.pop(sub.channel, None)

    def _drop(self, sub: Subscriber) -> None:
        self._dropped += 1
        self._last_drop = f"channel {sub.channel!r}: {sub.closed}"
        log.warning("realtime subscriber closed: %s", self._last_drop)
        self.unsubscribe(sub)

    # -- listening ------------------------------------------------------------------------------------

    def _notified(self, payload: str) -> None:
        if len(self._pending) >= PENDING_LIMIT:
            self._pending.clear()
            self._resync = True
        else:
            self._pending.extend(int(part) for part in payload.split(",") if part.isdigit())
        self._wake.set()

    def _reconnected(self) -> None:
        self._resync = True
        self._wake.set()

    # -- the loop -----------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        timeout = SAFETY_S if self._listener is not None else self.poll_interval_s
        caught_up_at = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            if self._listener is None or time.monotonic() - caught_up_at >= SAFETY_S:
                self._resync = True
            if self._resync:
                caught_up_at = time.monotonic()
            try:
                more = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("realtime round failed; reading again after a pause")
                self._resync = True
                await asyncio.sleep(min(1.0, timeout))
                continue
            if more:
                self._wake.set()

    async def run_once(self) -> bool:
        """One round: read what the pending ids, joining subscribers and (when due) a catch-up of
        every channel bring, and hand it out in id order. True when a channel has more to read."""
        ids, self._pending = self._pending, []
        joining, self._joining = self._joining, set()
        resync, self._resync = self._resync, False
        if not self._channels:
            return False
        channels = list(self._channels)
        after: dict[str, int] = {}
        if resync:
            after = dict(self._cursor)
        for sub in joining:
            if sub.channel in self._channels:
                after[sub.channel] = min(after.get(sub.channel, sub.last_id), sub.last_id)
        rows: dict[int, dict[str, Any]] = {}
        more = False
        async with self.pool.connection() as conn:
            for start in range(0, len(ids), IDS_PER_QUERY):
                for row in await store.fetch_ids(conn, ids[start:start + IDS_PER_QUERY], channels):
                    rows[int(row["id"])] = row
            if after:
                names = list(after)
                found = await store.fetch_after(conn, names, [after[n] for n in names], limit=FETCH_LIMIT)
                per_channel: dict[str, list[int]] = {}
                for row in found:
                    rows[int(row["id"])] = row
                    per_channel.setdefault(row["channel"], []).append(int(row["id"]))
                # A channel whose read stopped at the limit goes on from there next round; nothing of
                # it past that point is handed out now, or its gap would be skipped for good.
                cap = {ch: max(found) for ch, found in per_channel.items() if len(found) >= FETCH_LIMIT}
                more = bool(cap)
                for message_id in [i for i, row in rows.items() if i > cap.get(row["channel"], i)]:
                    del rows[message_id]
        joined = {sub for sub in joining if sub.channel in self._channels}
        for message_id in sorted(rows):
            message = Delivery.from_row(rows[message_id])
            group = self._channels.get(message.channel)
            if group is None:
                continue
            self._cursor[message.channel] = max(self._cursor.get(message.channel, 0), message.id)
            for sub in list(group):
                if (sub.live or sub in joined) and sub.wants(message) and not sub.offer(message):
                    self._drop(sub)
        for sub in joined:
            if more:
                # its catch-up is not finished: keep it off live messages until it is
                self._joining.add(sub)
            else:
                sub.live = True
        if more:
            self._resync = True  # the channels with a longer backlog go on from their cursor
        return more
