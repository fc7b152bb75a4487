"""Resolvers of the GraphQL schema: thin translations of pgqueue's store functions, its trace
(pgqueue/runs/trace.py) and its operator actions into Inngest's GraphQL objects.

Objects are dicts keyed by GraphQL field name; a field that costs a read is a function the executor
calls only when the query asks for it. One request uses one connection, behind a lock so the
executor's concurrent resolvers take turns, and caches what it read (runs, events, functions, apps,
traces) for the rest of the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from graphql import GraphQLError, GraphQLResolveInfo

from api.gql import limits
from pgqueue import ids
from pgqueue.admin import actions
from pgqueue.db.pool import Conn
from pgqueue.errors import InvalidInput, NotFound
from pgqueue.events.objects import event_object
from pgqueue.runs import trace
from pgqueue.store import apps, events, inspect, runs

WORKSPACE = {"id": "local"}
SCHEDULED_EVENT = "inngest/scheduled.timer"
EVENTS_PAGE = 50
TOTAL_COUNT_CAP = 10_000
RUN_STATUSES = {"queued": "QUEUED", "running": "RUNNING", "completed": "COMPLETED", "failed": "FAILED",
                "cancelled": "CANCELLED"}
TIME_FIELDS = {"QUEUED_AT": "queued", "STARTED_AT": "started", "ENDED_AT": "ended"}


@dataclass
class Context:
    """What one GraphQL request shares: its connection, what it read, and how to wake the workers."""

    conn: Conn
    wake: Callable[[], None] = lambda: None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    runs: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    events: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    functions: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    apps: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    traces: dict[str, trace.Trace | None] = field(default_factory=dict)
    event_runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def db(self) -> AsyncIterator[Conn]:
        async with self.lock:
            yield self.conn

    async def run(self, run_id: str) -> dict[str, Any] | None:
        if run_id not in self.runs:
            async with self.db() as conn:
                self.runs[run_id] = await runs.get(conn, run_id)
        return self.runs[run_id]

    async def event(self, event_id: str) -> dict[str, Any] | None:
        if event_id not in self.events:
            async with self.db() as conn:
                self.events[event_id] = await events.get(conn, event_id)
        return self.events[event_id]

    async def events_of(self, event_ids: list[str]) -> list[dict[str, Any]]:
        missing = [i for i in event_ids if i not in self.events]
        if missing:
            async with self.db() as conn:
                rows = await events.get_many(conn, missing)
            found = {r["id"]: r for r in rows}
            for i in missing:
                self.events[i] = found.get(i)
        return [e for e in (self.events[i] for i in event_ids) if e is not None]

    async def function(self, ref: str) -> dict[str, Any] | None:
        if ref not in self.functions:
            async with self.db() as conn:
                self.functions[ref] = await inspect.function(conn, ref)
        return self.functions[ref]

    async def app(self, app_id: str) -> dict[str, Any] | None:
        if app_id not in self.apps:
            async with self.db() as conn:
                self.apps[app_id] = await apps.get_app(conn, app_id)
        return self.apps[app_id]

    async def trace(self, run_id: str) -> trace.Trace | None:
        if run_id not in self.traces:
            async with self.db() as conn:
                self.traces[run_id] = await trace.load(conn, run_id)
        return self.traces[run_id]

    async def runs_of_event(self, event_id: str) -> list[dict[str, Any]]:
        if event_id not in self.event_runs:
            async with self.db() as conn:
                self.event_runs[event_id] = await runs.list_for_event(conn, event_id)
        return self.event_runs[event_id]


def _ctx(info: GraphQLResolveInfo) -> Context:
    return info.context  # type: ignore[no-any-return]


def _lazy(make: Callable[[Context], Any]) -> Callable[..., Any]:
    """A field read only when a query selects it."""
    return lambda info, **_: make(_ctx(info))


def _json(value: Any) -> str:
    return trace.to_json(value)


def _run_output(row: dict[str, Any]) -> str | None:
    """The function's result as JSON; a failed (or cancelled) run's error."""
    if row["status"] == "completed":
        return _json(row["output"])
    if row["error"] is not None:
        return _json(row["error"])
    return None


# -- objects ---------------------------------------------------------------------------------------


def app_object(row: dict[str, Any]) -> dict[str, Any]:
    app_id = str(row["id"])

    async def functions(ctx: Context) -> list[dict[str, Any]]:
        async with ctx.db() as conn:
            rows = await apps.list_functions(conn, row["id"])
        return [function_object({**r, "app_id": row["id"]}) for r in rows]

    async def function_count(ctx: Context) -> int:
        if row.get("function_count") is not None:
            return int(row["function_count"])
        return len(await functions(ctx))

    return {
        "id": app_id,
        "externalID": row["name"],
        "name": row["name"],
        "sdkLanguage": row.get("sdk_language") or "",
        "sdkVersion": row.get("sdk_version") or "",
        "framework": row.get("framework"),
        "url": row.get("url"),
        "checksum": row.get("checksum"),
        "error": row.get("sync_error"),
        "functions": _lazy(functions),
        "connectionType": "SERVERLESS",
        "method": "SERVE",
        "appVersion": row.get("app_version"),
        "connected": row.get("sync_error") is None,
        "functionCount": _lazy(function_count),
        "autodiscovered": False,
    }


def _concurrency(config: dict[str, Any]) -> int:
    limits_ = config.get("concurrency")
    if isinstance(limits_, int):
        return limits_
    if isinstance(limits_, list) and limits_ and isinstance(limits_[0], dict):
        return int(limits_[0].get("limit") or 0)
    if isinstance(limits_, dict):
        return int(limits_.get("limit") or 0)
    return 0


def function_object(row: dict[str, Any]) -> dict[str, Any]:
    config = row.get("config") or {}
    triggers = []
    for t in config.get("triggers") or []:
        if t.get("cron"):
            triggers.append({"type": "CRON", "value": t["cron"]})
        elif t.get("event"):
            triggers.append({"type": "EVENT", "value": t["event"]})

    async def app(ctx: Context) -> dict[str, Any]:
        found = await ctx.app(str(row["app_id"]))
        if found is None:
            raise NotFound(f"app {row['app_id']} not found")
        return app_object(found)

    return {
        "id": str(row["id"]),
        "name": row["name"],
        "slug": row["slug"],
        "config": _json(config),
        "concurrency": _concurrency(config),
        "triggers": triggers,
        "url": row.get("url") or "",
        "appID": str(row["app_id"]),
        "app": _lazy(app),
    }


async def _function_of(ctx: Context, function_id: Any) -> dict[str, Any] | None:
    found = await ctx.function(str(function_id))
    return function_object(found) if found is not None else None


def event_object_gql(row: dict[str, Any]) -> dict[str, Any]:
    event_id = row["id"]

    async def function_runs(ctx: Context) -> list[dict[str, Any]]:
        rows = await ctx.runs_of_event(event_id)
        return [function_run_object(r) for r in sorted(rows, key=lambda r: r["id"], reverse=True)]

    async def status(ctx: Context) -> str:
        rows = await ctx.runs_of_event(event_id)
        if not rows:
            return "NO_FUNCTIONS"
        failed = sum(r["status"] == "failed" for r in rows)
        if failed:
            return "FAILED" if failed == len(rows) else "PARTIALLY_FAILED"
        if any(r["status"] in ("queued", "running") for r in rows):
            return "RUNNING"
        return "COMPLETED"

    async def pending(ctx: Context) -> int:
        return sum(r["status"] in ("queued", "running") for r in await ctx.runs_of_event(event_id))

    async def total(ctx: Context) -> int:
        return len(await ctx.runs_of_event(event_id))

    return {
        "id": event_id,
        "externalID": row["external_id"],
        "workspace": WORKSPACE,
        "name": row["name"],
        "createdAt": row["received_at"],
        "payload": _json(row["data"]),
        "schema": None,
        "status": _lazy(status),
        "pendingRuns": _lazy(pending),
        "totalRuns": _lazy(total),
        "raw": _json(event_object(row)),
        "functionRuns": _lazy(function_runs),
    }


def _cron(event: dict[str, Any] | None) -> str | None:
    if event is None or event["name"] != SCHEDULED_EVENT or not isinstance(event["data"], dict):
        return None
    cron = event["data"].get("cron")
    return cron if isinstance(cron, str) else None


def function_run_object(row: dict[str, Any]) -> dict[str, Any]:
    """A run as Inngest's older FunctionRun type (event.functionRuns, functionRun, cancelRun)."""

    async def event(ctx: Context) -> dict[str, Any] | None:
        found = await ctx.event(row["event_id"])
        return event_object_gql(found) if found is not None else None

    async def events_(ctx: Context) -> list[dict[str, Any]]:
        return [event_object_gql(e) for e in await ctx.events_of(list(row["event_ids"]))]

    async def cron(ctx: Context) -> str | None:
        return _cron(await ctx.event(row["event_id"]))

    return {
        "id": row["id"],
        "functionID": str(row["function_id"]),
        "function": _lazy(lambda ctx: _function_of(ctx, row["function_id"])),
        "workspace": WORKSPACE,
        "event": _lazy(event),
        "events": _lazy(events_),
        "batchID": None,
        "batchCreatedAt": None,
        "status": RUN_STATUSES[row["status"]],
        "waitingFor": None,
        "pendingSteps": None,
        "startedAt": row["started_at"] or row["created_at"],
        "finishedAt": row["ended_at"],
        "output": _run_output(row),
        "eventID": row["event_id"],
        "cron": _lazy(cron),
    }


