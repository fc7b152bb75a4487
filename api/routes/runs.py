"""REST v1 runs and events, and the v0 endpoints the SDKs call when state is too large to send."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from api import deps, limits, schemas
from api.routes.events import read_body
from pgqueue.admin import actions
from pgqueue.errors import InvalidInput, NotFound
from pgqueue.events import ingest
from pgqueue.events.objects import event_object
from pgqueue.runs import metadata, trace
from pgqueue.store import apps, events, run_metadata, runs, steps

router = APIRouter(route_class=limits.AuthFirstRoute, dependencies=[Depends(deps.require_signing_key)])


def _utc(value: datetime | None) -> datetime | None:
    """Times without an offset are UTC (so naive and aware bounds compare)."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _data(data: Any, **metadata: Any) -> JSONResponse:
    body: dict[str, Any] = {"data": data}
    body["metadata"] = {"fetched_at": datetime.now(UTC).isoformat(), **metadata}
    return JSONResponse(body)


@router.get("/v1/events", tags=["events"], summary="List events, newest first")
async def list_events(
    request: Request,
    name: str | None = None,
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    received_after: datetime | None = None,
    received_before: datetime | None = None,
) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        rows = await events.list_events(
            conn, name=name, before_id=cursor, received_after=received_after,
            received_before=received_before, limit=limit,
        )
    next_cursor = rows[-1]["id"] if len(rows) == limit else None
    return _data([schemas.event_json(r) for r in rows], cursor=next_cursor)


