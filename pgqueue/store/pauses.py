"""Pauses: runs waiting for an event (waitForEvent, cancelOn, invoke completion) or a signal
(waitForSignal)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pgqueue.db.pool import Conn
from pgqueue.db.queries import q

ANY_PATH = "*"


async def create(
    conn: Conn,
    *,
    run_id: str,
    kind: str,
    event_name: str,
    expression: str | None,
    trigger_event: dict[str, Any] | None,
    match_path: str | None,
    match_value: Any,
    timeout_s: float | None,
    step_id: str | None = None,
    step_name: str | None = None,
    race: bool = False,
) -> dict[str, Any] | None:
    cur = await conn.execute(
        q("pause_create"),
        {
            "run_id": run_id,
            "kind": kind,
            "step_id": step_id,
            "step_name": step_name,
            "event_name": event_name,
            "expression": expression,
            "trigger_event": Jsonb(trigger_event) if trigger_event is not None else None,
            "match_path": match_path,
            "match_value": Jsonb(match_value) if match_path is not None else None,
            "timeout_s": timeout_s,
            "race": race,
        },
    )
    row = await cur.fetchone()
    if row is not None:
        # '*' marks names that have unindexed pauses; names never listed here skip matching.
        await conn.execute(q("pause_path_remember"),
                           {"event_name": event_name, "match_path": match_path or ANY_PATH})
    return row


class SignalConflict(Exception):
    """Another run (or another step of this run) waits for the signal already."""


async def create_signal(
    conn: Conn, *, run_id: str, step_id: str, step_name: str, signal: str, timeout_s: float, replace: bool,
    race: bool = False,
) -> dict[str, Any] | None:
    """The pause of a step.waitForSignal; None when this step's pause exists already. Raises
    SignalConflict when another step's live pause holds the signal and `replace` is false."""
    params = {"run_id": run_id, "step_id": step_id, "step_name": step_name, "signal": signal,
              "timeout_s": timeout_s, "race": race, "replace": replace}
    # Two runs taking the same signal at once: the loser's insert waits for the winner's commit and
    # then finds the name taken; with "replace" it frees the name again (the winner's pause is now
    # visible) and retries.
    for _ in range(3):
        await conn.execute(q("pause_signal_release"), params)
        cur = await conn.execute(q("pause_create_signal"), params)
        row = await cur.fetchone()
        if row is not None:
            return row
        cur = await conn.execute(q("pause_step_exists"), params)
        if await cur.fetchone() is not None:
            return None
        if not replace:
            break
    raise SignalConflict(signal)


async def paths_for(conn: Conn, names: Sequence[str]) -> dict[str, list[str]]:
    cur = await conn.execute(q("pause_paths_for"), {"names": list(names)})
    out: dict[str, list[str]] = {}
    for row in await cur.fetchall():
        out.setdefault(row["event_name"], []).append(row["match_path"])
    return out


async def candidates_batch(
    conn: Conn,
    indexed: Sequence[tuple[int, str, str, Any, datetime]],
    unindexed: Sequence[tuple[int, str, datetime]],
) -> list[dict[str, Any]]:
    """indexed: (event index, name, path, value, received_at); unindexed: (event index, name, received_at)."""
    cur = await conn.execute(
        q("pause_candidates_batch"),
        {
            "idx": [k[0] for k in indexed],
            "names": [k[1] for k in indexed],
            "paths": [k[2] for k in indexed],
            "values": [Jsonb(k[3]) for k in indexed],
            "received": [k[4] for k in indexed],
            "u_idx": [k[0] for k in unindexed],
            "u_names": [k[1] for k in unindexed],
            "u_received": [k[2] for k in unindexed],
        },
    )
    return list(await cur.fetchall())


async def consume(conn: Conn, pause_id: int) -> bool:
    cur = await conn.execute(q("pause_consume"), {"id": pause_id})
    return await cur.fetchone() is not None


async def consume_step(conn: Conn, run_id: str, step_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(q("pause_consume_step"), {"run_id": run_id, "step_id": step_id})
    return await cur.fetchone()


async def delete_for_run(conn: Conn, run_id: str) -> None:
    await conn.execute(q("pause_delete_for_run"), {"run_id": run_id})


async def delete_cancel_listeners(conn: Conn, run_id: str) -> None:
    await conn.execute(q("pause_delete_cancel_listeners"), {"run_id": run_id})


async def expire_cancel_listeners(conn: Conn, limit: int = 1000) -> int:
    """Delete a batch of cancelOn listeners past their timeout that no event waiting for the runner
    can match any more; returns how many."""
    cur = await conn.execute(q("pause_expire_cancel_listeners"), {"limit": limit})
    return len(await cur.fetchall())


async def prune_paths(conn: Conn) -> int | None:
    """Forget the (event name, path) pairs no pause uses any more (pgqueue.pause_paths_prune_v1,
    which locks out pause creation for its few milliseconds); returns how many, or None when pauses
    being created kept the table busy past its lock timeout (try again later). Autocommit only:
    the lock must end with the statement."""
    try:
        cur = await conn.execute(q("pause_paths_prune"))
    except psycopg.errors.LockNotAvailable:
        return None
    row = await cur.fetchone()
    return int(row["pruned"]) if row else 0


async def delete_pending_step_item(conn: Conn, run_id: str, step_id: str) -> bool:
    cur = await conn.execute(q("queue_delete_step"), {"run_id": run_id, "step_id": step_id})
    return await cur.fetchone() is not None


async def signal_send(conn: Conn, signal: str, data: Any) -> str | None:
    """Resume the run waiting for `signal` (see pgqueue.signal_send_v2): its id, or None."""
    cur = await conn.execute(q("pause_signal_send"), {"signal": signal, "data": Jsonb(data)})
    row = await cur.fetchone()
    return row["run_id"] if row else None
