"""Run and step metadata rows (pgqueue.run_metadata): written by an apply or a checkpoint under
the run's row lock, or by the metadata API; combined and bounded in SQL
(pgqueue.run_metadata_put_v1, sql/functions/metadata.sql)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pgqueue.db.pool import Conn
from pgqueue.db.queries import q
from pgqueue.errors import PayloadTooLarge


class RunLimitExceeded(PayloadTooLarge):
    """The run's stored metadata would exceed its limit: nothing of the write is kept."""


async def put(conn: Conn, run_id: str, updates: Sequence[dict[str, Any]], *, max_run_bytes: int) -> int:
    """Store `updates` ([{scope, step_id, attempt, span_id, kind, op, values}]) in the caller's
    transaction, which must hold the run's row lock. Returns the run's total bytes; raises
    RunLimitExceeded (the caller's transaction or savepoint must then be rolled back)."""
    try:
        cur = await conn.execute(q("run_metadata_put"), {"run_id": run_id, "updates": Jsonb(list(updates)),
                                                         "max_run_bytes": max_run_bytes})
    except psycopg.errors.ProgramLimitExceeded as exc:
        message = exc.diag.message_primary or str(exc)
        raise RunLimitExceeded(message) from None
    row = await cur.fetchone()
    return int(row["total"]) if row else 0


async def list_for_run(conn: Conn, run_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(q("run_metadata_list"), {"run_id": run_id})
    return list(await cur.fetchall())