@router.get("/v1/events/{event_id}", tags=["events"], summary="One event")
async def get_event(event_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        row = await events.get(conn, event_id)
    if row is None:
        raise NotFound(f"event {event_id} not found")
    return _data(schemas.event_json(row))


@router.get("/v1/events/{event_id}/runs", tags=["events"], summary="Runs an event started",
            description="`metadata.skip_reason` says why the event started no run (or fewer than its"
                        " triggers would), when known: a duplicate `id`, a paused function, flow control,"
                        " or an error while starting its runs.")
async def event_runs(event_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        event = await events.get(conn, event_id)
        if event is None:
            raise NotFound(f"event {event_id} not found")
        rows = await runs.list_for_event(conn, event_id)
    return _data([schemas.run_json(r) for r in rows], skip_reason=event["skip_reason"])


@router.get("/v1/runs", tags=["runs"], summary="List runs, newest first",
            description="Keyset paging: pass the `cursor` from a page's metadata to get the next"
                        " (older) page. `started_after`/`started_before` bound the runs' creation time.")
async def list_runs(
    request: Request,
    status: str | None = None,
    function_id: str | None = None,
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    started_after: datetime | None = None,
    started_before: datetime | None = None,
) -> JSONResponse:
    if status is not None:
        status = status.lower()
        if status not in ("queued", "running", "completed", "failed", "cancelled"):
            raise InvalidInput("status must be one of Queued, Running, Completed, Failed, Cancelled")
    started_after, started_before = _utc(started_after), _utc(started_before)
    if started_after is not None and started_before is not None and started_after >= started_before:
        raise InvalidInput("started_after must be earlier than started_before")
    async with deps.pool(request).connection() as conn:
        rows = await runs.list_runs(
            conn, status=status, function=function_id, before_id=cursor, limit=limit,
            created_after=started_after, created_before=started_before,
        )
    next_cursor = rows[-1]["id"] if len(rows) == limit else None
    return _data([schemas.run_json(r) for r in rows], cursor=next_cursor)


@router.get("/v1/runs/{run_id}", tags=["runs"], summary="One run",
            description="`metadata`: the run's own metadata (its steps' are in /jobs and /metadata).")
async def get_run(run_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        row = await runs.get(conn, run_id)
        if row is None:
            raise NotFound(f"run {run_id} not found")
        meta_rows = await run_metadata.list_for_run(conn, run_id)
    run = schemas.run_json(row)
    run["metadata"] = [metadata.entry_json(m) for m in meta_rows if m["scope"] == "run"]
    return _data(run)


@router.delete("/v1/runs/{run_id}", tags=["runs"], summary="Cancel a run")
async def cancel_run(run_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        row = await actions.cancel_run(conn, run_id, reason="cancelled through the REST API")
    return _data(schemas.run_json(row))


@router.get("/v1/runs/{run_id}/jobs", tags=["runs"], summary="A run's steps and attempts")
async def run_jobs(run_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        if await runs.get(conn, run_id) is None:
            raise NotFound(f"run {run_id} not found")
        step_rows = await steps.list_steps(conn, run_id)
        attempt_rows = await steps.list_attempts(conn, run_id)
        meta_rows = await run_metadata.list_for_run(conn, run_id)
    step_metadata: dict[str, list[dict[str, Any]]] = {}
    for m in meta_rows:
        if m["step_id"]:
            step_metadata.setdefault(m["step_id"], []).append(metadata.entry_json(m))
    by_step: dict[str, list[dict[str, Any]]] = {}
    for a in attempt_rows:
        by_step.setdefault(a["step_id"], []).append(
            {
                "attempt": a["attempt"],
                "outcome": a["outcome"],
                "status_code": a["status_code"],
                "error": a["error"],
                "started_at": schemas.iso(a["started_at"]),
                "ended_at": schemas.iso(a["ended_at"]),
            }
        )
    data = []
    for s in step_rows:
        memo = s["memo"]
        failed = isinstance(memo, dict) and set(memo) == {"error"}
        data.append(
            {
                "step_id": s["step_id"],
                "name": s["name"],
                "op": s["op"],
                "status": "Failed" if failed else "Completed",
                "output": None if failed else (
                    memo.get("data") if isinstance(memo, dict) and set(memo) == {"data"} else memo),
                "error": memo["error"] if failed else None,
                "attempts": s["attempt"] + 1,
                "completed_at": schemas.iso(s["created_at"]),
                "history": by_step.get(s["step_id"], []),
                "metadata": step_metadata.get(s["step_id"], []),
            }
        )
    return _data(data, attempts=[{"step_id": k, "history": v} for k, v in by_step.items()])


@router.post("/v1/runs/{run_id}/metadata", tags=["runs"], summary="Add metadata to a run or one of its steps",
             description="Inngest's body: `{\"target\": {\"step_id\"?, \"step_index\"?, \"step_attempt\"?,"
                         " \"span_id\"?}, \"metadata\": [{\"kind\", \"op\", \"values\"}]}` (what the JS SDK's"
                         " metadata and scoring helpers send). No step_id: the run; a step_id (the step's own"
                         " id): that step, or one attempt of it. `op` merge, set, delete or add combines with"
                         " what is stored. 413 over 64 KB per update or 1 MB per run.")
async def add_metadata(run_id: str, request: Request) -> JSONResponse:
    updates = metadata.from_request(ingest.parse_body(await read_body(request, limits.DEFAULT_BODY_BYTES)),
                                     run_id)
    async with deps.pool(request).connection() as conn:
        total = await metadata.write(conn, run_id, updates)
    return _data({"run_id": run_id, "updates": len(updates), "run_metadata_bytes": total})


@router.get("/v1/runs/{run_id}/metadata", tags=["runs"], summary="A run's metadata, and its steps'")
async def get_metadata(run_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        if await runs.get(conn, run_id) is None:
            raise NotFound(f"run {run_id} not found")
        rows = await run_metadata.list_for_run(conn, run_id)
    return _data([metadata.entry_json(r) for r in rows])


@router.get("/v1/runs/{run_id}/trace", tags=["runs"], summary="A run's trace: its spans as a tree",
            description="The spans GraphQL's `run.trace` and the dashboard draw: the queue wait, every"
                        " call to the app (steps, their retries as `Attempt N` children, discovery calls,"
                        " the finalization), sleeps, waits and invokes, with `queued_at`/`started_at`/"
                        "`ended_at` and `output_id`s that `GET /v1/runs/{run_id}/outputs/{output_id}`"
                        " resolves.")
async def run_trace(run_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        found = await trace.load(conn, run_id)
    if found is None:
        raise NotFound(f"run {run_id} not found")
    return _data(schemas.trace_json(found))


@router.get("/v1/runs/{run_id}/outputs/{output_id}", tags=["runs"], summary="One span's output",
            description="`data` is the output as JSON text (a step's output, the event a wait matched, the"
                        " run's result); `error` the error object of a failed step, call or run.")
async def run_output(run_id: str, output_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        found = await trace.output_of_run(conn, run_id, output_id)
    return _data({"data": found.data, "error": found.error, "input": found.input})


@router.get("/v0/runs/{run_id}/actions", tags=["sdk"], summary="Memoised step state (SDK use_api)")
async def run_actions(run_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        if await runs.get(conn, run_id) is None:
            raise NotFound(f"run {run_id} not found")
        memo = await steps.memo_map(conn, run_id)
    return JSONResponse(memo)


@router.get("/v0/runs/{run_id}/batch", tags=["sdk"], summary="A run's events (SDK use_api)")
async def run_batch(run_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        run = await runs.get(conn, run_id)
        if run is None:
            raise NotFound(f"run {run_id} not found")
        rows = {r["id"]: r for r in await events.get_many(conn, run["event_ids"])}
    return JSONResponse([event_object(rows[i]) for i in run["event_ids"] if i in rows])


@router.delete("/v0/runs/{run_id}", tags=["sdk"], summary="Cancel a run")
async def cancel_run_v0(run_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        row = await actions.cancel_run(conn, run_id, reason="cancelled through the API")
    return JSONResponse({"run_id": row["id"], "status": 200})


@router.get("/v1/apps", tags=["apps"], summary="List apps")
async def list_apps(request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        rows = await apps.list_apps(conn)
    return _data([schemas.app_json(r) for r in rows])


@router.get("/v1/apps/{app_id}/functions", tags=["apps"], summary="Functions of an app (by id or name)")
async def app_functions(app_id: str, request: Request, include_archived: bool = False) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        app = await apps.get_app(conn, app_id)
        if app is None:
            raise NotFound(f"app {app_id} not found")
        rows = await apps.list_functions(conn, app["id"], include_archived=include_archived)
    return _data([schemas.function_json(r) for r in rows])
