"""REST and Prometheus views of the queue: headline metrics (pgqueue.metrics()), queue depth,
leases, stuck runs and a run's timeline — the SQL views of sql/views/inspect.sql over HTTP."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from api import deps, limits, schemas
from pgqueue.errors import NotFound
from pgqueue.store import inspect, queue, runs

router = APIRouter(route_class=limits.AuthFirstRoute, dependencies=[Depends(deps.require_signing_key)])

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@router.get("/v1/metrics", tags=["ops"], summary="Headline numbers (pgqueue.metrics())")
async def metrics_json(request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        row = await inspect.metrics(conn)
        counts = await queue.housekeeping_counts(conn)
    return JSONResponse({"data": {**schemas.metrics_json(row), **schemas.housekeeping_json(counts)}})


@router.get("/v1/queue", tags=["ops"], summary="Queue depth per function and status, leases, stuck runs")
async def queue_state(request: Request, limit: int = Query(100, ge=1, le=1000)) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        depth = await inspect.queue_depth(conn)
        leases = await inspect.active_leases(conn, limit)
        stuck = await inspect.stuck_runs(conn, limit)
    return JSONResponse({"data": {
        "depth": [schemas.queue_depth_json(d) for d in depth],
        "leases": [schemas.lease_json(x) for x in leases],
        "stuck_runs": [schemas.stuck_json(x) for x in stuck],
    }})


@router.get("/v1/runs/{run_id}/timeline", tags=["runs"], summary="A run's timeline (pgqueue.run_timeline)")
async def run_timeline(run_id: str, request: Request) -> JSONResponse:
    async with deps.pool(request).connection() as conn:
        if await runs.get(conn, run_id) is None:
            raise NotFound(f"run {run_id} not found")
        rows = await inspect.run_timeline(conn, run_id)
    return JSONResponse({"data": [schemas.timeline_json(r) for r in rows]})


# -- Prometheus --------------------------------------------------------------------------------


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(
    name: str, help_text: str, samples: Iterable[tuple[dict[str, object], float]], kind: str = "gauge"
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        rendered = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{rendered}}} {float(value):g}" if rendered else f"{name} {float(value):g}")
    return lines


def prometheus_text(
    m: dict[str, Any], depth: list[dict[str, Any]], levels: Sequence[dict[str, Any]] = (),
    housekeeping: dict[str, int] | None = None,
) -> str:
    lines: list[str] = []
    lines += _family("pgqueue_runs_live", "Runs not yet ended, by status.",
                     [({"status": s}, m[f"runs_{s}"]) for s in ("queued", "running")])
    lines += _family("pgqueue_runs_ended_1h", "Runs that ended in the last hour, by status.",
                     [({"status": s}, m[f"runs_{s}_1h"]) for s in ("completed", "failed", "cancelled")])
    lines += _family("pgqueue_runs_started_5m", "Runs created in the last 5 minutes.",
                     [({}, m["runs_started_5m"])])
    lines += _family("pgqueue_queue_items", "Queue items by status.",
                     [({"status": s}, m[f"items_{s}"]) for s in ("due", "scheduled", "leased")])
    lines += _family("pgqueue_leases_expired",
                     "Leased items whose lease has expired (the rescuer re-queues them).",
                     [({}, m["leases_expired"])])
    lines += _family("pgqueue_queue_oldest_due_age_seconds", "Age of the oldest due queue item.",
                     [({}, m["oldest_due_age_s"])])
    lines += _family("pgqueue_pauses_waiting", "Runs waiting for an event or an invoked function.",
                     [({}, m["pauses_waiting"])])
    lines += _family("pgqueue_events_received_1h", "Events received in the last hour.",
                     [({}, m["events_received_1h"])])
    lines += _family("pgqueue_events_pending", "Events stored but not yet processed by a runner.",
                     [({}, m["events_pending"])])
    lines += _family("pgqueue_stuck_runs", "Live runs that are not moving (see pgqueue.stuck_runs).",
                     [({}, m["stuck_runs"])])
    lines += _family("pgqueue_apps", "Synced apps.", [({}, m["apps"])])
    lines += _family("pgqueue_functions", "Active functions, and how many are paused.",
                     [({"state": "active"}, m["functions"]), ({"state": "paused"}, m["functions_paused"])])
    lines += _family("pgqueue_function_queue_items",
                     "Queue items per function and status (pgqueue.queue_depth).",
                     [({"function": d["function_slug"] or str(d["function_id"]), "status": d["status"]},
                       d["items"]) for d in depth])
    app = [{"app": lv["app_name"] or str(lv["app_id"])} for lv in levels]
    lines += _family("pgqueue_app_concurrency_limit",
                     "Calls the workers allow in flight to an app (adaptive concurrency).",
                     [(a, lv["concurrency_limit"]) for a, lv in zip(app, levels, strict=True)])
    lines += _family("pgqueue_app_in_flight", "Calls in flight to an app, over all workers.",
                     [(a, lv["in_flight"]) for a, lv in zip(app, levels, strict=True)])
    if housekeeping is not None:
        lines += _family("pgqueue_rescued_leases_total",
                         "Items whose lease expired, handed back to the queue by the rescuer.",
                         [({}, housekeeping.get("leases_expired", 0))], kind="counter")
        lines += _family("pgqueue_missed_unparks_total",
                         "Parked items the rescuer unparked because their concurrency slot was free:"
                         " wake-ups the normal path missed (0 in a healthy system).",
                         [({}, housekeeping.get("missed_unparks", 0))], kind="counter")
    return "\n".join(lines) + "\n"


@router.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=PlainTextResponse,
            description="Prometheus text format (0.0.4), built on pgqueue.metrics(), pgqueue.queue_depth and"
                        " pgqueue.app_concurrency."
                        " In serve mode scrape it with a bearer token (the signing key or an API token).")
async def prometheus(request: Request) -> PlainTextResponse:
    async with deps.pool(request).connection() as conn:
        m = await inspect.metrics(conn)
        depth = await inspect.queue_depth(conn)
        levels = await inspect.app_concurrency(conn)
        counts = await queue.housekeeping_counts(conn)
    return PlainTextResponse(prometheus_text(m, depth, levels, counts), media_type=PROMETHEUS_TYPE)
