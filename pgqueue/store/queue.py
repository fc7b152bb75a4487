"""Queue items: claim, fencing checks, retry, enqueue, lease extension and release."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from pgqueue.db.pool import Conn
from pgqueue.db.queries import q
from pgqueue.models import QueueItem


async def claim(
    conn: Conn, worker: str, limit: int, lease_ms: int, *, fn_default_limit: int = 1000,
    app_caps: Mapping[str, int] | None = None, app_default_cap: int | None = None,
) -> list[QueueItem]:
    """Lease up to `limit` due items, each call with its run's context (pgqueue.claim_v6).
    `app_caps` (adaptive concurrency): at most this many more calls per app id, `app_default_cap`
    for apps not listed; None: no caps."""
    cur = await conn.execute(q("queue_claim"), {
        "worker": worker, "limit": limit, "lease_ms": lease_ms, "fn_default_limit": fn_default_limit,
        "app_caps": Jsonb(dict(app_caps)) if app_caps is not None else None,
        "app_default_cap": app_default_cap,
    })
    return [QueueItem.from_row(r) for r in await cur.fetchall()]


async def report_app_levels(conn: Conn, worker: str, levels: Sequence[tuple[UUID, int, int]]) -> None:
    """This worker's adaptive concurrency: (app id, limit, calls in flight) per app it calls
    (pgqueue.worker_app_levels); stale rows of any worker are pruned on the way."""
    await conn.execute(q("queue_report_app_levels"), {
        "worker": worker, "app_ids": [a for a, _, _ in levels], "limits": [n for _, n, _ in levels],
        "in_flight": [f for _, _, f in levels],
    })


async def forget_app_levels(conn: Conn, worker: str) -> None:
    await conn.execute(q("queue_forget_app_levels"), {"worker": worker})


async def rescue_expired(
    conn: Conn, *, max_interrupts: int, backoff_scale: float = 1.0, limit: int = 500
) -> list[dict[str, Any]]:
    """Expired leases, each counted as an interruption (pgqueue.rescue_expired_v2): rows of id,
    run_id, lease_token, exhausted; the exhausted ones are re-leased to the caller to fail."""
    cur = await conn.execute(
        q("queue_rescue_expired"),
        {"limit": limit, "max_interrupts": max_interrupts, "backoff_scale": backoff_scale},
    )
    return list(await cur.fetchall())


async def lock_if_leased(conn: Conn, item: QueueItem) -> bool:
    """Fencing: True only while this worker still holds the item's lease (row now locked)."""
    return await lock_leased(conn, item.id, item.lease_token) is not None


async def lock_leased(conn: Conn, item_id: int, lease_token: UUID) -> dict[str, Any] | None:
    """The item's row (run_id, function_id, step_id, attempt, max_attempts, interrupts, leased_at,
    race), locked, while it is still leased with this token; None when the lease is gone."""
    cur = await conn.execute(q("queue_lock_if_leased"), {"id": item_id, "lease_token": lease_token})
    return await cur.fetchone()


async def delete(conn: Conn, item_id: int) -> None:
    await conn.execute(q("queue_delete"), {"id": item_id})


async def retry(conn: Conn, item: QueueItem, *, delay_s: float, error: Any) -> None:
    await conn.execute(
        q("queue_retry"),
        {"id": item.id, "lease_token": item.lease_token, "delay_s": delay_s, "error": Jsonb(error)},
    )


async def enqueue(
    conn: Conn,
    *,
    run_id: str,
    function_id: UUID,
    kind: str,
    step_id: str,
    max_attempts: int,
    step_name: str | None = None,
    delay_s: float = 0.0,
    run_at: datetime | None = None,
    race: bool = False,
) -> bool:
    """False when the step has an open item already (at most one per run and step).
    `race`: the step is part of a parallelMode "race" group (see transitions.continue_run)."""
    params = {
        "run_id": run_id,
        "function_id": function_id,
        "kind": kind,
        "step_id": step_id,
        "step_name": step_name,
        "max_attempts": max_attempts,
        "delay_s": delay_s,
        "run_at": run_at,
        "race": race,
    }
    cur = await conn.execute(q("queue_enqueue"), params)
    return await cur.fetchone() is not None