def run_object(row: dict[str, Any]) -> dict[str, Any]:
    """A run as FunctionRunV2 (run, runs)."""
    run_id = row["id"]

    async def app(ctx: Context) -> dict[str, Any]:
        found = await ctx.app(str(row["app_id"]))
        if found is None:
            raise NotFound(f"app {row['app_id']} not found")
        return app_object(found)

    async def function(ctx: Context) -> dict[str, Any]:
        found = await _function_of(ctx, row["function_id"])
        if found is None:
            raise NotFound(f"function {row['function_id']} not found")
        return found

    async def event_name(ctx: Context) -> str | None:
        event = await ctx.event(row["event_id"])
        return event["name"] if event is not None and _cron(event) is None else None

    async def cron(ctx: Context) -> str | None:
        return _cron(await ctx.event(row["event_id"]))

    async def run_trace(ctx: Context) -> dict[str, Any] | None:
        found = await ctx.trace(run_id)
        return span_object(found, found.root, None) if found is not None else None

    ended = row["status"] in ("completed", "failed", "cancelled")
    source = row["correlation_id"].split(".", 1)[0] if row.get("correlation_id") else None
    return {
        "id": run_id,
        "appID": row["app_id"],
        "app": _lazy(app),
        "functionID": row["function_id"],
        "function": _lazy(function),
        "traceID": run_id,
        "queuedAt": row["created_at"],
        "startedAt": row["started_at"],
        "endedAt": row["ended_at"] if ended else None,
        "status": RUN_STATUSES[row["status"]],
        "sourceID": source,
        "triggerIDs": list(row["event_ids"]),
        "eventName": _lazy(event_name),
        "isBatch": bool(row.get("is_batch")),
        "batchCreatedAt": row["created_at"] if row.get("is_batch") else None,
        "cronSchedule": _lazy(cron),
        "output": _run_output(row),
        "trace": _lazy(run_trace),
        "hasAI": False,
    }


