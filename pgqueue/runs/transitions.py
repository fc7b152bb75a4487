"""Run transitions shared by the executor, the runner (wait/cancel/invoke resumes) and operator
actions: continue a run, finish it, cancel it. Callers hold the run's row lock (runs.lock) and
own the transaction; the lock order everywhere is run, then its items and pauses."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pgqueue import storable
from pgqueue.db.pool import Conn
from pgqueue.events.objects import event_object
from pgqueue.models import DISCOVERY_STEP
from pgqueue.store import apps, events, pauses, queue, runs

NO_FINISH_EVENT_TRIGGERS = frozenset(
    {"inngest/function.finished", "inngest/function.failed", "inngest/function.cancelled"}
)


async def continue_run(
    conn: Conn, run_id: str, function_id: UUID, max_attempts: int, *, queued: bool = False,
    race: bool = False,
) -> None:
    """After a step: call the SDK again once nothing else of the run is pending, or at once when
    the step that ended was in a parallelMode "race" group (`race`): user code awaiting the race
    continues with the first step to finish while its siblings still run, as in Inngest.

    Workers are woken (NOTIFY) only for new work: the call queued here, or work the caller queued
    or rescheduled in this transaction (`queued`). Every commit that sends a NOTIFY takes a
    cluster-wide lock, so a step that finishes while its siblings still run sends none."""
    if race or await queue.open_count(conn, run_id) == 0:
        queued = await queue.enqueue(conn, run_id=run_id, function_id=function_id, kind="call",
                                     step_id=DISCOVERY_STEP, max_attempts=max_attempts) or queued
    if queued:
        await queue.notify(conn)


async def finish(
    conn: Conn, run: dict[str, Any], status: str, *, output: Any = None, error: Any = None,
    call: tuple[datetime, int, int] | None = None,
) -> bool:
    """Completed or failed: state-guarded; False when the run had already ended. `call`: the start,
    attempt and queue item of the call that returned the run's value."""
    problem = storable.problem(output) if output is not None else None
    if problem:
        status, output = "failed", None
        error = storable.unstorable_error("the function's return value", problem)
    finished = await runs.finish(conn, run["id"], status=status, output=output, error=error, call=call)
    await queue.delete_for_run(conn, run["id"])
    await pauses.delete_for_run(conn, run["id"])
    await runs.singleton_release(conn, run["id"])
    if finished is not None:
        await emit_finished(conn, finished, status, output=output, error=error)
    return finished is not None


async def cancel(conn: Conn, run_id: str, *, reason: str) -> bool:
    """Cancel a live run: items and pauses removed (an in-flight call's result is then dropped by
    its fencing check), inngest/function.cancelled emitted. False if it had already ended."""
    cancelled = await runs.cancel(conn, run_id, reason)
    await queue.delete_for_run(conn, run_id)
    await pauses.delete_for_run(conn, run_id)
    await runs.singleton_release(conn, run_id)
    if cancelled is None:
        return False
    await emit_finished(conn, cancelled, "cancelled", error={"name": "Cancelled", "message": reason})
    return True


async def emit_finished(
    conn: Conn, run: dict[str, Any], status: str, *, output: Any = None, error: Any = None
) -> None:
    """inngest/function.finished (+ .failed or .cancelled), unless the run itself was triggered by one
    or nothing listens for them.
    `run` needs id, function_id, event_ids and correlation_id."""
    if not await events.finish_heard(conn, run.get("correlation_id")):
        return  # nothing listens: no event, no inbox row, no runner round (pgqueue.finish_heard_v1)
    rows = await events.get_many(conn, run["event_ids"])
    by_id = {r["id"]: r for r in rows}
    ordered = [event_object(by_id[i]) for i in run["event_ids"] if i in by_id]
    trigger = ordered[0] if ordered else None
    if trigger and trigger["name"] in NO_FINISH_EVENT_TRIGGERS:
        return
    slug = await apps.function_slug(conn, run["function_id"]) or str(run["function_id"])
    data: dict[str, Any] = {
        "function_id": slug,
        "run_id": run["id"],
        "event": trigger,
        "events": ordered,
        "_inngest": {"status": status.capitalize()},
    }
    if run.get("correlation_id"):
        data["correlation_id"] = run["correlation_id"]
    if status == "completed":
        data["result"] = output
    else:
        data["error"] = error
    if status == "failed":
        await events.insert_internal(conn, "inngest/function.failed", data)
    elif status == "cancelled":
        await events.insert_internal(conn, "inngest/function.cancelled", data)
    await events.insert_internal(conn, "inngest/function.finished", data)