async def open_count(conn: Conn, run_id: str) -> int:
    cur = await conn.execute(q("queue_open_count"), {"run_id": run_id})
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def delete_for_run(conn: Conn, run_id: str) -> None:
    await conn.execute(q("queue_delete_for_run"), {"run_id": run_id})


async def extend_leases(
    conn: Conn, leases: Sequence[tuple[int, UUID]], lease_ms: int, *, max_lease_s: float
) -> set[int]:
    """Extend leases by lease_ms, never past claim time + max_lease_s (the call's deadline)."""
    if not leases:
        return set()
    cur = await conn.execute(
        q("queue_extend_leases"),
        {"ids": [i for i, _ in leases], "tokens": [t for _, t in leases], "lease_ms": lease_ms,
         "max_lease_s": max_lease_s},
    )
    return {r["id"] for r in await cur.fetchall()}


async def release(conn: Conn, leases: Sequence[tuple[int, UUID]]) -> int:
    if not leases:
        return 0
    cur = await conn.execute(
        q("queue_release"), {"ids": [i for i, _ in leases], "tokens": [t for _, t in leases]}
    )
    return len(await cur.fetchall())


async def next_due_in(conn: Conn) -> float | None:
    """Seconds until the earliest available item is due (negative if overdue), None if empty."""
    cur = await conn.execute(q("queue_next_due"))
    row = await cur.fetchone()
    if not row or row["wait"] is None:
        return None
    return float(row["wait"].total_seconds())


async def notify(conn: Conn) -> None:
    await conn.execute(q("notify_queue"))


async def unblock_sweep(conn: Conn) -> int:
    """Safety net for concurrency-parked items (see pgqueue.concurrency_unblock_v1)."""
    cur = await conn.execute(q("queue_unblock_sweep"))
    row = await cur.fetchone()
    return int(row["unblocked"]) if row else 0


async def hold_paused(conn: Conn) -> int:
    """Park what paused functions queued since their pause (pgqueue.function_hold_paused_v1)."""
    cur = await conn.execute(q("queue_hold_paused"))
    row = await cur.fetchone()
    return int(row["held"]) if row else 0


async def interrupt(
    conn: Conn, leases: Sequence[tuple[int, UUID]], error: dict[str, Any], *, max_interrupts: int,
    backoff_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """Hand leased items back without an answer, counted (pgqueue.interrupt_v1): rows of id, run_id,
    lease_token, exhausted; exhausted items stay leased with their token for the caller to fail."""
    if not leases:
        return []
    cur = await conn.execute(
        q("queue_interrupt"),
        {"ids": [i for i, _ in leases], "tokens": [t for _, t in leases], "error": Jsonb(error),
         "max_interrupts": max_interrupts, "backoff_scale": backoff_scale},
    )
    return list(await cur.fetchall())


async def complete_batch(
    conn: Conn, batch_json: str, *, max_steps: int, max_state_bytes: int
) -> dict[int, tuple[str, dict[str, Any] | None]]:
    """The executor's group commit (pgqueue.complete_v2): item id -> (applied | finished | lost |
    discarded | fallback | continued, the run's next context when continued)."""
    cur = await conn.execute(
        q("complete_batch"), {"batch": batch_json, "max_steps": max_steps, "max_state_bytes": max_state_bytes}
    )
    return {row["item_id"]: (row["result"], row["context"]) for row in await cur.fetchall()}


async def count_housekeeping(conn: Conn, *, leases_expired: int, missed_unparks: int) -> None:
    """Add to the rescuer's counts (pgqueue.housekeeping_counts, read by /metrics)."""
    await conn.execute(q("housekeeping_count"),
                       {"leases_expired": leases_expired, "missed_unparks": missed_unparks})


async def housekeeping_counts(conn: Conn) -> dict[str, int]:
    cur = await conn.execute(q("housekeeping_counts"))
    return {row["name"]: int(row["n"]) for row in await cur.fetchall()}