def _step_info(info: trace.StepInfo | None) -> dict[str, Any] | None:
    match info:
        case trace.SleepInfo():
            return {"__typename": "SleepStepInfo", "sleepUntil": info.sleep_until}
        case trace.WaitInfo():
            return {"__typename": "WaitForEventStepInfo", "eventName": info.event_name,
                    "expression": info.expression, "timeout": info.timeout,
                    "foundEventID": _ulid_or_none(info.found_event_id), "timedOut": info.timed_out}
        case trace.InvokeInfo():
            return {"__typename": "InvokeStepInfo", "triggeringEventID": info.triggering_event_id,
                    "functionID": info.function_id, "timeout": info.timeout, "returnEventID": None,
                    "runID": info.run_id, "timedOut": info.timed_out}
        case trace.SignalInfo():
            return {"__typename": "WaitForSignalStepInfo", "signal": info.signal, "timeout": info.timeout,
                    "timedOut": info.timed_out}
    return None


def _ulid_or_none(value: str | None) -> str | None:
    """An event id that is a ULID (a matched event's `id` is its sender's id when it set one)."""
    if value is None:
        return None
    try:
        ids.ulid_time_ms(value)
    except ValueError:
        return None
    return value


def span_object(t: trace.Trace, span: trace.Span, parent: dict[str, Any] | None) -> dict[str, Any]:
    step_type = None
    if span.kind == trace.SpanKind.FINALIZATION:
        step_type = "FINALIZATION"
    elif span.step_op is not None:
        step_type = span.step_op.value

    async def run(ctx: Context) -> dict[str, Any]:
        found = await ctx.run(t.run_id)
        if found is None:
            raise NotFound(f"run {t.run_id} not found")
        return function_run_object(found)

    obj: dict[str, Any] = {
        "appID": t.app_id,
        "functionID": t.function_id,
        "runID": t.run_id,
        "run": _lazy(run),
        "spanID": span.span_id,
        "traceID": t.run_id,
        "name": span.name,
        "status": span.status.value,
        "attempts": span.attempt,
        "duration": span.duration_ms,
        "outputID": span.output_id,
        "queuedAt": span.queued_at,
        "startedAt": span.started_at,
        "endedAt": span.ended_at,
        "stepOp": span.step_op.value if span.step_op else None,
        "stepID": span.step_id,
        "stepInfo": _step_info(span.info),
        "stepType": step_type,
        "isRoot": parent is None,
        "parentSpanID": parent["spanID"] if parent is not None else None,
        "parentSpan": parent,
        "isUserland": False,
    }
    obj["childrenSpans"] = [span_object(t, child, obj) for child in span.children]
    return obj


