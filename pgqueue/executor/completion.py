"""Group commit for the two outcomes almost every call ends with: one step's output, or the
function's return value. Calls that end while a batch is being written wait for the next one, so
under load one transaction (one WAL flush) stores many calls, and an idle system pays nothing
extra: a lone call is written at once. The SQL side is pgqueue.complete_v1 (sql/functions/complete.sql);
everything else goes through the general Applier, and so do these two when complete_v1 says
`fallback` (the step was stored already, or a run limit is reached)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from pgqueue import ids, storable
from pgqueue.executor.apply import (
    LOST,
    MAX_STATE_BYTES,
    MAX_STEP_OUTPUT_BYTES,
    MAX_STEPS,
    ApplyResult,
    is_race,
    step_memo,
)
from pgqueue.models import QueueItem
from pgqueue.protocol.outcome import Ops, Outcome, RunDone
from pgqueue.store import queue

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.1, 0.5, 1.0, 2.0)
CONTINUED = "continued"
RESULTS = {
    "applied": ApplyResult(applied=True, enqueued=True),
    "finished": ApplyResult(applied=True, finished="completed"),
    "lost": LOST,
    "discarded": ApplyResult(applied=False),
}
FALLBACK = "fallback"
T = TypeVar("T")
Completed = tuple[str, dict[str, Any] | None]  # complete_v2's result, and the next context when continued


async def with_db_retries(what: str, write: Callable[[], Awaitable[T]]) -> T:
    """Run a fenced write again on a fresh connection after a dropped database connection
    (RETRY_DELAYS_S apart), then give up with the last error."""
    for attempt, delay in enumerate((*RETRY_DELAYS_S, None)):
        try:
            return await write()
        except psycopg.OperationalError as exc:
            if delay is None:
                raise
            log.warning("%s failed (%s); retry %d", what, exc, attempt + 1)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


def element(
    item: QueueItem, outcome: Outcome, *, started_at: datetime, body_size: int
) -> dict[str, Any] | None:
    """The complete_v1 element for this outcome, or None when it needs the general path."""
    base = {
        "item_id": item.id,
        "lease_token": str(item.lease_token),
        "run_id": item.run_id,
        "item_step_id": item.step_id,
        "attempt": item.attempt,
        "started_at": started_at.isoformat(),
        "request_version": getattr(outcome, "request_version", None),
        "may_continue": item.may_continue,
    }
    if isinstance(outcome, RunDone):
        if storable.problem(outcome.output):
            return None
        return {**base, **_finished_event(), "kind": "done", "output": outcome.output, "status_code": 200}
    if not isinstance(outcome, Ops) or len(outcome.ops) != 1 or body_size > MAX_STEP_OUTPUT_BYTES:
        return None
    op = outcome.ops[0]
    if op.metadata is not None:
        return None  # metadata is stored with its step by the general path (pgqueue/runs/metadata.py)
    if op.op == "RunComplete":
        if storable.problem(op.data):
            return None
        return {**base, **_finished_event(), "kind": "done", "output": op.data, "status_code": 206}
    if op.op not in ("StepRun", "Step") or is_race(op):
        return None  # a race-mode step queues its discovery call at once: the general path
    memo, data = step_memo(op)
    if storable.problem(data):
        return None
    return {**base, "kind": "step", "step_id": op.id, "step_name": op.label, "memo": memo}


def _finished_event() -> dict[str, Any]:
    """The id (and its time) of the inngest/function.finished event a completion emits."""
    event_id = ids.new_ulid()
    return {"event_id": event_id, "event_ts": ids.ulid_time_ms(event_id)}


class CompletionBatcher:
    """Submit complete_v1 elements; at most `flushers` batches are written at once, each taking
    everything submitted meanwhile (up to `max_batch`)."""

    def __init__(self, pool: AsyncConnectionPool, *, max_batch: int = 200, flushers: int = 2) -> None:
        self.pool = pool
        self.max_batch = max_batch
        self.flushers = flushers
        self._pending: list[tuple[dict[str, Any], asyncio.Future[Completed]]] = []
        self._active = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches_written = 0

    async def submit(self, elem: dict[str, Any]) -> Completed:
        """complete_v2's result for this element (and the run's next context when it continues);
        raises psycopg.OperationalError when the database stayed unreachable (the caller hands the
        lease back; the rescuer is the backstop)."""
        future: asyncio.Future[Completed] = asyncio.get_running_loop().create_future()
        self._pending.append((elem, future))
        if self._active < self.flushers:
            self._active += 1
            task = asyncio.create_task(self._flush_all(), name="pgqueue-complete")
            self._tasks.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _flush_all(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                await self._flush(batch)
        finally:
            self._active -= 1

    async def _flush(self, batch: list[tuple[dict[str, Any], asyncio.Future[Completed]]]) -> None:
        payload = json.dumps([elem for elem, _ in batch], ensure_ascii=False, default=str)
        try:
            results = await self._write(payload)
        except psycopg.OperationalError as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except Exception:
            log.exception("a batched completion failed; applying its %d calls one by one", len(batch))
            results = {}
        for elem, future in batch:
            if not future.done():
                future.set_result(results.get(elem["item_id"], (FALLBACK, None)))

    async def _write(self, payload: str) -> dict[int, Completed]:
        """Safe to retry: every element is fenced by its lease token, so a batch that did commit
        before its connection died reports `lost` the second time and changes nothing."""

        async def write() -> dict[int, Completed]:
            async with self.pool.connection() as conn:
                return await queue.complete_batch(conn, payload, max_steps=MAX_STEPS,
                                                  max_state_bytes=MAX_STATE_BYTES)

        results = await with_db_retries("storing a batch of call results", write)
        self.batches_written += 1
        return results
