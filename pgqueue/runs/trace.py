"""A run's trace: one tree of spans built from what pgqueue stores (the run, every call and wake-up in
`attempts`, every stored step, the queue items and pauses still pending). GraphQL's `run.trace`, REST's
`GET /v1/runs/{id}/trace` and the dashboard's waterfall all draw this one tree, so they agree.

The tree, as Inngest's dev server shapes it (span names, statuses, step ops):

    Run                         the run: queued, started, ended; its output
    ├─ Queued                   the wait before the first call (flow control, a busy queue)
    ├─ <step name>              one step.run: the call that ran it, or the calls when retried,
    │  ├─ Attempt 0               as child spans ("Attempt N", each a call with its error);
    │  └─ Attempt 1               a step that succeeded on its only call has no children
    ├─ <step name>              steps run in parallel are siblings whose times overlap
    ├─ <sleep / wait / invoke>  a span from the call that asked for it until it resolved
    ├─ Discovery step           a call that only reported what to do next (planned steps, a sleep)
    └─ Finalization             the call that returned the function's result (or its error)

Every call to the app is in the tree: as a step (or one of its attempts), a discovery step or the
finalization. Each span has `queued_at` (when its work became ready) and `started_at`: the
difference is the time it waited in the queue. Spans with an output carry an `output_id` that
`output()` resolves (a step's output or error, a failed call's error, the run's result).

How calls are tied to steps. An app call is one attempt of one queue item, and the attempts of an
item (its retries) are one group. A planned step (parallel steps) has an item of its own, named by
the step's id. A step the SDK ran inside a discovery call (the usual one-step-per-call flow, and
JS checkpoints) was stored while that call ran: discovery calls of a run never overlap (a run has
one discovery item at a time), so it belongs to the last discovery call that started before it was
stored. A sleep, wait, invoke or signal starts when the last discovery call before it ended (in a
parallel "race", where the SDK reports a loser again on later calls, that is the latest call that
reported it) and ends when its step was stored; while pending, its queue item or pause says both.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import enum
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pgqueue.db.pool import Conn
from pgqueue.errors import InvalidInput, NotFound
from pgqueue.models import DISCOVERY_STEP
from pgqueue.store import history

RUN_SPAN = "Run"
QUEUE_SPAN = "Queued"
DISCOVERY_SPAN = "Discovery step"
FINALIZATION_SPAN = "Finalization"
INVOKE_TIMEOUT = "InngestInvokeTimeoutError"


class SpanStatus(enum.StrEnum):
    """Inngest's RunTraceSpanStatus."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class SpanKind(enum.StrEnum):
    """What a span stands for (pgqueue's own field: the waterfall colours by it)."""

    RUN = "run"
    QUEUE = "queue"
    STEP = "step"
    ATTEMPT = "attempt"
    DISCOVERY = "discovery"
    FINALIZATION = "finalization"
    SLEEP = "sleep"
    WAIT = "wait"
    INVOKE = "invoke"
    SIGNAL = "signal"


class StepOp(enum.StrEnum):
    """Inngest's StepOp."""

    RUN = "RUN"
    SLEEP = "SLEEP"
    WAIT_FOR_EVENT = "WAIT_FOR_EVENT"
    INVOKE = "INVOKE"
    WAIT_FOR_SIGNAL = "WAIT_FOR_SIGNAL"
    AI_GATEWAY = "AI_GATEWAY"


