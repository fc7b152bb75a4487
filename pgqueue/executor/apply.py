"""Apply one Outcome in one transaction.

Every apply starts with the same fencing: lock the run row, then check that this worker still
holds the item's lease. Zero rows means a rescuer or a cancel won, and the outcome is dropped
(the step's output may have been stored already by whoever won: first stored output wins).
Lock order is always run, then items, everywhere that takes both.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pgqueue import storable
from pgqueue.db.pool import Conn
from pgqueue.durations import parse_duration, parse_instant
from pgqueue.errors import ExpressionError, InvalidInput
from pgqueue.events import meta as event_meta
from pgqueue.events.objects import event_object
from pgqueue.models import DISCOVERY_STEP, QueueItem
from pgqueue.protocol.outcome import CallError, Op, Ops, Outcome, RunDone
from pgqueue.queue import backoff
from pgqueue.runner import starting, timeouts
from pgqueue.runs import metadata, pausing, transitions
from pgqueue.store import apps, events, pauses, queue, run_metadata, runs, steps

log = logging.getLogger(__name__)

MAX_STEP_OUTPUT_BYTES = 4 * 1024 * 1024
MAX_STEPS = 1000
MAX_STATE_BYTES = 32 * 1024 * 1024
MAX_SLEEP_S = 366 * 86400
# Ops this version of the engine implements; anything else fails the run non-retriably. Gateway
# (step.fetch) and AIGateway (step.ai.infer) are performed by the executor before apply
# (pgqueue/executor/gateway.py), which hands over the step's result as the op an SDK would send.
SUPPORTED_OPS = frozenset(
    {"StepRun", "Step", "StepError", "StepFailed", "StepPlanned", "Sleep", "RunComplete", "StepNotFound",
     "WaitForEvent", "InvokeFunction", "WaitForSignal", "DiscoveryRequest"}
)
# Ops the JS SDK 4.x can send that pgqueue refuses, and why: the run fails with UnsupportedOpcode
# and "unsupported: <op>: <why>" (docs/compatibility.md).
_DEFER_WHY = (
    "JS defer() (createDefer from inngest/experimental) is not supported by pgqueue: the SDK marks it"
    " experimental and leaves its server side unspecified (when the deferred run starts, until when"
    " defer().abort() may cancel it, the `defers` state the server must send back); remove the defer()"
    " call or run the follow-up with step.sendEvent / step.invoke"
)
REFUSED_OPS = {
    "DeferAdd": _DEFER_WHY,
    "DeferAbort": _DEFER_WHY,
}
# A signal name is an index key: bounded like an event name.
MAX_SIGNAL_LENGTH = 512
SIGNAL_CONFLICT_ERROR = {
    "name": "Error",
    "message": "Signal conflict; signal wait already exists for another run",
}
MAX_WAIT_S = 366 * 86400
INVOKE_TIMEOUT_ERROR = {
    "name": "InngestInvokeTimeoutError",
    "message": "Timed out waiting for invoked function to complete",
}


@dataclass(frozen=True, slots=True)
class SleepWoke:
    """Internal outcome of a sleep item coming due: its step is memoised as null."""


@dataclass(frozen=True, slots=True)
class TimeoutFired:
    """Internal outcome of a wait or invoke timeout coming due."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    applied: bool  # False: the lease was lost or the run had ended; nothing changed
    finished: str | None = None  # the run's final status when this apply ended it
    enqueued: bool = False
    # The run continues on the item's lease (pgqueue.complete_v2): its next call's context.
    context: dict[str, Any] | None = field(default=None, compare=False, repr=False)


LOST = ApplyResult(applied=False)
TIMEOUT_OPS = {"wait": "WaitForEvent", "invoke": "InvokeFunction", "signal": "WaitForSignal"}
INVOKED_EVENT = "inngest/function.invoked"
# Opcodes that report a step's result: metadata they carry that cannot be stored fails the step.
STEP_RESULT_OPS = frozenset({"StepRun", "Step", "StepError", "StepFailed"})
# Opcodes that queue work of their own (a call, a sleep, a wait, signal or invoke timeout): an
# answer carrying one wakes the workers.
QUEUEING_OPS = frozenset({"StepPlanned", "Sleep", "WaitForEvent", "WaitForSignal", "InvokeFunction"})


