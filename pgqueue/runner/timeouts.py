"""Run-level timeouts: `timeouts.start` (cancel a run not started in time) and `timeouts.finish`
(cancel a started run not finished in time), as delayed queue items named $start-timeout and
$finish-timeout; they never hold a run's next call back. The finish timeout is scheduled in SQL by
the statement that starts the run (pgqueue.finish_timeouts_v1)."""

from __future__ import annotations

import logging
from typing import Any

from pgqueue.db.pool import Conn
from pgqueue.durations import parse_duration
from pgqueue.errors import InvalidInput
from pgqueue.store import queue

log = logging.getLogger(__name__)

START = "$start-timeout"
FINISH = "$finish-timeout"


def _seconds(config: dict[str, Any], which: str) -> float | None:
    raw = (config.get("timeouts") or {}).get(which)
    if not raw:
        return None
    try:
        return parse_duration(raw)
    except InvalidInput:
        log.warning("timeouts.%s %r is not a duration; ignored", which, raw)
        return None


async def schedule_start(
    conn: Conn, run_id: str, trig: dict[str, Any], *, released_in_s: float = 0.0
) -> None:
    """`timeouts.start` counts from the run's release to the queue: now, or when its debounce or
    batch window ends (released_in_s; when a window moves, pgqueue.flow_shift_start_timeout_v1
    moves the timeout with it)."""
    seconds = _seconds(trig["config"], "start")
    if seconds is not None:
        await queue.enqueue(conn, run_id=run_id, function_id=trig["function_id"], kind="timeout",
                            step_id=START, step_name="timeouts.start", max_attempts=1,
                            delay_s=released_in_s + seconds)