RUN_STATUSES = {
    "queued": SpanStatus.QUEUED,
    "running": SpanStatus.RUNNING,
    "completed": SpanStatus.COMPLETED,
    "failed": SpanStatus.FAILED,
    "cancelled": SpanStatus.CANCELLED,
}
STEP_OPS = {
    "StepRun": StepOp.RUN,
    "Step": StepOp.RUN,
    "StepFailed": StepOp.RUN,
    "StepError": StepOp.RUN,
    "Sleep": StepOp.SLEEP,
    "WaitForEvent": StepOp.WAIT_FOR_EVENT,
    "InvokeFunction": StepOp.INVOKE,
    "WaitForSignal": StepOp.WAIT_FOR_SIGNAL,
}
RAN_OPS = frozenset({"StepRun", "Step", "StepFailed", "StepError"})
WAITING_OPS = frozenset({"Sleep", "WaitForEvent", "InvokeFunction", "WaitForSignal"})
PAUSE_OPS = {"wait": "WaitForEvent", "invoke": "InvokeFunction", "signal": "WaitForSignal"}


@dataclass(frozen=True, slots=True)
class SleepInfo:
    sleep_until: datetime


@dataclass(frozen=True, slots=True)
class WaitInfo:
    """A waitForEvent. After it resolved, its pause is gone: only the matched event (its id and
    name) or the timeout (`timed_out`) is known; `event_name`, `expression` and `timeout` are known
    while it waits."""

    event_name: str | None
    expression: str | None
    timeout: datetime | None
    found_event_id: str | None
    timed_out: bool | None


@dataclass(frozen=True, slots=True)
class InvokeInfo:
    function_id: str | None  # the invoked function's composite id (app-fn)
    triggering_event_id: str | None  # the inngest/function.invoked event that started it
    run_id: str | None  # the invoked run
    timeout: datetime | None
    timed_out: bool | None


@dataclass(frozen=True, slots=True)
class SignalInfo:
    signal: str | None
    timeout: datetime | None
    timed_out: bool | None


StepInfo = SleepInfo | WaitInfo | InvokeInfo | SignalInfo


@dataclass(frozen=True, slots=True)
class Span:
    span_id: str
    name: str
    kind: SpanKind
    status: SpanStatus
    queued_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    step_id: str | None = None
    step_op: StepOp | None = None
    attempt: int | None = None  # the (last) attempt number, 0-based, of a call or a step's calls
    status_code: int | None = None  # a call's HTTP status (206 steps, 200 the result, 5xx errors)
    output_id: str | None = None
    info: StepInfo | None = None
    children: tuple[Span, ...] = ()

    @property
    def duration_ms(self) -> int | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(int((self.ended_at - self.started_at).total_seconds() * 1000), 0)

    def walk(self) -> Iterable[Span]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass(frozen=True, slots=True)
class Trace:
    run_id: str
    function_id: str
    function_slug: str
    app_id: str
    root: Span


@dataclass(frozen=True, slots=True)
class SpanOutput:
    """What an output id resolves to: `data` is JSON text (the step's output, the matched event,
    the run's result), `error` the error object ({name, message, stack, ...})."""

    data: str | None = None
    error: dict[str, Any] | None = None
    input: str | None = None


# -- output ids ------------------------------------------------------------------------------------