def output_object(found: trace.SpanOutput) -> dict[str, Any]:
    error = None
    if found.error is not None:
        err = found.error
        message = err.get("message")
        stack = err.get("stack")
        error = {
            "message": message if isinstance(message, str) else "" if message is None else _json(message),
            "name": err.get("name") if isinstance(err.get("name"), str) else None,
            "stack": stack if isinstance(stack, str) or stack is None else _json(stack),
        }
        if not error["message"] and error["stack"] is None:
            error["stack"] = _json(err)  # as Inngest does with an error that has no message
    return {"input": found.input, "data": found.data, "error": error}


# -- queries ---------------------------------------------------------------------------------------


def _run_id(value: str) -> str:
    try:
        ids.ulid_time_ms(value)
    except ValueError as exc:
        raise InvalidInput(f"error parsing runID: {exc}") from None
    return value


async def _run_row(ctx: Context, run_id: str) -> dict[str, Any]:
    row = await ctx.run(_run_id(run_id))
    if row is None:
        raise NotFound(f"run {run_id} not found")
    return row


async def resolve_apps(_: Any, info: GraphQLResolveInfo, filter: dict[str, Any] | None = None) -> list[Any]:
    if filter and "CONNECT" in (filter.get("method"), filter.get("connectionType")):
        return []
    async with _ctx(info).db() as conn:
        rows = await apps.list_apps(conn)
    return [app_object(r) for r in rows]


async def resolve_app(_: Any, info: GraphQLResolveInfo, id: uuid.UUID) -> dict[str, Any] | None:
    found = await _ctx(info).app(str(id))
    return app_object(found) if found is not None else None


async def resolve_event(_: Any, info: GraphQLResolveInfo, query: dict[str, Any]) -> dict[str, Any] | None:
    found = await _ctx(info).event(str(query["eventId"]))
    return event_object_gql(found) if found is not None else None


async def resolve_events(_: Any, info: GraphQLResolveInfo, query: dict[str, Any]) -> list[dict[str, Any]]:
    async with _ctx(info).db() as conn:
        rows = await events.list_events(conn, before_id=query.get("lastEventId"), limit=EVENTS_PAGE)
    return [event_object_gql(r) for r in rows]


async def resolve_function_by_slug(_: Any, info: GraphQLResolveInfo, query: dict[str, Any]) -> Any:
    return await _function_of(_ctx(info), query["functionSlug"])


async def resolve_functions(_: Any, info: GraphQLResolveInfo) -> list[dict[str, Any]]:
    async with _ctx(info).db() as conn:
        rows = await inspect.functions(conn, include_archived=False)
    return [function_object(r) for r in rows]


async def resolve_function_run(_: Any, info: GraphQLResolveInfo, query: dict[str, Any]) -> Any:
    run_id = str(query["functionRunId"])
    found = await _ctx(info).run(_run_id(run_id))
    return function_run_object(found) if found is not None else None


async def resolve_run(_: Any, info: GraphQLResolveInfo, runID: str) -> dict[str, Any]:
    return run_object(await _run_row(_ctx(info), runID))


async def resolve_run_trace(_: Any, info: GraphQLResolveInfo, runID: str) -> dict[str, Any]:
    ctx = _ctx(info)
    await _run_row(ctx, runID)
    found = await ctx.trace(runID)
    if found is None:
        raise NotFound(f"run {runID} not found")
    return span_object(found, found.root, None)


async def resolve_run_trigger(_: Any, info: GraphQLResolveInfo, runID: str) -> dict[str, Any]:
    ctx = _ctx(info)
    row = await _run_row(ctx, runID)
    rows = await ctx.events_of(list(row["event_ids"]))
    first = rows[0] if rows else None
    cron = _cron(first)
    names = {r["name"] for r in rows}
    return {
        "eventName": next(iter(names)) if len(names) == 1 and cron is None else None,
        "IDs": [r["id"] for r in rows],
        "payloads": [_json(event_object(r)) for r in rows],
        "timestamp": min((r["received_at"] for r in rows), default=row["created_at"]),
        "isBatch": bool(await _is_batch(ctx, row)),
        "batchID": None,
        "cron": cron,
    }


