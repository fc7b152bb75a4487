"""Match an incoming event against pauses: resume waiting steps, finish invokes, cancel runs.

Candidates come from the index on (event name, equality path, value) plus the unindexed pauses of
that name; only candidates are evaluated. Each pause is consumed exactly once (DELETE ... RETURNING),
under the run's row lock, so concurrent runners and timeouts cannot both resume one step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgqueue.db.pool import Conn
from pgqueue.durations import timeout_seconds
from pgqueue.errors import ExpressionError, InvalidInput
from pgqueue.runs import pausing, transitions
from pgqueue.store import pauses, runs, steps

log = logging.getLogger(__name__)


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and value is not None


@dataclass(frozen=True, slots=True)
class Incoming:
    event: dict[str, Any]
    received_at: datetime
    paths: list[str]  # the match paths known for its name ('*' = it has unindexed pauses)


async def match_events(conn: Conn, incoming: Sequence[Incoming]) -> int:
    """Resume or cancel every run whose pause one of these events matches, in event order;
    candidates for the whole batch come from one indexed query. Returns how many acted."""
    indexed: list[tuple[int, str, str, Any, datetime]] = []
    unindexed: list[tuple[int, str, datetime]] = []
    for i, item in enumerate(incoming):
        name = item.event["name"]
        for path in item.paths:
            if path == pauses.ANY_PATH:
                unindexed.append((i, name, item.received_at))
            elif _scalar(value := pausing.lookup(item.event, path)):
                indexed.append((i, name, path, value, item.received_at))
    if not indexed and not unindexed:
        return 0  # nobody waits for any of these names
    by_event: dict[int, list[dict[str, Any]]] = {}
    for row in await pauses.candidates_batch(conn, indexed, unindexed):
        by_event.setdefault(row["idx"], []).append(row)
    acted = 0
    for i, item in enumerate(incoming):
        for pause in by_event.get(i, []):
            acted += await _act(conn, item.event, pause)
    return acted


async def _act(conn: Conn, event: dict[str, Any], pause: dict[str, Any]) -> int:
    if not pausing.matches(pause, event):
        return 0
    run = await runs.lock(conn, pause["run_id"])
    if run is None or run["status"] not in ("queued", "running"):
        return 0
    if not await pauses.consume(conn, pause["id"]):
        return 0  # an earlier event, another runner or the timeout won
    match pause["kind"]:
        case "cancel":
            await transitions.cancel(conn, pause["run_id"], reason=f"cancelled by event {event['name']}")
        case "wait":
            await _resume(conn, run, pause, memo=event, op="WaitForEvent")
        case "invoke":
            data = event.get("data") or {}
            error = data.get("error")
            if error:
                if not isinstance(error, dict):
                    error = {"name": "Error", "message": str(error)}
                memo: Any = {"error": {**error, "name": str(error.get("name") or "Error"),
                                       "message": str(error.get("message") or "invoked function failed")}}
            else:
                memo = {"data": data.get("result")}
            await _resume(conn, run, pause, memo=memo, op="InvokeFunction")
    return 1


async def _resume(conn: Conn, run: dict[str, Any], pause: dict[str, Any], *, memo: Any, op: str) -> None:
    await steps.record(conn, run["id"], pause["step_id"], op=op, memo=memo, name=pause["step_name"],
                       attempt=0)
    await pauses.delete_pending_step_item(conn, run["id"], pause["step_id"])
    await transitions.continue_run(conn, run["id"], run["function_id"], run["max_attempts"],
                                   race=bool(pause.get("race")))


async def register_cancellations(
    conn: Conn, run_id: str, config: dict[str, Any], event: dict[str, Any]
) -> None:
    """cancelOn listeners of a new run, with the run's event substituted into each `if`."""
    for entry in config.get("cancel") or []:
        timeout_s = None
        if entry.get("timeout"):
            try:
                timeout_s = timeout_seconds(entry["timeout"])
            except InvalidInput:
                log.warning("run %s: cancel timeout %r is not a duration or date; ignored", run_id,
                            entry["timeout"])
        try:
            spec = pausing.build(entry.get("if"), event)
        except ExpressionError as exc:
            log.warning("run %s: cancel expression %r is invalid: %s", run_id, entry.get("if"), exc)
            continue
        await pauses.create(
            conn, run_id=run_id, kind="cancel", event_name=entry["event"], expression=spec.expression,
            trigger_event=spec.trigger_event, match_path=spec.match_path, match_value=spec.match_value,
            timeout_s=timeout_s,
        )
