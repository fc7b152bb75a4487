"""A publish request turned into stored messages (pgqueue.realtime_publish_v1), as Inngest's API
takes it from the SDKs:

- `POST /v1/realtime/publish?channel=<c>&topic=<t>[&topic=...][&run_id=<run>]` with the data as
  the body: JSON is published as is, anything else as a JSON string (Inngest's rule). One message
  per topic. A publish that names a run is recognised when the step that made it is retried (see
  sql/functions/realtime.sql), so a subscriber gets it once. Concurrent publishes of a process
  commit together (`Batcher`).
- The same with `Content-Type: text/stream`: the body is streamed to subscribers as it arrives, as
  `datastream-start` (data: a new stream id), `chunk`s (data: the text) and `datastream-end`.
- `POST /v1/realtime/publish/tee?channel=<runId>`: a durable endpoint's SSE response, stored whole
  events at a time on topic `$stream` (kind `raw`), which `/v1/realtime/sse` replays as they came.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from pgqueue import storable
from pgqueue.errors import InvalidInput, PayloadTooLarge
from pgqueue.realtime import streams, tokens
from pgqueue.store import realtime as store

MAX_RUN_ID_CHARS = 128
# A JSON string of N characters takes at most 6N + 2 bytes (\u escapes): pieces of a stream are
# cut so that each fits the message limit whatever it contains.
_JSON_CHAR_BYTES = 6


@dataclass(frozen=True, slots=True)
class Target:
    channel: str
    topics: tuple[str, ...]
    run_id: str | None


@dataclass(frozen=True, slots=True)
class Published:
    ids: tuple[int, ...]
    duplicates: int = 0  # messages recognised as a retried step's, not stored again


def target(channel: str | None, topics: Sequence[str], run_id: str | None) -> Target:
    """Where a publish goes: the query parameters `channel`, `topic` (repeatable) and `run_id`."""
    if not channel:
        raise InvalidInput("`channel` is required: POST /v1/realtime/publish?channel=<channel>&topic=<topic>")
    tokens.check_name(channel, "channel")
    if not topics:
        raise InvalidInput("`topic` is required: POST /v1/realtime/publish?channel=<channel>&topic=<topic>")
    if len(topics) > tokens.MAX_TOPICS:
        raise InvalidInput(f"a publish may name at most {tokens.MAX_TOPICS} topics, got {len(topics)}")
    names = tuple(dict.fromkeys(tokens.check_name(t, "topic") for t in topics))
    run = run_id or None
    if run is not None and (len(run) > MAX_RUN_ID_CHARS or not run.isprintable()):
        raise InvalidInput(f"`run_id` must be a run id of at most {MAX_RUN_ID_CHARS} printable characters")
    return Target(channel, names, run)


def too_large(size: int | str | None, max_bytes: int) -> PayloadTooLarge:
    """The 413 of a message over the limit (`size` unknown: a body still arriving when it passed)."""
    said = f"{size} bytes" if size is not None else f"more than {max_bytes} bytes"
    return PayloadTooLarge(
        f"the realtime message is {said}; the limit is {max_bytes} bytes"
        " (PGQUEUE_REALTIME_MAX_MESSAGE_BYTES): publish less per message, or a stream (text/stream)"
    )


def message_data(body: bytes, *, max_bytes: int) -> Any:
    """The message a publish body carries: its JSON, or (not JSON) its text as a JSON string.
    PayloadTooLarge past `max_bytes`, InvalidInput for what PostgreSQL cannot store."""
    if len(body) > max_bytes:
        raise too_large(len(body), max_bytes)
    text = body.decode("utf-8", errors="replace")
    try:
        data: Any = json.loads(text) if text.strip() else None
    except (ValueError, RecursionError):
        data = text
    problem = storable.problem(data)
    if problem:
        raise InvalidInput(f"the realtime message {problem}")
    return data


async def publish(pool: AsyncConnectionPool, to: Target, data: Any, *, max_bytes: int) -> Published:
    """Store `data` once per topic; recognised as a retried step's when it names a run."""
    async with pool.connection() as conn:
        rows = await store.publish(conn, channel=to.channel, topics=to.topics, kind="data", datas=[data],
                                   run_id=to.run_id, stream_id=None, max_bytes=max_bytes,
                                   dedupe=to.run_id is not None)
    return Published(tuple(int(r["message_id"]) for r in rows), sum(1 for r in rows if r["duplicate"]))


@dataclass(slots=True)
class _Waiting:
    to: Target
    data: Any
    done: asyncio.Future[Published]