def _error_dict(err: Any, default_message: str = "step failed") -> dict[str, Any]:
    """Error values handed back to SDKs must carry string name and message (Python is strict), and
    must be storable whatever the app put in them (NaN, lone surrogates, NUL are scrubbed)."""
    err = storable.scrub(err)
    if isinstance(err, dict):
        out = dict(err)
        out["name"] = str(out.get("name") or "Error")
        out["message"] = str(out.get("message") or default_message)
        return out
    if err is None:
        return {"name": "Error", "message": default_message}
    return {"name": "Error", "message": str(err)}


def is_race(op: Op) -> bool:
    """The op belongs to a parallel group in "race" mode (JS Promise.race inside group.parallel,
    Python group.parallel(parallel_mode=RACE)): its end queues a discovery call at once."""
    return op.opts.get("parallelMode") == "race"


def step_memo(op: Op) -> tuple[Any, Any]:
    """(what is memoised for a step's output, the output itself): `Step` ops may carry the memo
    shape `{"data": ...}` already; `StepRun` carries the bare output."""
    data = op.data
    if op.op == "Step" and isinstance(data, dict) and set(data) == {"data"}:
        return data, data["data"]
    return {"data": data}, data


def output_problem(data: Any, body_size: int) -> dict[str, Any] | None:
    # Only answers larger than the limit can carry an output over it: measure just those.
    size = len(json.dumps(data, ensure_ascii=False).encode()) if body_size > MAX_STEP_OUTPUT_BYTES else 0
    if size > MAX_STEP_OUTPUT_BYTES:
        return {
            "name": "OutputTooLarge",
            "message": f"step output is {size} bytes; the limit is {MAX_STEP_OUTPUT_BYTES} bytes (4 MB)",
        }
    problem = storable.problem(data)
    if problem:
        return storable.unstorable_error("the step's output", problem)
    return None


