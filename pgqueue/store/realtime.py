"""Realtime messages' SQL: publish (pgqueue.realtime_publish_v1), read what a process's
subscribers want (by the ids a NOTIFY named, or per channel after the last id seen), a run's
messages for the dashboard, and pruning past the retention."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb

from pgqueue.db.pool import Conn
from pgqueue.db.queries import q

# NOTIFY channel of new messages; the payload is their ids, comma-separated.
CHANNEL = "pgqueue_realtime"


async def publish(
    conn: Conn, *, channel: str, topics: Sequence[str], kind: str, datas: Sequence[Any], run_id: str | None,
    stream_id: str | None, max_bytes: int, dedupe: bool,
) -> list[dict[str, Any]]:
    """Store one message per element of `datas` on each topic (and NOTIFY their ids at commit):
    rows {message_id, topic, duplicate}. Raises psycopg's InvalidParameterValue or
    ProgramLimitExceeded with a message naming the problem."""
    cur = await conn.execute(q("realtime_publish"), {
        "channel": channel, "topics": list(topics), "kind": kind, "datas": [Jsonb(d) for d in datas],
        "run_id": run_id, "stream_id": stream_id, "max_bytes": max_bytes, "dedupe": dedupe,
    })
    return list(await cur.fetchall())


async def publish_many(
    conn: Conn, items: Sequence[dict[str, Any]], *, max_bytes: int
) -> list[dict[str, Any]]:
    """Several data publishes ({channel, topics, data, run_id}) in one transaction: rows {item (its
    index), message_id, topic, duplicate}. A publish naming a run is recognised as a retried step's."""
    args = {"items": Jsonb(list(items)), "max_bytes": max_bytes}
    cur = await conn.execute(q("realtime_publish_many"), args)
    return list(await cur.fetchall())


async def fetch_ids(conn: Conn, ids: Sequence[int], channels: Sequence[str]) -> list[dict[str, Any]]:
    """The messages among `ids` on `channels`, by id: {id, channel, topic, kind, wire, raw}."""
    cur = await conn.execute(q("realtime_fetch_ids"), {"ids": list(ids), "channels": list(channels)})
    return list(await cur.fetchall())


async def fetch_after(
    conn: Conn, channels: Sequence[str], after: Sequence[int], *, limit: int
) -> list[dict[str, Any]]:
    """For each channel, its messages after the id beside it (at most `limit` each), by id."""
    cur = await conn.execute(q("realtime_fetch_after"),
                             {"channels": list(channels), "after": list(after), "limit": limit})
    return list(await cur.fetchall())


async def channel_head(conn: Conn, channel: str) -> int:
    cur = await conn.execute(q("realtime_channel_head"), {"channel": channel})
    row = await cur.fetchone()
    assert row is not None
    return int(row["head"])


async def run_messages(
    conn: Conn, run_id: str, *, limit: int = 200, preview: int = 2000
) -> list[dict[str, Any]]:
    """A run's messages still kept, newest first, each with a preview of its data."""
    args = {"run_id": run_id, "limit": limit, "preview": preview}
    cur = await conn.execute(q("realtime_run_messages"), args)
    return list(await cur.fetchall())


async def prune(conn: Conn, *, retention_s: float, limit: int = 5000) -> int:
    """Delete up to `limit` messages older than `retention_s`; how many went."""
    cur = await conn.execute(q("realtime_prune"), {"retention_s": retention_s, "limit": limit})
    return cur.rowcount
