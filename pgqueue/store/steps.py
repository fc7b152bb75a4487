"""Memoised step outputs (first stored wins) and the append-only attempt history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from pgqueue.db.pool import Conn
from pgqueue.db.queries import q


@dataclass(frozen=True, slots=True)
class Recorded:
    """A step was stored; the run's totals after it."""

    step_count: int
    state_bytes: int


async def record(
    conn: Conn, run_id: str, step_id: str, *, op: str, memo: Any, name: str | None, attempt: int
) -> Recorded | None:
    """Store a step's memo; None when one was already stored (the new one is discarded)."""
    cur = await conn.execute(
        q("step_record"),
        {"run_id": run_id, "step_id": step_id, "name": name, "op": op, "memo": Jsonb(memo), "attempt": attempt},
    )
    row = await cur.fetchone()
    return Recorded(row["step_count"], row["state_bytes"]) if row else None


async def checkpoint(
    conn: Conn, run_id: str, *, item_id: int, lease_token: UUID, fn_id: str | None,
    memos: list[dict[str, Any]],
) -> dict[str, Any]:
    """pgqueue.checkpoint_store_v1: `memos` [{step_id, name, memo}] stored for a call still holding
    its lease; the row says whether (verdict) and the run's totals."""
    cur = await conn.execute(q("step_checkpoint"), {"run_id": run_id, "item_id": item_id,
                                                    "lease_token": lease_token, "fn_id": fn_id,
                                                    "steps": Jsonb(memos)})
    row = await cur.fetchone()
    assert row is not None  # the function always returns its verdict
    return row


async def stored_among(conn: Conn, run_id: str, step_ids: Sequence[str]) -> set[str]:
    """Which of `step_ids` the run has stored already."""
    cur = await conn.execute(q("step_stored_among"), {"run_id": run_id, "step_ids": list(step_ids)})
    return {r["step_id"] for r in await cur.fetchall()}


async def list_steps(conn: Conn, run_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(q("step_list"), {"run_id": run_id})
    return list(await cur.fetchall())


async def memo_map(conn: Conn, run_id: str) -> dict[str, Any]:
    cur = await conn.execute(q("step_memo_map"), {"run_id": run_id})
    row = await cur.fetchone()
    return dict(row["steps"]) if row else {}


async def mark_call(
    conn: Conn, run_id: str, step_id: str, started_at: datetime, item_id: int, *, planned: bool
) -> None:
    """Record on a stored step the call that produced it (instead of an attempts row); `planned`:
    the call was the step's own queue item, not a discovery call."""
    await conn.execute(q("step_mark_call"), {"run_id": run_id, "step_id": step_id, "started_at": started_at,
                                             "item_id": item_id, "planned": planned})


async def record_attempt(
    conn: Conn,
    *,
    run_id: str,
    item_id: int,
    step_id: str,
    attempt: int,
    outcome: str,
    started_at: datetime,
    status_code: int | None = None,
    error: Any = None,
) -> None:
    await conn.execute(
        q("attempt_record"),
        {
            "run_id": run_id,
            "item_id": item_id,
            "step_id": step_id,
            "attempt": attempt,
            "outcome": outcome,
            "status_code": status_code,
            "error": Jsonb(error) if error is not None else None,
            "started_at": started_at,
        },
    )


async def list_attempts(conn: Conn, run_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(q("attempt_list"), {"run_id": run_id})
    return list(await cur.fetchall())
