"""REST for the dashboard's operator views, so each is scriptable: run and event search by CEL
expression (pgqueue/runs/search.py) and run charts (pgqueue/runs/charts.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from api import deps, limits, schemas
from pgqueue.errors import InvalidInput, NotFound
from pgqueue.runs import charts, search
from pgqueue.store import inspect

router = APIRouter(route_class=limits.AuthFirstRoute, dependencies=[Depends(deps.require_signing_key)])

STATUSES = ("queued", "running", "completed", "failed", "cancelled")


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def search_json(found: search.Search) -> dict[str, Any]:
    return {"cursor": found.cursor, "stopped": found.stopped, "scanned": found.scanned,
            "elapsed_ms": round(found.elapsed_ms, 1), "unevaluable": found.errors}


async def function_id(request: Request, ref: str | None) -> Any:
    if not ref:
        return None
    async with deps.pool(request).connection() as conn:
        fn = await inspect.function(conn, ref)
    if fn is None:
        raise NotFound(f"function {ref} not found")
    return fn["id"]


@router.get("/v1/search/runs", tags=["runs"], summary="Search runs by a CEL expression",
            description="`q` is an expression over the run's triggering `event` and its `output`"
                        " (`event.data.userId == \"u1\"`, `output.total > 100`), compiled and cost-limited as"
                        " triggers' are. It reads the runs created in [`from`, `to`) (default: the last 24"
                        " hours; at most 31 days), newest first, and stops at `limit` matches, after"
                        " 200,000 candidates or 5 seconds: `metadata.cursor` then goes on from there.")
async def search_runs(
    request: Request,
    q: str = Query(..., min_length=1, max_length=16384),
    from_: datetime | None = Query(None, alias="from"),
    to: datetime | None = None,
    function_id_: str | None = Query(None, alias="function_id"),
    status: str | None = None,
    limit: int = Query(50, ge=1, le=search.MAX_LIMIT),
    cursor: str | None = None,
) -> JSONResponse:
    after, before = search.window(_utc(from_), _utc(to), datetime.now(UTC))
    if status is not None and status.lower() not in STATUSES:
        raise InvalidInput("status must be one of Queued, Running, Completed, Failed, Cancelled")
    fn = await function_id(request, function_id_)
    async with deps.pool(request).connection() as conn:
        found = await search.search_runs(conn, q, after=after, before=before, function_id=fn,
                                         status=status.lower() if status else None, limit=limit, cursor=cursor,
                                         cancelled=request.is_disconnected)
    return JSONResponse({"data": [schemas.run_json(r) for r in found.rows], "metadata": search_json(found)})


@router.get("/v1/search/events", tags=["events"], summary="Search events by a CEL expression over their payload",
            description="`q` is an expression over `event` (`event.data.order.total > 100`); the bounds of"
                        " /v1/search/runs apply, over the events received in [`from`, `to`).")
async def search_events(
    request: Request,
    q: str = Query(..., min_length=1, max_length=16384),
    from_: datetime | None = Query(None, alias="from"),
    to: datetime | None = None,
    name: str | None = None,
    limit: int = Query(50, ge=1, le=search.MAX_LIMIT),
    cursor: str | None = None,
) -> JSONResponse:
    after, before = search.window(_utc(from_), _utc(to), datetime.now(UTC))
    async with deps.pool(request).connection() as conn:
        found = await search.search_events(conn, q, after=after, before=before, name=name or None, limit=limit,
                                           cursor=cursor, cancelled=request.is_disconnected)
    return JSONResponse({"data": [schemas.event_json(r) for r in found.rows], "metadata": search_json(found)})


def chart_json(chart: charts.Chart) -> dict[str, Any]:
    return {
        "range": chart.range, "bucket_s": chart.bucket_s, "since": schemas.iso(chart.since),
        "live": chart.live, "p50_ms": chart.p50_ms, "p99_ms": chart.p99_ms,
        "totals": {k: chart.total(k) for k in ("started", "completed", "failed", "cancelled")},
        "buckets": [{"at": schemas.iso(b.at), "started": b.started, "completed": b.completed, "failed": b.failed,
                     "cancelled": b.cancelled, "backlog": b.backlog, "p50_ms": b.p50_ms, "p99_ms": b.p99_ms}
                    for b in chart.buckets],
        "concurrency": [{"function_id": str(c["function_id"]), "function_slug": c["function_slug"],
                         "in_use": int(c["in_use"]), "limit": c["concurrency_limit"]} for c in chart.concurrency],
    }


@router.get("/v1/charts/runs", tags=["ops"], summary="Runs over time: per bucket, backlog, p50/p99 duration",
            description="Runs started, completed, failed and cancelled per bucket, the backlog (runs not"
                        " over) at the end of each bucket and p50/p99 run duration, over `range` (1h, 6h,"
                        " 24h, 7d), overall or for one function; from the per-minute counts in"
                        " pgqueue.run_counts. `concurrency`: calls in flight now against each function's"
                        " limit.")
async def runs_chart(
    request: Request, range_: str = Query("1h", alias="range"), function_id_: str | None = Query(None, alias="function_id"),
) -> JSONResponse:
    fn = await function_id(request, function_id_)
    async with deps.pool(request).connection() as conn:
        chart = await charts.runs_chart(conn, range_, fn)
    return JSONResponse({"data": chart_json(chart)})
