"""REST: bulk cancellations, replays, function pause/resume, direct invoke."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api import deps, limits, schemas
from api.routes.events import read_body
from pgqueue.admin import actions
from pgqueue.errors import InvalidInput, NotFound
from pgqueue.events import ingest
from pgqueue.store import operations as control_store

router = APIRouter(route_class=limits.AuthFirstRoute, dependencies=[Depends(deps.require_signing_key)])


def _cancellation_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "app_id": str(row["app_id"]),
        "function_id": str(row["function_id"]),
        "started_after": schemas.iso(row["started_after"]),
        "started_before": schemas.iso(row["started_before"]),
        "if": row["expression"],
        "cancelled": row["cancelled_count"],
        "created_at": schemas.iso(row["created_at"]),
    }


class CancellationRequest(BaseModel):
    app_id: str
    function_id: str
    started_after: datetime | None = None
    started_before: datetime | None = None
    if_: str | None = Field(default=None, alias="if")
    dry_run: bool = False


@router.post("/v1/cancellations", tags=["runs"], summary="Cancel the live runs of a function in a time range",
             description="`\"dry_run\": true` only counts the runs it would cancel now:"
                         " `{\"data\": {\"matching\": n}}` (200), nothing is cancelled or recorded.")
async def create_cancellation(body: CancellationRequest, request: Request) -> JSONResponse:
    before = body.started_before or datetime.now(UTC)
    async with deps.pool(request).connection() as conn:
        if body.dry_run:
            n = await actions.bulk_cancel_preview(
                conn, app_ref=body.app_id, function_ref=body.function_id, started_before=before,
                started_after=body.started_after, if_expr=body.if_,
            )
            return JSONResponse({"data": {"matching": n}})
        row = await actions.bulk_cancel(
            conn, app_ref=body.app_id, function_ref=body.function_id, started_before=before,
            started_after=body.started_after, if_expr=body.if_,
        )
    return JSONResponse({"data": _cancellation_json(row)}, status_code=201)


@router.get("/v1/cancellations", tags=["runs"], summary="List bulk cancellations")
async def list_cancellations(request: Request, limit: int = Query(50, ge=1, le=500)) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        rows = await control_store.list_cancellations(conn, limit)
    return JSONResponse({"data": [_cancellation_json(r) for r in rows]})


@router.delete("/v1/cancellations/{cancellation_id}", tags=["runs"],
               summary="Delete a bulk cancellation record")
async def delete_cancellation(cancellation_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        if not await control_store.delete_cancellation(conn, cancellation_id):
            raise NotFound(f"cancellation {cancellation_id} not found")
    return JSONResponse({"data": {"id": cancellation_id, "deleted": True}})


@router.post("/v1/runs/{run_id}/replay", tags=["runs"], summary="Start a new run from a run's events")
async def replay_run(run_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        row = await actions.replay_run(conn, run_id)
    return JSONResponse({"data": schemas.run_json(row)}, status_code=201)


@router.post("/v1/runs/{run_id}/rerun", tags=["runs"], summary="Rerun a run from one of its steps",
             description="Body `{\"from_step\": \"<step id or name>\"}` (optional: without it, from the"
                         " start). A new run of the same function from the original event(s), under the"
                         " function's flow control as a replay, that keeps the outputs the original stored"
                         " before that step: the SDK skips those steps and runs the chosen one and the rest"
                         " again. The new run's `replay_of` is the original; `rerun` says what was kept."
                         " 400 for a step the run did not store, 409 for a run still live.")
async def rerun_run(run_id: str, request: Request) -> JSONResponse:
    raw = await read_body(request, limits.DEFAULT_BODY_BYTES)
    body = ingest.parse_body(raw) if raw.strip() else {}
    if not isinstance(body, dict) or set(body) - {"from_step"}:
        raise InvalidInput('the body must be a JSON object like {"from_step": "<step id or name>"}')
    from_step = body.get("from_step")
    if from_step is not None and not isinstance(from_step, str):
        raise InvalidInput("`from_step` must be a string: a step's id or name")
    async with deps.pool(request).connection() as conn:
        row, record = await actions.rerun(conn, run_id, from_step)
    services = getattr(request.app.state, "services", None)
    if services is not None:
        services.queue_wakeup.set()
    return JSONResponse({"data": {**schemas.run_json(row), "rerun": record}}, status_code=201)


class ReplayRequest(BaseModel):
    started_after: datetime
    started_before: datetime | None = None
    statuses: list[str] = Field(default_factory=lambda: ["Failed", "Cancelled"])
    dry_run: bool = False


@router.post("/v1/functions/{function_id}/replay", tags=["functions"],
             summary="Replay ended runs in a time range",
             description="At most 1,000 runs a call. `\"dry_run\": true` only counts the runs it would replay"
                         " (`{\"data\": {\"matching\": n}}`, 200), starting none.")
async def replay_range(function_id: str, body: ReplayRequest, request: Request) -> JSONResponse:
    before = body.started_before or datetime.now(UTC)
    if body.started_after >= before:
        raise InvalidInput("started_after must be earlier than started_before")
    async with deps.pool(request).connection() as conn:
        if body.dry_run:
            n = await actions.replay_range_preview(conn, function_id, after=body.started_after, before=before,
                                                   statuses=body.statuses)
            return JSONResponse({"data": {"matching": n}})
        created = await actions.replay_range(conn, function_id, after=body.started_after, before=before,
                                             statuses=body.statuses)
    return JSONResponse({"data": {"run_ids": created}}, status_code=201)


@router.post("/v1/functions/{function_id}/pause", tags=["functions"], summary="Pause a function")
async def pause_function(function_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        row = await actions.set_paused(conn, function_id, True)
    return JSONResponse({"data": {"id": str(row["id"]), "slug": row["slug"], "paused": True}})


@router.post("/v1/functions/{function_id}/resume", tags=["functions"], summary="Resume a paused function")
async def resume_function(function_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        row = await actions.set_paused(conn, function_id, False)
    return JSONResponse({"data": {"id": str(row["id"]), "slug": row["slug"], "paused": False}})


@router.post("/invoke/{function_slug}", tags=["functions"], summary="Invoke a function directly")
async def invoke_function(function_slug: str, request: Request) -> JSONResponse:
    raw = await read_body(request, limits.SDK_BODY_BYTES)
    body = ingest.parse_body(raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object like {\"data\": {...}}")
    async with deps.pool(request).connection() as conn:
        event_id, run_id, skipped = await actions.invoke(conn, function_slug, body)
    services = getattr(request.app.state, "services", None)
    if services is not None:
        services.queue_wakeup.set()
    return JSONResponse({"id": event_id, "run_id": run_id, "status": 200, "skip_reason": skipped})
