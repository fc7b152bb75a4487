"""Event keys kept in the database (stored as hashes; see pgqueue.store.webhooks.key_hash)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pgqueue import ids
from pgqueue.db.pool import Conn
from pgqueue.db.queries import q
from pgqueue.store.webhooks import key_hash


async def create(conn: Conn, *, name: str, key: str, event_names: Sequence[str] | None) -> dict[str, Any]:
    cur = await conn.execute(
        q("event_key_create"),
        {
            "id": ids.new_ulid(),
            "name": name,
            "key_hash": key_hash(key),
            "key_prefix": key[:8],
            "event_names": list(event_names) if event_names is not None else None,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def update(
    conn: Conn,
    key_id: str,
    *,
    name: str | None = None,
    set_event_names: bool = False,
    event_names: Sequence[str] | None = None,
) -> dict[str, Any] | None:
    cur = await conn.execute(
        q("event_key_update"),
        {
            "id": key_id,
            "name": name,
            "set_event_names": set_event_names,
            "event_names": list(event_names) if event_names is not None else None,
        },
    )
    return await cur.fetchone()


async def revoke(conn: Conn, key_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(q("event_key_revoke"), {"id": key_id})
    return await cur.fetchone()


async def get(conn: Conn, key_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(q("event_key_get"), {"id": key_id})
    return await cur.fetchone()


async def list_keys(conn: Conn, *, include_revoked: bool = True) -> list[dict[str, Any]]:
    cur = await conn.execute(q("event_key_list"), {"include_revoked": include_revoked})
    return list(await cur.fetchall())
