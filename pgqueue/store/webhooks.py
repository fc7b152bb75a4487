"""Webhooks, their deliveries, and what a key in /e/{key} is (a webhook, an event key, nothing)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from pgqueue import ids
from pgqueue.db.pool import Conn
from pgqueue.db.queries import q
from pgqueue.models import Event


def key_hash(key: str) -> str:
    """How a key (a webhook's or an event key) is stored: the hex SHA-256 of its UTF-8 text."""
    return hashlib.sha256(key.encode()).hexdigest()


async def lookup_key(conn: Conn, key: str) -> dict[str, Any] | None:
    """{kind: 'webhook' | 'event_key', id, name, ...} for a stored key, else None."""
    cur = await conn.execute(q("ingress_key_lookup"), {"key_hash": key_hash(key)})
    return await cur.fetchone()


async def create(
    conn: Conn, *, name: str, key: str, transform: str, verify: dict[str, Any] | None, secret_enc: str | None
) -> dict[str, Any]:
    cur = await conn.execute(
        q("webhook_create"),
        {
            "id": ids.new_ulid(),
            "name": name,
            "key_hash": key_hash(key),
            "key_prefix": key[:8],
            "transform": transform,
            "verify": Jsonb(verify) if verify is not None else None,
            "secret_enc": secret_enc,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def update(
    conn: Conn,
    webhook_id: str,
    *,
    name: str | None = None,
    transform: str | None = None,
    set_verify: bool = False,
    verify: dict[str, Any] | None = None,
    secret_enc: str | None = None,
    key: str | None = None,
) -> dict[str, Any] | None:
    cur = await conn.execute(
        q("webhook_update"),
        {
            "id": webhook_id,
            "name": name,
            "transform": transform,
            "set_verify": set_verify,
            "verify": Jsonb(verify) if verify is not None else None,
            "secret_enc": secret_enc,
            "key_hash": key_hash(key) if key is not None else None,
            "key_prefix": key[:8] if key is not None else None,
        },
    )
    return await cur.fetchone()


async def get(conn: Conn, webhook_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(q("webhook_get"), {"id": webhook_id})
    return await cur.fetchone()


async def list_webhooks(conn: Conn) -> list[dict[str, Any]]:
    cur = await conn.execute(q("webhook_list"))
    return list(await cur.fetchall())


async def delete(conn: Conn, webhook_id: str) -> bool:
    cur = await conn.execute(q("webhook_delete"), {"id": webhook_id})
    return await cur.fetchone() is not None


async def record_delivery(
    conn: Conn,
    webhook_id: str,
    *,
    outcome: str,
    status_code: int,
    error: str | None,
    method: str,
    content_type: str | None,
    headers: dict[str, str],
    query: dict[str, list[str]],
    body: bytes | None,
    body_bytes: int,
) -> str:
    delivery_id = ids.new_ulid()
    await conn.execute(
        q("webhook_delivery_record"),
        {
            "id": delivery_id,
            "webhook_id": webhook_id,
            "outcome": outcome,
            "status_code": status_code,
            "error": error,
            "method": method,
            "content_type": content_type,
            "headers": Jsonb(headers),
            "query": Jsonb(query),
            "body": body,
            "body_bytes": body_bytes,
        },
    )
    return delivery_id


async def accept_delivery(
    conn: Conn,
    webhook_id: str,
    events: Sequence[Event],
    *,
    method: str,
    content_type: str | None,
    headers: dict[str, str],
    query: dict[str, list[str]],
    body_bytes: int,
    redelivery_of: str | None = None,
) -> tuple[str, int]:
    """Store the events (as POST /e does) and the delivery that made them, in one statement.
    Returns the delivery's id and how many events were handed to the runner."""
    delivery_id = ids.new_ulid()
    rows = [
        {**e.to_row(), "dedupe_key": ids.compact_key(e.external_id) if e.external_id is not None else None}
        for e in events
    ]
    cur = await conn.execute(
        q("webhook_delivery_accept"),
        {
            "id": delivery_id,
            "webhook_id": webhook_id,
            "method": method,
            "content_type": content_type,
            "headers": Jsonb(headers),
            "query": Jsonb(query),
            "body_bytes": body_bytes,
            "event_ids": [e.id for e in events],
            "redelivery_of": redelivery_of,
            "events": Jsonb(rows),
        },
    )
    row = await cur.fetchone()
    return delivery_id, int(row["queued"]) if row else 0


async def list_deliveries(
    conn: Conn, webhook_id: str, *, outcome: str | None = None, before_id: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        q("webhook_delivery_list"),
        {"webhook_id": webhook_id, "outcome": outcome, "before_id": before_id, "limit": limit},
    )
    return list(await cur.fetchall())


async def get_delivery(conn: Conn, webhook_id: str, delivery_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(q("webhook_delivery_get"), {"id": delivery_id, "webhook_id": webhook_id})
    return await cur.fetchone()


async def lock_delivery(conn: Conn, webhook_id: str, delivery_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(q("webhook_delivery_lock"), {"id": delivery_id, "webhook_id": webhook_id})
    return await cur.fetchone()


async def set_delivery_error(conn: Conn, delivery_id: str, error: str, status_code: int) -> None:
    await conn.execute(
        q("webhook_delivery_set_error"), {"id": delivery_id, "error": error, "status_code": status_code}
    )


async def prune_deliveries(conn: Conn, cutoff: datetime, limit: int) -> int:
    cur = await conn.execute(q("retention_prune_webhook_deliveries"), {"cutoff": cutoff, "limit": limit})
    return len(await cur.fetchall())
