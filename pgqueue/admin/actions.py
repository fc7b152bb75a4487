"""Operator actions as plain database operations that work across restarts: cancel one run or
many, replay runs, pause and resume functions, invoke a function directly."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgqueue import expressions, ids, storable
from pgqueue.db.pool import Conn
from pgqueue.errors import Conflict, ExpressionError, InvalidInput, NotFound
from pgqueue.events import keys
from pgqueue.events import meta as event_meta
from pgqueue.events.objects import event_object
from pgqueue.models import AppSpec
from pgqueue.runner import starting
from pgqueue.runs import transitions
from pgqueue.store import apps, event_keys, events, run_metadata, runs
from pgqueue.store import operations as store

BULK_BATCH = 200


async def cancel_run(conn: Conn, run_id: str, *, reason: str) -> dict[str, Any]:
    async with conn.transaction():
        locked = await runs.lock(conn, run_id)
        if locked is None:
            raise NotFound(f"run {run_id} not found")
        if locked["status"] not in ("queued", "running"):
            raise Conflict(f"run {run_id} already ended with status {locked['status']}")
        await transitions.cancel(conn, run_id, reason=reason)
        row = await runs.get(conn, run_id)
    assert row is not None
    return row


async def sync_app(conn: Conn, spec: AppSpec) -> apps.SyncResult:
    """Store a sync. Functions missing from it are archived: they start nothing new, and their
    live runs are cancelled (their code is gone from the app, so a call could only fail). The
    cancellations emit inngest/function.cancelled and .finished, so pending invokes of them end
    with an error and their waits and cancel listeners are removed with the runs.
    Runs of functions that stay keep running with the new configuration from their next call
    (URL, flow control of new items); their retry budget is the one they started with."""
    async with conn.transaction():
        result = await apps.sync(conn, spec)
        for function_id in result.archived_ids:
            while batch := await store.live_runs_of_function(conn, function_id, BULK_BATCH):
                for run_id in batch:
                    await runs.lock(conn, run_id)
                    await transitions.cancel(conn, run_id, reason="the function was removed from its app at sync")
    return result


async def function(conn: Conn, ref: str) -> dict[str, Any]:
    fn = await store.resolve_function(conn, ref)
    if fn is None:
        raise NotFound(f"function {ref} not found")
    return fn


async def function_of_app(conn: Conn, app: dict[str, Any], ref: str) -> dict[str, Any]:
    """A function of `app` named the way Inngest's REST API names it: the id the SDK declares
    (`long-sleep`); also pgqueue's slug (`<app>-long-sleep`, the composite id the SDK syncs) or the
    function's UUID."""
    fn = await store.resolve_function(conn, ref)
    if fn is None or fn["app_id"] != app["id"]:
        # The SDKs sync `<app id>-<function id>` as the function's id (pgqueue's slug).
        in_app = await store.resolve_function(conn, f"{app['name']}-{ref}")
        if in_app is not None and in_app["app_id"] == app["id"]:
            return in_app
    if fn is None:
        raise NotFound(
            f"function {ref!r} not found in app {app['name']!r}: give the function's id as the SDK"
            f" declares it (e.g. 'long-sleep'), its slug ('{app['name']}-long-sleep') or its UUID"
        )
    if fn["app_id"] != app["id"]:
        raise InvalidInput(f"function {ref} does not belong to app {app['name']}")
    return fn


async def set_paused(conn: Conn, ref: str, paused: bool) -> dict[str, Any]:
    """Paused functions store their events but start nothing (cron ticks are skipped too), and
    their queued work is held, not claimed, until they are resumed; calls in flight finish."""
    fn = await function(conn, ref)
    row = await store.set_paused(conn, fn["id"], paused)
    assert row is not None
    return row


def _compile_if(source: str | None) -> expressions.Program | None:
    if not source:
        return None
    try:
        return expressions.compile(source)
    except ExpressionError as exc:
        raise InvalidInput(f"invalid `if` expression {source!r}: {exc.message}") from None


