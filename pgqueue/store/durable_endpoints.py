"""Durable endpoint runs: started by the app's own HTTP handler (POST /v1/checkpoint), held by its
request through a leased call item until the request ends the run or hands it over."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from pgqueue.db.pool import Conn
from pgqueue.db.queries import q


async def start_run(
    conn: Conn, *, app_name: str, app_url: str, fn_slug: str, fn_name: str, retries: int, run_id: str,
    event_id: str, event_name: str, event_data: dict[str, Any], event_ts: int, endpoint_url: str,
    endpoint_method: str, lease_until: datetime,
) -> dict[str, Any]:
    """pgqueue.endpoint_run_start_v1: verdict 'ok' (with app_id, function_id, item_id, lease_token,
    max_attempts) or 'exists'."""
    cur = await conn.execute(q("endpoint_run_start"), {
        "app_name": app_name, "app_url": app_url, "fn_slug": fn_slug, "fn_name": fn_name, "retries": retries,
        "run_id": run_id, "event_id": event_id, "event_name": event_name, "event_data": Jsonb(event_data),
        "event_ts": event_ts, "endpoint_url": endpoint_url, "endpoint_method": endpoint_method,
        "lease_until": lease_until,
    })
    row = await cur.fetchone()
    assert row is not None
    return row


async def held_item(conn: Conn, run_id: str) -> dict[str, Any] | None:
    """The run's status and the item its endpoint request holds (id NULL if none); None: no run."""
    cur = await conn.execute(q("endpoint_item"), {"run_id": run_id})
    return await cur.fetchone()


async def extend_lease(conn: Conn, item_id: int, lease_token: UUID, until: datetime) -> bool:
    cur = await conn.execute(q("endpoint_extend_lease"), {"id": item_id, "lease_token": lease_token,
                                                          "until": until})
    return cur.rowcount == 1


async def result(conn: Conn, run_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(q("endpoint_run_result"), {"run_id": run_id})
    return await cur.fetchone()