class Batcher:
    """Group commit for publishes: the publishes that arrive while one batch commits go together in
    the next (pgqueue.realtime_publish_many_v1), so a burst takes one transaction and one WAL flush
    per batch instead of one per message, and an idle process adds no wait (a lone publish is a
    batch of one at once). Within a channel the publishes keep the order they arrived in; each gets
    its own result. A batch that fails (a deadlock with an application transaction that publishes
    to several channels, a message PostgreSQL refuses) is published again one by one, so only the
    publish at fault gets an error."""

    def __init__(self, pool: AsyncConnectionPool, *, max_bytes: int, max_batch: int = 100) -> None:
        self.pool = pool
        self.max_bytes = max_bytes
        self.max_batch = max_batch
        self._waiting: list[_Waiting] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.published = 0

    async def publish(self, to: Target, data: Any) -> Published:
        waiting = _Waiting(to, data, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="pgqueue-realtime-publish")
        # shielded: a caller that goes away (its client hung up) does not take back an accepted publish
        return await asyncio.shield(waiting.done)

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
            try:
                await self._commit(batch)
            except Exception as exc:  # the batch as a whole failed: each on its own
                if len(batch) == 1:
                    _settle(batch[0], exc)
                    continue
                for one in batch:
                    try:
                        _settle(one, await publish(self.pool, one.to, one.data, max_bytes=self.max_bytes))
                    except Exception as single:
                        _settle(one, single)

    async def _commit(self, batch: list[_Waiting]) -> None:
        items = [{"channel": w.to.channel, "topics": list(w.to.topics), "data": w.data, "run_id": w.to.run_id}
                 for w in batch]
        async with self.pool.connection() as conn:
            rows = await store.publish_many(conn, items, max_bytes=self.max_bytes)
        by_item: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            by_item.setdefault(int(row["item"]), []).append(row)
        self.batches += 1
        self.published += len(batch)
        for index, waiting in enumerate(batch):
            mine = by_item.get(index, [])
            _settle(waiting, Published(tuple(int(r["message_id"]) for r in mine),
                                       sum(1 for r in mine if r["duplicate"])))


def _settle(waiting: _Waiting, outcome: Published | BaseException) -> None:
    if waiting.done.done():
        return
    if isinstance(outcome, BaseException):
        waiting.done.set_exception(outcome)
    else:
        waiting.done.set_result(outcome)


async def _store(pool: AsyncConnectionPool, to: Target, kind: str, datas: list[Any], stream_id: str | None,
                 max_bytes: int) -> list[int]:
    if not datas:
        return []
    async with pool.connection() as conn:
        rows = await store.publish(conn, channel=to.channel, topics=to.topics, kind=kind, datas=datas,
                                   run_id=to.run_id, stream_id=stream_id, max_bytes=max_bytes, dedupe=False)
    return [int(r["message_id"]) for r in rows]


def _piece_chars(max_bytes: int) -> int:
    return max(1, max_bytes // _JSON_CHAR_BYTES - 1)


async def publish_stream(
    pool: AsyncConnectionPool, to: Target, body: AsyncIterator[bytes], *, max_bytes: int,
    max_stream_bytes: int,
) -> Published:
    """A streamed publish: datastream-start, each piece of the body as a chunk as it arrives, then
    datastream-end (sent even when the body fails or is too long, so subscribers close the stream).
    PayloadTooLarge once the body passes `max_stream_bytes` (what came before was delivered)."""
    stream_id = secrets.token_hex(8)
    ids = await _store(pool, to, "datastream-start", [stream_id], stream_id, max_bytes)
    text = streams.TextChunks(_piece_chars(max_bytes))
    size = 0
    try:
        async for data in body:
            size += len(data)
            if size > max_stream_bytes:
                raise PayloadTooLarge(
                    f"the realtime stream passed {max_stream_bytes} bytes"
                    " (PGQUEUE_REALTIME_MAX_STREAM_BYTES); it was cut there"
                )
            ids += await _store(pool, to, "chunk", list(text.feed(data)), stream_id, max_bytes)
        ids += await _store(pool, to, "chunk", list(text.close()), stream_id, max_bytes)
    finally:
        ids += await _store(pool, to, "datastream-end", [stream_id], stream_id, max_bytes)
    return Published(tuple(ids))


async def tee(
    pool: AsyncConnectionPool, run_id: str, body: AsyncIterator[bytes], *, max_bytes: int,
    max_stream_bytes: int,
) -> Published:
    """A durable endpoint's response stream, whole SSE events at a time, on the run's channel and
    topic `$stream`. PayloadTooLarge past `max_stream_bytes` (what came before was delivered)."""
    to = target(run_id, [tokens.STREAM_TOPIC], run_id)
    frames = streams.SseFrames(_piece_chars(max_bytes))
    ids: list[int] = []
    size = 0
    async for data in body:
        size += len(data)
        if size > max_stream_bytes:
            raise PayloadTooLarge(
                f"the durable endpoint's stream passed {max_stream_bytes} bytes"
                " (PGQUEUE_REALTIME_MAX_STREAM_BYTES); it was cut there"
            )
        ids += await _store(pool, to, "raw", list(frames.feed(data)), None, max_bytes)
    ids += await _store(pool, to, "raw", list(frames.close()), None, max_bytes)
    return Published(tuple(ids))