async def _cancellation_target(
    conn: Conn, app_ref: str, function_ref: str, started_before: datetime, started_after: datetime | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    app = await apps.get_app(conn, app_ref)
    if app is None:
        raise NotFound(
            f"app {app_ref!r} not found: give the app's id as its SDK client declares it"
            " (Inngest(app_id=...) in Python, new Inngest({ id }) in JS) or the app's UUID"
        )
    fn = await function_of_app(conn, app, function_ref)
    if started_after is not None and started_after >= started_before:
        raise InvalidInput("started_after must be earlier than started_before")
    return app, fn


async def _matching_live_runs(
    conn: Conn, fn: dict[str, Any], program: expressions.Program | None, started_after: datetime | None,
    started_before: datetime, after_id: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """One batch of a function's live runs in the range whose event matches `program`, and where
    the next batch starts (None: no more)."""
    batch = await store.live_runs_in_range(conn, fn["id"], started_after, started_before,
                                           after_id=after_id, limit=BULK_BATCH)
    if not batch:
        return [], None
    if program is None:
        return batch, batch[-1]["id"]
    event_rows = {r["id"]: r for r in await events.get_many(conn, [b["event_id"] for b in batch])}
    matched = []
    for run in batch:
        row = event_rows.get(run["event_id"])
        try:
            if row is not None and expressions.truthy(program.evaluate({"event": event_object(row)})):
                matched.append(run)
        except ExpressionError:
            continue
    return matched, batch[-1]["id"]


async def bulk_cancel_preview(
    conn: Conn, *, app_ref: str, function_ref: str, started_before: datetime,
    started_after: datetime | None = None, if_expr: str | None = None,
) -> int:
    """How many runs bulk_cancel would cancel now (nothing is changed)."""
    program = _compile_if(if_expr)
    _, fn = await _cancellation_target(conn, app_ref, function_ref, started_before, started_after)
    after_id: str | None = None
    total = 0
    while True:
        matched, after_id = await _matching_live_runs(conn, fn, program, started_after, started_before, after_id)
        total += len(matched)
        if after_id is None:
            return total


async def bulk_cancel(
    conn: Conn,
    *,
    app_ref: str,
    function_ref: str,
    started_before: datetime,
    started_after: datetime | None = None,
    if_expr: str | None = None,
) -> dict[str, Any]:
    """Cancel the live runs of a function created in a time range whose event matches `if`."""
    program = _compile_if(if_expr)
    app, fn = await _cancellation_target(conn, app_ref, function_ref, started_before, started_after)
    async with conn.transaction():
        record = await store.create_cancellation(
            conn, id=ids.new_ulid(), app_id=app["id"], function_id=fn["id"], started_after=started_after,
            started_before=started_before, expression=if_expr,
        )
    after_id: str | None = None
    total = 0
    while True:
        async with conn.transaction():
            matched, after_id = await _matching_live_runs(conn, fn, program, started_after, started_before,
                                                          after_id)
            n = 0
            for run in matched:
                locked = await runs.lock(conn, run["id"])
                if locked is None or locked["status"] not in ("queued", "running"):
                    continue
                if await transitions.cancel(conn, run["id"], reason=f"cancelled by bulk cancellation {record['id']}"):
                    n += 1
            total += n
            if n:
                await store.count_cancelled(conn, record["id"], n)
        if after_id is None:
            break
    return {**record, "cancelled_count": total}


async def _replay(conn: Conn, fn: dict[str, Any], original: dict[str, Any]) -> tuple[str | None, str | None]:
    """A new run of `original`'s function from its event(s), through the one start path."""
    rows = {r["id"]: r for r in await events.get_many(conn, original["event_ids"])}
    first = rows.get(original["event_id"])
    if first is None:
        return None, "its event has been deleted by retention"
    origin = starting.Origin(replay_of=original["id"], event_ids=list(original["event_ids"]))
    return await starting.start_one(conn, _startable(fn), original["event_id"], event_object(first),
                                    origin=origin)


def _startable(fn: dict[str, Any]) -> dict[str, Any]:
    return {**fn, "function_id": fn["id"]}


async def _ended_run(conn: Conn, run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A run that may be replayed or rerun (it ended, its function is still served), and its function."""
    original = await runs.get(conn, run_id)
    if original is None:
        raise NotFound(f"run {run_id} not found")
    if original["status"] in ("queued", "running"):
        raise Conflict(f"run {run_id} is still {original['status']}; cancel it first or wait for it"
                       " to end")
    fn = await function(conn, str(original["function_id"]))
    if fn["archived_at"] is not None:
        raise Conflict(f"function {fn['slug']} is archived (its app no longer serves it)")
    return original, fn


async def replay_run(conn: Conn, run_id: str) -> dict[str, Any]:
    """A new run of the same function from the original event(s). The function's concurrency,
    throttle, priority, singleton, cancelOn and timeouts apply as to any run; its rate limit and
    idempotency key do not (see pgqueue/runner/starting.py)."""
    async with conn.transaction():
        original, fn = await _ended_run(conn, run_id)
        new_id, reason = await _replay(conn, fn, original)
        if new_id is None:
            raise Conflict(f"run {run_id} was not replayed: {reason}")
        row = await runs.get(conn, new_id)
    assert row is not None
    return row


RERUN_KIND = "inngest.rerun"


async def rerun(
    conn: Conn, run_id: str, from_step: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rerun a run from one of its steps: a new run of the same function from the original
    event(s), started as a replay is (its flow control applies), that keeps the outputs the original
    stored before `from_step` (its step id or its name) as its own memoised steps. The SDK skips
    those and runs the chosen step and everything after it again. No `from_step`: from the start, a
    replay. The new run's `replay_of` is the original, and its metadata (kind inngest.rerun) says
    from which step and how many outputs it kept. Returns the new run and that record."""
    async with conn.transaction():
        original, fn = await _ended_run(conn, run_id)
        step: dict[str, Any] | None = None
        if from_step is not None:
            if not from_step or len(from_step) > 1000:
                raise InvalidInput("`from_step` must be a step's id or name (a non-empty string)")
            found = await store.rerun_step(conn, run_id, from_step)
            if not found:
                raise InvalidInput(f"run {run_id} stored no step {from_step!r}: give the id or the name of"
                                   " one of its steps (GET /v1/runs/{id}/jobs lists them)")
            if len(found) > 1 and found[0]["step_id"] != from_step:
                raise InvalidInput(f"run {run_id} has several steps named {from_step!r}: give the step's id"
                                   f" ({found[0]['step_id']}, {found[1]['step_id']}, ...)")
            step = found[0]
        new_id, reason = await _replay(conn, fn, original)
        if new_id is None:
            raise Conflict(f"run {run_id} was not rerun: {reason}")
        copied = await store.copy_steps_before(conn, new_id, run_id, step["seq"] if step else 0)
        record = {"original_run_id": run_id, "from_step_id": step["step_id"] if step else None,
                  "from_step": (step["name"] or step["step_id"]) if step else None, "kept_steps": copied}
        await runs.lock(conn, new_id)
        entry = {"scope": "run", "step_id": "", "attempt": -1, "span_id": "", "kind": RERUN_KIND, "op": "set",
                 "values": record}
        await run_metadata.put(conn, new_id, [entry], max_run_bytes=1 << 20)
        row = await runs.get(conn, new_id)
    assert row is not None
    return row, record


async def replay_range_preview(
    conn: Conn, function_ref: str, *, after: datetime, before: datetime, statuses: list[str], limit: int = 1000
) -> int:
    """How many ended runs replay_range would replay (at most `limit`; nothing is started)."""
    fn = await function(conn, function_ref)
    wanted = _replay_statuses(statuses)
    return len(await store.ended_runs_in_range(conn, fn["id"], after, before, wanted, limit))


def _replay_statuses(statuses: list[str]) -> list[str]:
    wanted = [s.lower() for s in statuses] or ["failed", "cancelled"]
    if any(s not in ("completed", "failed", "cancelled") for s in wanted):
        raise InvalidInput("statuses may only be Completed, Failed or Cancelled")
    return wanted


async def replay_range(
    conn: Conn, function_ref: str, *, after: datetime, before: datetime, statuses: list[str], limit: int = 1000
) -> list[str]:
    """Replay the ended runs of a function in a time range; runs the start path refuses (a singleton
    already running, a paused function) are left out."""
    fn = await function(conn, function_ref)
    if fn["archived_at"] is not None:
        raise Conflict(f"function {fn['slug']} is archived (its app no longer serves it)")
    wanted = _replay_statuses(statuses)
    async with conn.transaction():
        originals = await store.ended_runs_in_range(conn, fn["id"], after, before, wanted, limit)
        created = []
        for original in originals:
            new_id, _ = await _replay(conn, fn, original)
            if new_id is not None:
                created.append(new_id)
    return created


async def invoke(conn: Conn, ref: str, payload: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """POST /invoke/{slug}: an inngest/function.invoked event that starts the function through the
    one start path, so every flow-control setting of the function applies. Returns the event id, the
    run that holds it (None if none was started) and why none was started."""
    fn = await function(conn, ref)
    if fn["archived_at"] is not None:
        raise Conflict(f"function {fn['slug']} is archived")
    data = payload.get("data", {})
    if not isinstance(data, dict):
        raise InvalidInput("`data` must be a JSON object")
    user = payload.get("user")
    if user is not None and not isinstance(user, dict):
        raise InvalidInput("`user` must be a JSON object")
    problem = storable.problem(data) or storable.problem(user)
    if problem:
        raise InvalidInput(f"the payload {problem}")
    sessions = event_meta.resolve(payload.get("meta"), "the payload")
    async with conn.transaction():
        data = {**data, "_inngest": {"fn_id": fn["slug"]}}
        event = await events.insert_direct(conn, "inngest/function.invoked", data, user=user,
                                           sessions=sessions)
        run_id, reason = await starting.start_one(conn, _startable(fn), event["id"], event_object(event))
    return event["id"], run_id, reason


async def prune(conn: Conn) -> int:
    return await store.prune_expired_keys(conn)


# -- event keys ------------------------------------------------------------------------------------


def _key_name(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip() or len(raw.strip()) > 200:
        raise InvalidInput("`name` must be a non-empty string of at most 200 characters")
    return raw.strip()


async def create_event_key(conn: Conn, name: Any, event_names: Any = None) -> tuple[dict[str, Any], str]:
    """A new event key (returned once; only its hash is stored), optionally limited to event names."""
    key = keys.new_key()
    row = await event_keys.create(conn, name=_key_name(name), key=key,
                                  event_names=keys.event_names(event_names))
    return row, key


async def update_event_key(conn: Conn, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
    row = await event_keys.update(
        conn, key_id, name=_key_name(body["name"]) if "name" in body else None,
        set_event_names="event_names" in body, event_names=keys.event_names(body.get("event_names")),
    )
    if row is None:
        raise NotFound(f"event key {key_id} not found")
    return row


async def revoke_event_key(conn: Conn, key_id: str) -> dict[str, Any]:
    """Revoked keys are refused from the next request on, on every process (each request looks its
    key up)."""
    row = await event_keys.revoke(conn, key_id)
    if row is None:
        raise NotFound(f"event key {key_id} not found")
    return row
