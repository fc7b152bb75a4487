"""Send events (and signals, and realtime messages) from the application's own transaction:
`pgqueue.send_event(conn, name, data)`, `pgqueue.send_signal(conn, signal, data)`,
`pgqueue.publish(conn, channel, topic, data)` (re-exported by the package).

A thin wrapper over the SQL API (`pgqueue.send_event`, `pgqueue.send_events`,
`pgqueue.send_signal`, `pgqueue.publish`, see docs/sql.md)
that runs on the caller's psycopg connection, so the event commits or rolls back with the
caller's own writes. Works with sync and async psycopg 3 connections (and cursors), behind
PgBouncer in transaction mode too: one statement, no session state.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, AsyncCursor, Connection, Cursor
from psycopg.types.json import Jsonb

from pgqueue.db.queries import q

_ONE = q("outbox_send_event")
_MANY = q("outbox_send_events")
_SIGNAL = q("outbox_send_signal")
_PUBLISH = q("realtime_send")


def _value(row: Any) -> Any:
    """The single column of a row, whatever row factory the caller's connection uses."""
    assert row is not None
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def _one_args(name: str, data: dict[str, Any] | None, id: str | None, ts: datetime | None) -> dict[str, Any]:
    return {"name": name, "data": Jsonb(data if data is not None else {}), "id": id, "ts": ts}


def send_event(
    conn: Connection[Any] | Cursor[Any], name: str, data: dict[str, Any] | None = None, *,
    id: str | None = None, ts: datetime | None = None,
) -> str:
    """Store one event in the caller's transaction; returns its id. Raises psycopg's
    InvalidParameterValue / ProgramLimitExceeded with a message naming the problem."""
    return str(_value(conn.execute(_ONE, _one_args(name, data, id, ts)).fetchone()))


def send_events(conn: Connection[Any] | Cursor[Any], events: Sequence[dict[str, Any]]) -> list[str]:
    """Store several events ({name, data, id, ts (ms), user, v}) in the caller's transaction."""
    rows = conn.execute(_MANY, {"events": Jsonb(list(events))}).fetchall()
    return [str(_value(r)) for r in rows]


async def send_event_async(
    conn: AsyncConnection[Any] | AsyncCursor[Any], name: str, data: dict[str, Any] | None = None, *,
    id: str | None = None, ts: datetime | None = None,
) -> str:
    cur = await conn.execute(_ONE, _one_args(name, data, id, ts))
    return str(_value(await cur.fetchone()))


async def send_events_async(
    conn: AsyncConnection[Any] | AsyncCursor[Any], events: Sequence[dict[str, Any]]
) -> list[str]:
    cur = await conn.execute(_MANY, {"events": Jsonb(list(events))})
    return [str(_value(r)) for r in await cur.fetchall()]


def send_signal(conn: Connection[Any] | Cursor[Any], signal: str, data: Any = None) -> str | None:
    """Resume the run waiting for `signal` (JS step.waitForSignal) with `data`, in the caller's
    transaction: the id of that run, or None when no run waits for the signal (it is dropped)."""
    value = _value(conn.execute(_SIGNAL, {"signal": signal, "data": Jsonb(data)}).fetchone())
    return None if value is None else str(value)


async def send_signal_async(
    conn: AsyncConnection[Any] | AsyncCursor[Any], signal: str, data: Any = None
) -> str | None:
    cur = await conn.execute(_SIGNAL, {"signal": signal, "data": Jsonb(data)})
    value = _value(await cur.fetchone())
    return None if value is None else str(value)


def publish(conn: Connection[Any] | Cursor[Any], channel: str, topic: str, data: Any, *,
            run_id: str | None = None) -> int:
    """Publish a realtime message to `channel`'s `topic` in the caller's transaction: subscribers
    get it when the transaction commits, never if it rolls back. Returns the message's id."""
    args = {"channel": channel, "topic": topic, "data": Jsonb(data), "run_id": run_id}
    return int(_value(conn.execute(_PUBLISH, args).fetchone()))


async def publish_async(conn: AsyncConnection[Any] | AsyncCursor[Any], channel: str, topic: str, data: Any, *,
                        run_id: str | None = None) -> int:
    args = {"channel": channel, "topic": topic, "data": Jsonb(data), "run_id": run_id}
    cur = await conn.execute(_PUBLISH, args)
    return int(_value(await cur.fetchone()))