async def _is_batch(ctx: Context, row: dict[str, Any]) -> bool:
    fn = await ctx.function(str(row["function_id"]))
    return fn is not None and "batchEvents" in (fn.get("config") or {})


async def resolve_output(_: Any, info: GraphQLResolveInfo, outputID: str) -> dict[str, Any]:
    async with _ctx(info).db() as conn:
        found = await trace.output(conn, outputID)
    if found is None:
        raise NotFound(f"output {outputID} not found")
    return output_object(found)


async def resolve_runs(
    _: Any, info: GraphQLResolveInfo, first: int, orderBy: list[dict[str, Any]], filter: dict[str, Any],
    after: str | None = None,
) -> dict[str, Any]:
    ctx = _ctx(info)
    if filter.get("query"):
        raise InvalidInput("filter.query (a CEL filter over runs) is not supported by pgqueue;"
                           " filter by status, functionIDs, appIDs and time instead")
    if first > limits.MAX_RUNS_PAGE:
        raise InvalidInput(f"first must be at most {limits.MAX_RUNS_PAGE}")
    limit = first if first > 0 else 40
    if after is not None:
        _run_id(after)
    oldest_first = bool(orderBy) and orderBy[0].get("direction") == "ASC"
    statuses = [s.lower() for s in filter.get("status") or []] or None
    query = {
        "time_field": TIME_FIELDS[filter.get("timeField") or "QUEUED_AT"],
        "after_time": filter["from"],
        "before_time": filter.get("until") or datetime.now(UTC),
        "statuses": statuses,
        "function_ids": list(filter["functionIDs"]) if filter.get("functionIDs") else None,
        "app_ids": list(filter["appIDs"]) if filter.get("appIDs") else None,
    }
    async with ctx.db() as conn:
        rows = await runs.page(conn, **query, cursor=after, oldest_first=oldest_first, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    for r in rows:
        ctx.runs.setdefault(r["id"], r)

    async def total(c: Context) -> int:
        async with c.db() as conn:
            return await runs.page_count(conn, **query, cap=TOTAL_COUNT_CAP)

    return {
        "edges": [{"node": run_object(r), "cursor": r["id"]} for r in rows],
        "pageInfo": {"hasNextPage": more, "hasPreviousPage": after is not None,
                     "startCursor": rows[0]["id"] if rows else None,
                     "endCursor": rows[-1]["id"] if rows else None},
        "totalCount": _lazy(total),
    }


# -- mutations -------------------------------------------------------------------------------------


async def resolve_cancel_run(_: Any, info: GraphQLResolveInfo, runID: str) -> dict[str, Any]:
    async with _ctx(info).db() as conn:
        row = await actions.cancel_run(conn, runID, reason="cancelled through the GraphQL API")
    return function_run_object(row)


async def resolve_rerun(
    _: Any, info: GraphQLResolveInfo, runID: str, fromStep: dict[str, Any] | None = None, **_ignored: Any
) -> str:
    if fromStep is not None and fromStep.get("input") is not None:
        raise InvalidInput("rerun fromStep.input is not supported by pgqueue: the step runs with its"
                           " own input")
    ctx = _ctx(info)
    async with ctx.db() as conn:
        if fromStep is not None:
            row, _ = await actions.rerun(conn, runID, str(fromStep["stepID"]))
        else:
            row = await actions.replay_run(conn, runID)
    ctx.wake()
    return str(row["id"])


async def resolve_invoke(
    _: Any, info: GraphQLResolveInfo, functionSlug: str, data: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None, **_ignored: Any,
) -> bool:
    ctx = _ctx(info)
    payload: dict[str, Any] = {"data": data or {}}
    if user is not None:
        payload["user"] = user
    async with ctx.db() as conn:
        _, run_id, reason = await actions.invoke(conn, functionSlug, payload)
    ctx.wake()
    if run_id is None and reason is not None:
        raise GraphQLError(f"the function did not start: {reason}")
    return True


RESOLVERS: dict[str, dict[str, Callable[..., Any]]] = {
    "Query": {
        "apps": resolve_apps,
        "app": resolve_app,
        "event": resolve_event,
        "events": resolve_events,
        "functionBySlug": resolve_function_by_slug,
        "functions": resolve_functions,
        "functionRun": resolve_function_run,
        "runs": resolve_runs,
        "run": resolve_run,
        "runTraceSpanOutputByID": resolve_output,
        "runTrigger": resolve_run_trigger,
        "runTrace": resolve_run_trace,
    },
    "Mutation": {
        "cancelRun": resolve_cancel_run,
        "rerun": resolve_rerun,
        "invokeFunction": resolve_invoke,
    },
}