def output_id(run_id: str, *, step: str | None = None, attempt: int | None = None,
              item: int | None = None) -> str:
    """An opaque id for one output: a step's, a call's error, a pending item's last error, or the
    run's (none of step, attempt and item given)."""
    ref: dict[str, Any] = {"r": run_id}
    if step is not None:
        ref["s"] = step
    elif attempt is not None:
        ref["a"] = attempt
    elif item is not None:
        ref["i"] = item
    raw = json.dumps(ref, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_output_id(value: str) -> dict[str, Any]:
    """The reference inside an output id; InvalidInput for anything `output_id` did not make."""
    try:
        if len(value) > 4096:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        ref = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput(f"invalid output id {value[:80]!r}") from None
    valid = (
        isinstance(ref, dict) and isinstance(ref.get("r"), str) and len(ref) <= 2
        and (len(ref) == 1 or isinstance(ref.get("s"), str)
             or (type(ref.get("a")) is int) or (type(ref.get("i")) is int))
    )
    if not valid:
        raise InvalidInput(f"invalid output id {value[:80]!r}")
    return ref


def to_json(value: Any) -> str:
    """Outputs as compact JSON text, as Inngest returns them (`Bytes`)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _error_object(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return {"name": "Error", "message": value if isinstance(value, str) else to_json(value)}


async def output_of_run(conn: Conn, run_id: str, value: str) -> SpanOutput:
    """One of run `run_id`'s outputs (REST and the dashboard): NotFound when the id names another
    run's output or the output is gone."""
    if decode_output_id(value)["r"] != run_id:
        raise NotFound(f"output {value} is not an output of run {run_id}")
    found = await output(conn, value)
    if found is None:
        raise NotFound(f"output {value} not found")
    return found


async def output(conn: Conn, value: str) -> SpanOutput | None:
    """Resolve an output id (None: the run, step or call is gone, e.g. removed by retention)."""
    ref = decode_output_id(value)
    run_id = ref["r"]
    if "s" in ref:
        row = await history.step_output(conn, run_id, ref["s"])
        if row is None:
            return None
        memo = row["memo"]
        if isinstance(memo, dict) and set(memo) == {"data"}:
            return SpanOutput(data=to_json(memo["data"]))
        if isinstance(memo, dict) and set(memo) == {"error"}:
            return SpanOutput(error=_error_object(memo["error"]))
        return SpanOutput(data=to_json(memo))
    if "a" in ref:
        row = await history.attempt_output(conn, run_id, ref["a"])
        if row is None:
            return None
        return SpanOutput(error=_error_object(row["error"])) if row["error"] is not None else SpanOutput()
    if "i" in ref:
        row = await history.item_output(conn, run_id, ref["i"])
        if row is None:
            return None
        return SpanOutput(error=_error_object(row["error"])) if row["error"] is not None else SpanOutput()
    row = await history.run_output(conn, run_id)
    if row is None:
        return None
    if row["status"] == "completed":
        return SpanOutput(data=to_json(row["output"]))
    if row["error"] is not None:
        return SpanOutput(error=_error_object(row["error"]))
    return SpanOutput()


# -- loading and building --------------------------------------------------------------------------


async def load(conn: Conn, run_id: str) -> Trace | None:
    """The trace of one run (None: no such run): a handful of reads by the run's keys, in one
    read-only snapshot."""
    async with conn.transaction():
        await history.snapshot(conn)
        run = await history.run(conn, run_id)
        if run is None:
            return None
        attempts = await history.attempts(conn, run_id)
        steps = await history.steps(conn, run_id)
        pending = await history.pending(conn, run_id)
        builder = _Builder(run, attempts, steps, pending)
        invoked: dict[str, dict[str, Any]] = {}
        for step_id, (after, before) in builder.invoke_windows().items():
            child = await history.invoked_run(conn, f"{run_id}.{step_id}", after=after, before=before)
            if child is not None:
                invoked[step_id] = child
    return builder.build(invoked)


def build(
    run: dict[str, Any],
    attempts: Sequence[dict[str, Any]],
    steps: Sequence[dict[str, Any]],
    pending: Sequence[dict[str, Any]],
    invoked: dict[str, dict[str, Any]] | None = None,
) -> Trace:
    """The trace from the rows of sql/queries/history.sql (`invoked`: step id -> the run it invoked)."""
    return _Builder(run, attempts, steps, pending).build(invoked or {})


@dataclass
class _Group:
    """The calls (attempts) of one queue item, in order."""

    item_id: int
    step_id: str
    attempts: list[dict[str, Any]] = field(default_factory=list)


class _Builder:
    def __init__(
        self,
        run: dict[str, Any],
        attempts: Sequence[dict[str, Any]],
        steps: Sequence[dict[str, Any]],
        pending: Sequence[dict[str, Any]],
    ) -> None:
        self.run = run
        self.run_id: str = run["id"]
        self.now: datetime = run["now"]
        self.steps = {s["step_id"]: s for s in steps}
        self.step_order = [s["step_id"] for s in steps]
        self.items = {p["step_id"]: p for p in pending if p["source"] == "item"}
        self.items_by_id = {p["item_id"]: p for p in pending if p["source"] == "item"}
        self.pauses = {p["step_id"]: p for p in pending if p["source"] == "pause"}
        self.groups: dict[int, _Group] = {}
        for a in attempts:
            if a["step_id"].startswith("$"):  # run-level timers ($start-timeout, $finish-timeout)
                continue
            self.groups.setdefault(a["item_id"], _Group(a["item_id"], a["step_id"])).attempts.append(a)
        self.discovery = [a for a in attempts if a["step_id"] == DISCOVERY_STEP]  # never overlap: in order
        self.discovery_starts = [a["started_at"] for a in self.discovery]
        # discovery calls that ended normally, by end: "the call that reported it"
        reported = sorted((a for a in self.discovery if a["outcome"] == "ok"), key=lambda a: a["ended_at"])
        self.report_ends = [a["ended_at"] for a in reported]
        # every moment something of the run ended: "when the next work became ready"
        self.moments = sorted([a["ended_at"] for a in attempts] + [s["created_at"] for s in steps])
        self.item_steps = {g.step_id for g in self.groups.values() if g.step_id != DISCOVERY_STEP}

    # -- times

    def reported_at(self, at: datetime) -> datetime:
        """The end of the last discovery call that ended by `at` (the call that asked for the work)."""
        i = bisect.bisect_right(self.report_ends, at)
        if i:
            return self.report_ends[i - 1]
        return self.run["started_at"] or self.run["created_at"]

    def ready_at(self, at: datetime) -> datetime:
        """When work that started at `at` became ready: the last moment of the run before it."""
        i = bisect.bisect_left(self.moments, at)
        if i:
            return self.moments[i - 1]
        return self.run["created_at"]

    # -- classification

    def inline_owner(self, step: dict[str, Any]) -> dict[str, Any] | None:
        """The discovery call a step ran in: the last one that started before it was stored."""
        return self.call_started_by(step["created_at"])

    def waiting_step_ids(self) -> list[str]:
        """Sleeps, waits, invokes and signals: stored ones in order, then the pending ones."""
        found = [sid for sid in self.step_order if self.steps[sid]["op"] in WAITING_OPS]
        found += [sid for sid, p in self.pauses.items() if sid not in self.steps and sid not in found]
        found += [sid for sid, it in self.items.items()
                  if it["kind"] == "sleep" and sid not in self.steps and sid not in found]
        return found

    def invoke_windows(self) -> dict[str, tuple[datetime, datetime]]:
        """For each invoke step, when its invoked run was created: while the call that asked for it
        was applied (between that call's start and its end, or the invoke's pause while pending)."""
        windows = {}
        for sid in self.waiting_step_ids():
            step, pause = self.steps.get(sid), self.pauses.get(sid)
            if step is not None and step["op"] == "InvokeFunction":
                end = self.reported_at(step["created_at"])
            elif step is None and pause is not None and pause["kind"] == "invoke":
                end = pause["created_at"]
            else:
                continue
            call = self.call_started_by(end)
            windows[sid] = (call["started_at"] if call is not None else self.run["created_at"], end)
        return windows

    def call_started_by(self, at: datetime) -> dict[str, Any] | None:
        """The last discovery call that started by `at`."""
        i = bisect.bisect_right(self.discovery_starts, at)
        return self.discovery[i - 1] if i else None

    # -- spans

    def build(self, invoked: dict[str, dict[str, Any]]) -> Trace:
        run = self.run
        children: list[Span] = []
        queue = self.queue_span()
        if queue is not None:
            children.append(queue)
        inline: dict[int, list[dict[str, Any]]] = {}
        loose: list[dict[str, Any]] = []
        for sid in self.step_order:
            step = self.steps[sid]
            if step["op"] not in RAN_OPS or sid in self.item_steps or sid in self.items:
                continue
            owner = self.inline_owner(step)
            if owner is None:
                loose.append(step)  # stored without a call of its own (a durable endpoint's steps)
            else:
                inline.setdefault(owner["id"], []).append(step)
        for group in self.groups.values():
            if group.step_id == DISCOVERY_STEP:
                children.extend(self.discovery_spans(group, inline))
            elif self.is_call_group(group):
                children.append(self.planned_step_span(group.step_id, group))
        for sid, item in self.items.items():
            if item["kind"] == "call" and sid != DISCOVERY_STEP and not sid.startswith("$") \
                    and sid not in self.item_steps:
                children.append(self.planned_step_span(sid, None))
        pending_discovery = self.items.get(DISCOVERY_STEP)
        # the run's next call; before the first call, Queued stands for it until it is in flight
        if pending_discovery is not None and pending_discovery["item_id"] not in self.groups and (
                self.groups or pending_discovery["state"] == "leased"):
            children.append(self.pending_discovery_span(pending_discovery))
        for step in loose:
            children.append(self.loose_step_span(step))
        for sid in self.waiting_step_ids():
            children.append(self.waiting_span(sid, invoked.get(sid)))
        children.sort(key=lambda s: (s.started_at or s.queued_at, s.queued_at))
        if queue is not None:  # the wait before the first call comes first whatever the clocks say
            children.remove(queue)
            children.insert(0, queue)
        ended = run["status"] in ("completed", "failed", "cancelled")
        root = Span(
            span_id=self.run_id,
            name=RUN_SPAN,
            kind=SpanKind.RUN,
            status=RUN_STATUSES[run["status"]],
            queued_at=run["created_at"],
            started_at=run["started_at"],
            ended_at=run["ended_at"],
            output_id=output_id(self.run_id) if ended else None,
            children=tuple(children),
        )
        return Trace(self.run_id, str(run["function_id"]), run["function_slug"], str(run["app_id"]), root)

    def queue_span(self) -> Span | None:
        run = self.run
        first = min((a["started_at"] for a in self.attempts_all()), default=None)
        if first is None and run["started_at"] is not None and run["status"] != "cancelled":
            first = run["started_at"]
        if first is not None:
            status, end = SpanStatus.COMPLETED, first
        elif run["status"] == "cancelled":
            status, end = SpanStatus.CANCELLED, run["ended_at"]
        elif run["ended_at"] is not None:
            status, end = SpanStatus.COMPLETED, run["ended_at"]
        else:
            status, end = SpanStatus.QUEUED, None
        return Span(
            span_id=f"{self.run_id}:queued", name=QUEUE_SPAN, kind=SpanKind.QUEUE, status=status,
            queued_at=run["created_at"], started_at=run["created_at"], ended_at=end,
        )

    def attempts_all(self) -> Iterable[dict[str, Any]]:
        for group in self.groups.values():
            yield from group.attempts

    def is_call_group(self, group: _Group) -> bool:
        """A planned step's calls (not the wake-ups of sleeps and timeouts, which call nothing)."""
        step = self.steps.get(group.step_id)
        if step is not None:
            return step["op"] in RAN_OPS
        item = self.items.get(group.step_id)
        if item is not None:
            return item["kind"] == "call"
        return any(a["status_code"] is not None or a["has_error"] for a in group.attempts)

    def attempt_spans(
        self, group: _Group | None, *, queued_at: datetime, ok_output: str | None, ok_failed: bool = False,
        item: dict[str, Any] | None = None, step_id: str | None = None, op: StepOp | None = None,
    ) -> list[Span]:
        """One span per call of an item, and one for its next call while that is pending."""
        spans: list[Span] = []
        ready = queued_at
        for a in group.attempts if group is not None else ():
            match a["outcome"]:
                case "ok":
                    status = SpanStatus.FAILED if ok_failed else SpanStatus.COMPLETED
                    out = ok_output
                case "discarded":
                    status, out = SpanStatus.CANCELLED, None
                case _:
                    status = SpanStatus.FAILED
                    out = output_id(self.run_id, attempt=a["id"]) if a["has_error"] else None
            spans.append(Span(
                span_id=f"attempt:{a['id']}", name=f"Attempt {a['attempt']}", kind=SpanKind.ATTEMPT,
                status=status, queued_at=ready, started_at=a["started_at"], ended_at=a["ended_at"],
                step_id=step_id, step_op=op, attempt=a["attempt"], status_code=a["status_code"],
                output_id=out,
            ))
            ready = a["ended_at"]
        if item is not None and (spans or item["state"] == "leased" or item["attempt"]):
            leased = item["state"] == "leased"
            spans.append(Span(
                span_id=f"item:{item['item_id']}:{item['attempt']}", name=f"Attempt {item['attempt']}",
                kind=SpanKind.ATTEMPT, status=SpanStatus.RUNNING if leased else SpanStatus.QUEUED,
                queued_at=ready if spans else item["created_at"],
                started_at=item["leased_at"] if leased else None,
                ended_at=None, step_id=step_id, step_op=op, attempt=item["attempt"],
            ))
        return spans

    def step_status(self, step: dict[str, Any]) -> SpanStatus:
        return SpanStatus.FAILED if step["shape"] == "error" else SpanStatus.COMPLETED

    def planned_step_span(self, sid: str, group: _Group | None) -> Span:
        step, item = self.steps.get(sid), self.items.get(sid)
        first = group.attempts[0] if group is not None else None
        if first is not None:
            queued_at = self.reported_at(first["started_at"])
        else:
            queued_at = item["created_at"] if item is not None else self.run["created_at"]
        out = output_id(self.run_id, step=sid) if step is not None else None
        children = self.attempt_spans(
            group, queued_at=queued_at, ok_output=out,
            ok_failed=step is not None and step["shape"] == "error",
            item=item if step is None else None, step_id=sid, op=StepOp.RUN,
        )
        if step is not None:  # ended with its call (stored while the call's answer was applied)
            status = self.step_status(step)
            ended = max(step["created_at"], group.attempts[-1]["ended_at"]) if group else step["created_at"]
        elif item is not None:
            status = SpanStatus.RUNNING if item["state"] == "leased" else SpanStatus.QUEUED
            ended = None
        else:
            last = group.attempts[-1] if group is not None else None
            status = SpanStatus.CANCELLED if last is not None and last["outcome"] == "discarded" \
                else SpanStatus.FAILED
            ended = last["ended_at"] if last is not None else None
        started = first["started_at"] if first is not None else (
            item["leased_at"] if item is not None and item["state"] == "leased" else None)
        return Span(
            span_id=f"item:{(group.item_id if group is not None else item['item_id'] if item else sid)}",
            name=(step["name"] if step else None) or (item["step_name"] if item else None) or sid,
            kind=SpanKind.STEP, status=status, queued_at=queued_at, started_at=started, ended_at=ended,
            step_id=sid, step_op=StepOp.RUN, attempt=children[-1].attempt if children else None,
            status_code=group.attempts[-1]["status_code"] if group is not None else None, output_id=out,
            children=_shown(children, status),
        )

    def discovery_spans(self, group: _Group, inline: dict[int, list[dict[str, Any]]]) -> list[Span]:
        """What one discovery item's calls were: the step(s) the SDK ran in them, the function's
        result (Finalization), or only a report of what to do next (Discovery step)."""
        run = self.run
        last = group.attempts[-1]
        item = self.items_by_id.get(group.item_id)
        produced = [s for a in group.attempts for s in inline.get(a["id"], [])]
        ready = self.ready_at(group.attempts[0]["started_at"])
        finalizing = item is None and (
            last["outcome"] == "failed"
            or (last["outcome"] == "ok" and (
                last["status_code"] == 200
                or (run["status"] == "completed" and run["ended_at"] is not None
                    and last["started_at"] <= run["ended_at"] <= last["ended_at"]))))
        spans: list[Span] = []
        if produced:
            previous = group.attempts[0]["started_at"]
            for n, step in enumerate(produced):
                out = output_id(self.run_id, step=step["step_id"])
                children = self.attempt_spans(group, queued_at=ready, ok_output=out,
                                              ok_failed=step["shape"] == "error", step_id=step["step_id"],
                                              op=StepOp.RUN) if n == 0 else []
                started = previous if n else group.attempts[0]["started_at"]
                # one step in the call: it ends with the call; several (JS checkpoints): when stored
                ended = step["created_at"]
                if len(produced) == 1:
                    ended = max(ended, last["ended_at"])
                status = self.step_status(step)
                spans.append(Span(
                    span_id=f"item:{group.item_id}" if n == 0 else f"step:{step['step_id']}",
                    name=step["name"] or step["step_id"], kind=SpanKind.STEP, status=status,
                    queued_at=ready if n == 0 else previous, started_at=started, ended_at=ended,
                    step_id=step["step_id"], step_op=StepOp.RUN,
                    attempt=last["attempt"] if n == 0 else step["attempt"],
                    status_code=last["status_code"] if n == 0 else None, output_id=out,
                    children=_shown(children, status),
                ))
                previous = step["created_at"]
            if finalizing:
                spans.append(self.finalization_span(group, last, previous, children=()))
            return spans
        if finalizing:
            out = output_id(self.run_id) if last["outcome"] in ("ok", "failed") else None
            children = self.attempt_spans(group, queued_at=ready, ok_output=out)
            status = _call_status(last)
            return [self.finalization_span(group, last, group.attempts[0]["started_at"], ready=ready,
                                           children=_shown(children, status))]
        children = self.attempt_spans(group, queued_at=ready, ok_output=None, item=item)
        if item is not None:
            status = SpanStatus.RUNNING if item["state"] == "leased" else SpanStatus.QUEUED
            ended = None
        else:
            status, ended = _call_status(last), last["ended_at"]
        return [Span(
            span_id=f"item:{group.item_id}", name=DISCOVERY_SPAN, kind=SpanKind.DISCOVERY, status=status,
            queued_at=ready, started_at=group.attempts[0]["started_at"], ended_at=ended,
            attempt=children[-1].attempt if children else last["attempt"], status_code=last["status_code"],
            output_id=children[-1].output_id if children and status == SpanStatus.FAILED else None,
            children=_shown(children, status),
        )]

    def finalization_span(
        self, group: _Group, last: dict[str, Any], started: datetime, *, children: tuple[Span, ...],
        ready: datetime | None = None,
    ) -> Span:
        status = _call_status(last)
        return Span(
            span_id=f"item:{group.item_id}:final", name=FINALIZATION_SPAN, kind=SpanKind.FINALIZATION,
            status=status, queued_at=ready or started, started_at=started, ended_at=last["ended_at"],
            attempt=last["attempt"], status_code=last["status_code"],
            output_id=output_id(self.run_id) if status != SpanStatus.CANCELLED else None, children=children,
        )

    def pending_discovery_span(self, item: dict[str, Any]) -> Span:
        leased = item["state"] == "leased"
        return Span(
            span_id=f"item:{item['item_id']}", name=DISCOVERY_SPAN, kind=SpanKind.DISCOVERY,
            status=SpanStatus.RUNNING if leased else SpanStatus.QUEUED, queued_at=item["created_at"],
            started_at=item["leased_at"] if leased else None, ended_at=None, attempt=item["attempt"],
        )

    def loose_step_span(self, step: dict[str, Any]) -> Span:
        started = self.ready_at(step["created_at"])
        return Span(
            span_id=f"step:{step['step_id']}", name=step["name"] or step["step_id"], kind=SpanKind.STEP,
            status=self.step_status(step), queued_at=started, started_at=started, ended_at=step["created_at"],
            step_id=step["step_id"], step_op=StepOp.RUN, attempt=step["attempt"],
            output_id=output_id(self.run_id, step=step["step_id"]),
        )

    def waiting_span(self, sid: str, child: dict[str, Any] | None) -> Span:
        step, pause, item = self.steps.get(sid), self.pauses.get(sid), self.items.get(sid)
        if step is not None:
            op = step["op"]
            started = self.reported_at(step["created_at"])
            ended: datetime | None = step["created_at"]
        else:
            op = PAUSE_OPS[pause["kind"]] if pause is not None else "Sleep"
            source = pause if pause is not None else item
            assert source is not None
            started, ended = source["created_at"], None
        name = (step["name"] if step else None) or (pause["step_name"] if pause else None) \
            or (item["step_name"] if item else None) or sid
        timeout_at = (pause["expires_at"] if pause is not None else None) or (
            item["run_at"] if item is not None and item["kind"] == "timeout" else None)
        out = output_id(self.run_id, step=sid) if step is not None and op != "Sleep" else None
        info: StepInfo | None
        match op:
            case "Sleep":
                kind, step_op = SpanKind.SLEEP, StepOp.SLEEP
                until = item["run_at"] if item is not None and step is None else ended
                info = SleepInfo(until) if until is not None else None
                status = SpanStatus.COMPLETED if step is not None else SpanStatus.WAITING
            case "WaitForEvent":
                kind, step_op = SpanKind.WAIT, StepOp.WAIT_FOR_EVENT
                matched = step is not None and step["shape"] == "value"
                info = WaitInfo(
                    event_name=(pause["event_name"] if pause else None)
                    or (step["event_name"] if step else None),
                    expression=pause["expression"] if pause else None, timeout=timeout_at,
                    found_event_id=step["event_id"] if matched and step else None,
                    timed_out=None if step is None else not matched,
                )
                status = SpanStatus.COMPLETED if step is not None else SpanStatus.WAITING
            case "InvokeFunction":
                kind, step_op = SpanKind.INVOKE, StepOp.INVOKE
                timed_out = None if step is None else step["error_name"] == INVOKE_TIMEOUT
                info = InvokeInfo(
                    function_id=child["function_slug"] if child else None,
                    triggering_event_id=child["event_id"] if child else None,
                    run_id=child["id"] if child else None, timeout=timeout_at, timed_out=timed_out,
                )
                status = self.step_status(step) if step is not None else SpanStatus.RUNNING
            case _:
                kind, step_op = SpanKind.SIGNAL, StepOp.WAIT_FOR_SIGNAL
                info = SignalInfo(signal=pause["signal"] if pause else None, timeout=timeout_at,
                                  timed_out=None if step is None else step["shape"] == "null")
                status = SpanStatus.COMPLETED if step is not None else SpanStatus.WAITING
        return Span(
            span_id=f"step:{sid}", name=name, kind=kind, status=status, queued_at=started, started_at=started,
            ended_at=ended, step_id=sid, step_op=step_op, attempt=step["attempt"] if step else None,
            output_id=out, info=info,
        )


def _call_status(attempt: dict[str, Any]) -> SpanStatus:
    match attempt["outcome"]:
        case "ok":
            return SpanStatus.COMPLETED
        case "discarded":
            return SpanStatus.CANCELLED
        case _:
            return SpanStatus.FAILED


def _shown(children: list[Span], status: SpanStatus) -> tuple[Span, ...]:
    """Attempts are shown under a span unless it resolved on its only call (as Inngest shows them)."""
    if len(children) == 1 and children[0].status == SpanStatus.COMPLETED and status == SpanStatus.COMPLETED:
        return ()
    return tuple(children)
