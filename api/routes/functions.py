"""REST: functions with their triggers, flow-control settings, queue state and recent runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from api import deps, limits, schemas
from pgqueue.errors import NotFound
from pgqueue.store import inspect, runs

router = APIRouter(route_class=limits.AuthFirstRoute, dependencies=[Depends(deps.require_signing_key)])


def _function_detail_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **schemas.function_json(row),
        "app": {"id": str(row["app_id"]), "name": row["app_name"]},
        "flow_control": schemas.flow_control(row["config"]),
    }


@router.get("/v1/functions", tags=["functions"], summary="List functions of every app")
async def list_functions(request: Request, include_archived: bool = False) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        rows = await inspect.functions(conn, include_archived=include_archived)
    return JSONResponse({"data": [_function_detail_json(r) for r in rows]})


@router.get(
    "/v1/functions/{function_id}", tags=["functions"],
    summary="One function (by id or slug) with recent runs",
    description="Triggers, flow-control settings, its queue items per status, its runs per status over the"
                " last 24 hours and its most recent runs (page on with GET /v1/runs?function_id=...).",
)
async def get_function(
    function_id: str, request: Request, runs_limit: int = Query(20, ge=0, le=100)
) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        row = await inspect.function(conn, function_id)
        if row is None:
            raise NotFound(f"function {function_id} not found")
        recent = await runs.list_runs(conn, function=str(row["id"]), limit=runs_limit) if runs_limit else []
        counts = await inspect.function_run_counts(conn, row["id"], datetime.now(UTC) - timedelta(hours=24))
        depth = await inspect.queue_depth(conn, row["id"])
    data = {
        **_function_detail_json(row),
        "app": {"id": str(row["app_id"]), "name": row["app_name"], "url": row["app_url"],
                "synced_at": schemas.iso(row["app_synced_at"]), "sync_error": row["app_sync_error"]},
        "runs_24h": {schemas.status_name(k): v for k, v in counts.items()},
        "queue": [schemas.queue_depth_json(d) for d in depth],
        "recent_runs": [schemas.run_json(r) for r in recent],
    }
    return JSONResponse({"data": data})