class Applier:
    def __init__(self, *, backoff_scale: float = 1.0) -> None:
        self.backoff_scale = backoff_scale

    async def apply(
        self,
        conn: Conn,
        item: QueueItem,
        outcome: Outcome | SleepWoke | TimeoutFired,
        *,
        started_at: datetime,
        body_size: int = 0,
    ) -> ApplyResult:
        async with conn.transaction():
            run = await runs.lock(conn, item.run_id)
            held = await queue.lock_leased(conn, item.id, item.lease_token) if run is not None else None
            if run is None or held is None:
                log.info("lease lost for item %s of run %s; dropping its outcome", item.id, item.run_id)
                return LOST
            if run["status"] not in ("queued", "running"):
                await queue.delete(conn, item.id)
                await steps.record_attempt(
                    conn, run_id=item.run_id, item_id=item.id, step_id=item.step_id, attempt=item.attempt,
                    outcome="discarded", started_at=started_at,
                )
                return ApplyResult(applied=False)
            version = getattr(outcome, "request_version", None)
            if version is not None and version != run["request_version"]:
                await runs.set_request_version(conn, item.run_id, version)

            match outcome:
                case SleepWoke():
                    await steps.record(
                        conn, item.run_id, item.step_id, op="Sleep", memo=None, name=item.step_name,
                        attempt=item.attempt,
                    )
                    await queue.delete(conn, item.id)
                    await steps.record_attempt(
                        conn, run_id=item.run_id, item_id=item.id, step_id=item.step_id, attempt=item.attempt,
                        outcome="ok", started_at=started_at,
                    )
                    return await self._continue(conn, item, run, race=bool(held["race"]))
                case TimeoutFired() if item.step_id in (timeouts.START, timeouts.FINISH):
                    await queue.delete(conn, item.id)
                    if item.step_id == timeouts.START and run["status"] != "queued":
                        return ApplyResult(applied=True)
                    which = "start" if item.step_id == timeouts.START else "finish"
                    await transitions.cancel(
                        conn, item.run_id, reason=f"the run did not {which} within timeouts.{which}")
                    return ApplyResult(applied=True, finished="cancelled")
                case TimeoutFired():
                    pause = await pauses.consume_step(conn, item.run_id, item.step_id)
                    if pause is not None:
                        # A wait or a signal times out with null; an invoke with an error.
                        memo = {"error": INVOKE_TIMEOUT_ERROR} if pause["kind"] == "invoke" else None
                        op = TIMEOUT_OPS[pause["kind"]]
                        await steps.record(conn, item.run_id, item.step_id, op=op, memo=memo,
                                           name=item.step_name, attempt=item.attempt)
                    await queue.delete(conn, item.id)
                    await steps.record_attempt(
                        conn, run_id=item.run_id, item_id=item.id, step_id=item.step_id, attempt=item.attempt,
                        outcome="ok" if pause else "discarded", started_at=started_at,
                    )
                    race = bool(pause["race"]) if pause is not None else bool(held["race"])
                    return await self._continue(conn, item, run, race=race)
                case RunDone(output=output):
                    # the call is recorded on the run (pgqueue.calls), as the group commit does
                    return await self._finish(conn, run, "completed", output=output,
                                              call=(started_at, item.attempt, item.id))
                case CallError():
                    return await self._call_error(conn, item, run, outcome, started_at)
                case Ops():
                    return await self._ops(conn, item, run, outcome, started_at, body_size,
                                           item_race=bool(held["race"]))

    async def _call_error(
        self, conn: Conn, item: QueueItem, run: dict[str, Any], outcome: CallError, started_at: datetime
    ) -> ApplyResult:
        error = _error_dict(outcome.error, "function failed")
        if outcome.retriable and item.attempt + 1 < item.max_attempts:
            delay = outcome.retry_after_s
            if delay is None:
                delay = backoff.delay_s(item.attempt, scale=self.backoff_scale)
            await queue.retry(conn, item, delay_s=delay, error=error)
            await steps.record_attempt(
                conn, run_id=item.run_id, item_id=item.id, step_id=item.step_id, attempt=item.attempt,
                outcome="retry", status_code=outcome.status_code, error=error, started_at=started_at,
            )
            return ApplyResult(applied=True)
        await steps.record_attempt(
            conn, run_id=item.run_id, item_id=item.id, step_id=item.step_id, attempt=item.attempt,
            outcome="failed", status_code=outcome.status_code, error=error, started_at=started_at,
        )
        return await self._finish(conn, run, "failed", error=error)

    async def _ops(
        self, conn: Conn, item: QueueItem, run: dict[str, Any], outcome: Ops, started_at: datetime,
        body_size: int, *, item_race: bool = False,
    ) -> ApplyResult:
        if not outcome.ops:
            error = {"name": "InvalidResponse", "message": "the SDK answered 206 with no opcodes"}
            call_error = CallError(error, retriable=True, status_code=206)
            return await self._call_error(conn, item, run, call_error, started_at)
        unsupported = [op.op for op in outcome.ops if op.op not in SUPPORTED_OPS]
        if unsupported:
            why = REFUSED_OPS.get(unsupported[0])
            message = f"unsupported: {unsupported[0]}" + (f": {why}" if why else "")
            error = {"name": "UnsupportedOpcode", "message": message}
            await steps.record_attempt(
                conn, run_id=item.run_id, item_id=item.id, step_id=item.step_id, attempt=item.attempt,
                outcome="failed", status_code=206, error=error, started_at=started_at,
            )
            return await self._finish(conn, run, "failed", error=error)
        for op in outcome.ops:
            problem = storable.problem([op.id, op.name, op.display_name, op.opts])
            if problem:
                # An opcode pgqueue cannot store can never be applied: retrying would only repeat it.
                error = storable.unstorable_error(f"the {op.op} opcode of step {op.label!r}", problem)
                await steps.record_attempt(
                    conn, run_id=item.run_id, item_id=item.id, step_id=item.step_id, attempt=item.attempt,
                    outcome="failed", status_code=206, error=error, started_at=started_at,
                )
                return await self._finish(conn, run, "failed", error=error)

        ops = await self._metadata(conn, item, outcome.ops)
        if isinstance(ops, dict):
            await steps.record_attempt(
                conn, run_id=item.run_id, item_id=item.id, step_id=item.step_id, attempt=item.attempt,
                outcome="failed", status_code=206, error=ops, started_at=started_at,
            )
            return await self._finish(conn, run, "failed", error=ops)
        outcome = dataclasses.replace(outcome, ops=ops)

        retry_error: dict[str, Any] | None = None
        for op in outcome.ops:
            if op.op == "StepError" and not outcome.no_retry and item.attempt + 1 < item.max_attempts:
                retry_error = _error_dict(op.error)
            elif op.op == "StepNotFound":
                retry_error = {"name": "StepNotFound", "message": f"the SDK could not find step {op.id}"}

        # Ops first, the item's own fate last: an answer that changes nothing (it only reports
        # steps already stored) is an error of the call, so a confused app cannot loop forever.
        progress = False
        race = False  # a race-mode step ended in this answer: discovery at once
        max_attempts = run["max_attempts"]
        totals: list[steps.Recorded] = []
        stored_ids: list[str] = []

        def pending(op: Op) -> bool:
            """An op reported again while its item or pause is still open (a race's losers, which
            the SDK reports again on every call until they end) is a step the run waits for, not
            a lack of progress: nothing new is queued, and the open step continues the run."""
            return op.id != item.step_id

        async def record(op: Op, kind: str, memo: Any) -> bool:
            stored = await steps.record(conn, item.run_id, op.id, op=kind, memo=memo, name=op.label,
                                        attempt=item.attempt)
            if stored:
                totals.append(stored)
                stored_ids.append(op.id)
            return stored is not None

        # Waits first, so an event sent by a sibling step of the same answer is not missed.
        for op in sorted(outcome.ops, key=lambda o: o.op not in ("WaitForEvent", "WaitForSignal")):
            match op.op:
                case "StepRun" | "Step":
                    memo, data = step_memo(op)
                    problem = output_problem(data, body_size)
                    if problem:
                        stored = await record(op, "StepFailed", {"error": problem})
                    else:
                        stored = await record(op, "StepRun", memo)
                    progress |= stored
                    race |= stored and (is_race(op) or item_race)
                case "StepError":
                    if retry_error is None:
                        stored = await record(op, "StepFailed", {"error": _error_dict(op.error)})
                        progress |= stored
                        race |= stored and (is_race(op) or item_race)
                case "StepFailed":
                    stored = await record(op, "StepFailed", {"error": _error_dict(op.error)})
                    progress |= stored
                    race |= stored and (is_race(op) or item_race)
                case "StepPlanned":
                    queued = await queue.enqueue(conn, run_id=item.run_id, function_id=item.function_id,
                                                 kind="call", step_id=op.id, step_name=op.label,
                                                 max_attempts=max_attempts, race=is_race(op))
                    progress |= queued or pending(op)
                case "Sleep":
                    try:
                        wake_at, delay_s = _sleep_target(op)
                    except InvalidInput as exc:
                        error = {"name": "InvalidSleep", "message": exc.message}
                        return await self._finish(conn, run, "failed", error=error)
                    queued = await queue.enqueue(conn, run_id=item.run_id, function_id=item.function_id,
                                                 kind="sleep", step_id=op.id,
                                                 step_name=op.display_name or op.id,
                                                 max_attempts=max_attempts, run_at=wake_at, delay_s=delay_s,
                                                 race=is_race(op))
                    progress |= queued or pending(op)
                case "WaitForEvent":
                    try:
                        progress |= await self._wait(conn, item, run, op) or pending(op)
                    except InvalidInput as exc:
                        error = {"name": "InvalidWaitForEvent", "message": exc.message}
                        return await self._finish(conn, run, "failed", error=error)
                case "WaitForSignal":
                    try:
                        progress |= await self._wait_signal(conn, item, run, op) or pending(op)
                    except InvalidInput as exc:
                        error = {"name": "InvalidWaitForSignal", "message": exc.message}
                        return await self._finish(conn, run, "failed", error=error)
                    except pauses.SignalConflict:
                        # As Inngest does: the call fails (retried by the run's retry policy, so a
                        # wait that ends meanwhile frees the signal), then the run fails.
                        call_error = CallError(dict(SIGNAL_CONFLICT_ERROR), retriable=True, status_code=206)
                        return await self._call_error(conn, item, run, call_error, started_at)
                case "InvokeFunction":
                    try:
                        progress |= await self._invoke(conn, item, run, op) or pending(op)
                    except InvalidInput as exc:
                        error = {"name": "InvalidInvoke", "message": exc.message}
                        return await self._finish(conn, run, "failed", error=error)
                case "DiscoveryRequest":
                    # "Call me again to discover the next steps" (the JS SDK when checkpointing ran
                    # out of time): the item ends, so the run's next discovery call is queued below.
                    progress = True
                case "RunComplete":
                    return await self._finish(conn, run, "completed", output=op.data,
                                              call=(started_at, item.attempt, item.id))

        if totals:
            exceeded = limit_error(totals[-1])
            if exceeded:
                await steps.record_attempt(
                    conn, run_id=item.run_id, item_id=item.id, step_id=item.step_id, attempt=item.attempt,
                    outcome="failed", status_code=206, error=exceeded, started_at=started_at,
                )
                return await self._finish(conn, run, "failed", error=exceeded)
        if retry_error is None and not progress:
            error = {"name": "NoProgress",
                     "message": "the SDK's answer only reported steps that were already completed"}
            return await self._call_error(conn, item, run, CallError(error, retriable=True, status_code=206),
                                          started_at)
        if retry_error is not None:
            delay = outcome.retry_after_s
            if delay is None:
                delay = backoff.delay_s(item.attempt, scale=self.backoff_scale)
            await queue.retry(conn, item, delay_s=delay, error=retry_error)
        else:
            await queue.delete(conn, item.id)
        if retry_error is None and len(stored_ids) == 1 and len(outcome.ops) == 1:
            # one step from one call: the call is recorded on the step (pgqueue.calls), as the group
            # commit records it
            await steps.mark_call(conn, item.run_id, stored_ids[0], started_at, item.id,
                                  planned=item.step_id != DISCOVERY_STEP)
        else:
            await steps.record_attempt(
                conn, run_id=item.run_id, item_id=item.id, step_id=item.step_id, attempt=item.attempt,
                outcome="retry" if retry_error else "ok", status_code=206, error=retry_error,
                started_at=started_at,
            )
        if sum(op.op != "DiscoveryRequest" for op in outcome.ops) > 1:  # parallel steps
            await runs.force_step_plan(conn, item.run_id)
        queued = retry_error is not None or any(op.op in QUEUEING_OPS for op in outcome.ops)
        return await self._continue(conn, item, run, queued=queued, race=race)

    async def _metadata(
        self, conn: Conn, item: QueueItem, ops: tuple[Op, ...]
    ) -> tuple[Op, ...] | dict[str, Any]:
        """Store the metadata the answer's ops carry (pgqueue/runs/metadata.py), before the ops
        themselves. An op whose metadata cannot be stored (malformed, over 64 KB, over the run's
        1 MB) is not dropped: its step fails with InvalidMetadata or MetadataTooLarge (the SDK
        throws it into the function), or, on an op that is no step result, the run fails with it
        (the error is returned). A step reported again after it was stored writes nothing again."""
        carrying = [op for op in ops if op.metadata is not None]
        if not carrying:
            return ops
        stored = await steps.stored_among(conn, item.run_id,
                                          [op.id for op in carrying if op.op in STEP_RESULT_OPS])
        out: list[Op] = []
        for op in ops:
            if op.metadata is None or (op.op in STEP_RESULT_OPS and op.id in stored):
                out.append(op)
                continue
            try:
                updates = metadata.from_op(op.metadata, step_id=op.id, attempt=item.attempt,
                                           label=op.label)
                async with conn.transaction():  # a savepoint: a refused write leaves nothing behind
                    await run_metadata.put(conn, item.run_id, [u.to_row() for u in updates],
                                           max_run_bytes=metadata.MAX_RUN_BYTES)
            except InvalidInput as exc:
                error = metadata.metadata_error(exc)
                if op.op not in STEP_RESULT_OPS:
                    return error
                log.info("run %s: step %s fails: %s", item.run_id, op.label, error["message"])
                out.append(dataclasses.replace(op, op="StepFailed", error=error, metadata=None))
                continue
            out.append(op)
        return tuple(out)

    async def _trigger_event(self, conn: Conn, run: dict[str, Any]) -> dict[str, Any]:
        row = await events.get(conn, run["event_id"])
        return event_object(row) if row else {"name": "", "data": {}}

    async def _wait(self, conn: Conn, item: QueueItem, run: dict[str, Any], op: Op) -> bool:
        """Park the run: a pause matched by the runner, and a timeout item that resumes with null."""
        event_name = op.opts.get("event") or op.name
        if not isinstance(event_name, str) or not event_name:
            raise InvalidInput(f"wait step {op.label!r} names no event")
        if len(event_name) > pausing.MAX_EVENT_NAME_LENGTH:
            raise InvalidInput(f"wait step {op.label!r}: the event name is longer than "
                               f"{pausing.MAX_EVENT_NAME_LENGTH} characters")
        timeout_raw = op.opts.get("timeout")
        timeout_s = 0.0 if timeout_raw in (None, "") else parse_duration(timeout_raw)
        if timeout_s > MAX_WAIT_S:
            raise InvalidInput(f"wait step {op.label!r}: timeout is longer than 366 days")
        if_expr = op.opts.get("if")
        try:
            trigger_event = await self._trigger_event(conn, run)
            spec = pausing.build(if_expr if isinstance(if_expr, str) else None, trigger_event)
        except ExpressionError as exc:
            raise InvalidInput(f"wait step {op.label!r}: {exc.message}") from None
        created = await pauses.create(
            conn, run_id=item.run_id, kind="wait", step_id=op.id, step_name=op.label, event_name=event_name,
            expression=spec.expression, trigger_event=spec.trigger_event, match_path=spec.match_path,
            match_value=spec.match_value, timeout_s=timeout_s, race=is_race(op),
        )
        if created is None:
            return False
        await queue.enqueue(conn, run_id=item.run_id, function_id=item.function_id, kind="timeout",
                            step_id=op.id, step_name=op.label, max_attempts=run["max_attempts"],
                            delay_s=max(timeout_s, 0.0), race=is_race(op))
        return True

    async def _wait_signal(self, conn: Conn, item: QueueItem, run: dict[str, Any], op: Op) -> bool:
        """Park the run on a signal (JS step.waitForSignal): a pause holding the signal's name, and a
        timeout item that resumes it with null. At most one pause holds a name: with onConflict
        "replace" (opts.conflict) this wait takes it over, otherwise SignalConflict is raised."""
        signal = op.opts.get("signal") or op.name
        if not isinstance(signal, str) or not signal.strip():
            raise InvalidInput(f"signal wait step {op.label!r} names no signal")
        if len(signal) > MAX_SIGNAL_LENGTH:
            raise InvalidInput(f"signal wait step {op.label!r}: the signal name is longer than "
                               f"{MAX_SIGNAL_LENGTH} characters")
        conflict = op.opts.get("conflict")
        if conflict not in (None, "", "replace", "fail"):
            raise InvalidInput(f"signal wait step {op.label!r}: onConflict must be \"replace\" or \"fail\","
                               f" not {conflict!r}")
        timeout_raw = op.opts.get("timeout")
        timeout_s = 0.0 if timeout_raw in (None, "") else parse_duration(timeout_raw)
        if timeout_s > MAX_WAIT_S:
            raise InvalidInput(f"signal wait step {op.label!r}: timeout is longer than 366 days")
        timeout_s = max(timeout_s, 0.0)
        created = await pauses.create_signal(
            conn, run_id=item.run_id, step_id=op.id, step_name=op.label, signal=signal, timeout_s=timeout_s,
            replace=conflict == "replace", race=is_race(op),
        )
        if created is None:
            return False
        await queue.enqueue(conn, run_id=item.run_id, function_id=item.function_id, kind="timeout",
                            step_id=op.id, step_name=op.label, max_attempts=run["max_attempts"],
                            delay_s=timeout_s, race=is_race(op))
        return True

    async def _invoke(self, conn: Conn, item: QueueItem, run: dict[str, Any], op: Op) -> bool:
        """Park the run on the target's inngest/function.finished, then start the target's run the
        way every run starts (its own flow control applies). The pause is the step's marker: an SDK
        that reports the same invoke again finds it and starts nothing twice."""
        slug = op.opts.get("function_id")
        target = await apps.function_by_slug(conn, slug) if isinstance(slug, str) else None
        if target is None or target["archived_at"] is not None:
            return await self._invoke_failed(conn, item, op,
                                             f"could not invoke {slug!r}: no such function is synced")
        timeout_raw = op.opts.get("timeout")
        timeout_s = None if timeout_raw in (None, "") else parse_duration(timeout_raw)
        payload = op.opts.get("payload") if isinstance(op.opts.get("payload"), dict) else {}
        # The invoked run's sessions: the payload's meta (the SDK stamps the caller's ctx.sessions
        # as propagated_sessions; a manual meta.sessions wins per key), resolved as at ingest.
        sessions = event_meta.resolve(payload.get("meta"), f"invoke step {op.label!r}")
        correlation_id = f"{item.run_id}.{op.id}"
        created = await pauses.create(
            conn, run_id=item.run_id, kind="invoke", step_id=op.id, step_name=op.label,
            event_name="inngest/function.finished", expression=None, trigger_event=None,
            match_path="data.correlation_id", match_value=correlation_id, timeout_s=timeout_s,
            race=is_race(op),
        )
        if created is None:
            return False  # already invoked
        data = dict(payload.get("data") or {}) if isinstance(payload.get("data") or {}, dict) else {}
        data["_inngest"] = {
            "fn_id": target["slug"],
            "correlation_id": correlation_id,
            "source_fn_id": await apps.function_slug(conn, item.function_id),
            "source_run_id": item.run_id,
        }
        if timeout_s is not None:
            data["_inngest"]["expire"] = int(timeout_s * 1000)
        user = payload.get("user") if isinstance(payload.get("user"), dict) else None
        event = await events.insert_direct(conn, INVOKED_EVENT, data, user=user,
                                           v=payload.get("v") if isinstance(payload.get("v"), str) else None,
                                           sessions=sessions)
        origin = starting.Origin(correlation_id=correlation_id)
        _, reason = await starting.start_one(conn, {**target, "function_id": target["id"]}, event["id"],
                                             event_object(event), origin=origin)
        if reason is not None:
            await pauses.consume_step(conn, item.run_id, op.id)
            message = f"the invoked function {target['slug']!r} did not start: {reason}"
            return await self._invoke_failed(conn, item, op, message)
        if timeout_s is not None:
            await queue.enqueue(conn, run_id=item.run_id, function_id=item.function_id, kind="timeout",
                                step_id=op.id, step_name=op.label, max_attempts=run["max_attempts"],
                                delay_s=timeout_s, race=is_race(op))
        return True

    async def _invoke_failed(self, conn: Conn, item: QueueItem, op: Op, message: str) -> bool:
        """The invoke step fails without retries (as in Inngest, so chains of invokes don't multiply)."""
        stored = await steps.record(conn, item.run_id, op.id, op="StepFailed",
                                    memo={"error": {"name": "Error", "message": message}},
                                    name=op.label, attempt=item.attempt)
        return stored is not None

    async def _continue(
        self, conn: Conn, item: QueueItem, run: dict[str, Any], *, queued: bool = False, race: bool = False
    ) -> ApplyResult:
        """`queued`: this apply queued or rescheduled items of its own; `race`: a race-mode step
        ended (see continue_run)."""
        await transitions.continue_run(conn, item.run_id, item.function_id, run["max_attempts"],
                                       queued=queued, race=race)
        return ApplyResult(applied=True, enqueued=True)

    async def _finish(
        self, conn: Conn, run: dict[str, Any], status: str, *, output: Any = None, error: Any = None,
        call: tuple[datetime, int, int] | None = None,
    ) -> ApplyResult:
        ended = await transitions.finish(conn, run, status, output=output, error=error, call=call)
        return ApplyResult(applied=True, finished=status if ended else None)


def limit_error(totals: steps.Recorded) -> dict[str, Any] | None:
    if totals.step_count > MAX_STEPS:
        return {"name": "StepLimitExceeded",
                "message": f"the run has {totals.step_count} steps; the limit is {MAX_STEPS} steps per run"}
    if totals.state_bytes > MAX_STATE_BYTES:
        return {"name": "StateTooLarge",
                "message": f"the run's state is {totals.state_bytes} bytes; "
                           f"the limit is {MAX_STATE_BYTES} bytes (32 MB)"}
    return None


def _sleep_target(op: Op) -> tuple[datetime | None, float]:
    raw = op.opts.get("duration") or op.name or ""
    if not isinstance(raw, str | int | float):
        raise InvalidInput(f"sleep step {op.label!r} has no duration")
    if isinstance(raw, str):
        instant = parse_instant(raw)
        if instant is not None:
            return instant, 0.0
    seconds = parse_duration(raw)
    if seconds > MAX_SLEEP_S:
        raise InvalidInput(f"sleep step {op.label!r} is longer than 366 days")
    return None, max(seconds, 0.0)
