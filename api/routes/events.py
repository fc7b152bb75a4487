"""POST /e/{event_key}: validate, persist and wake the runner (or kick the executor Lambda), in one
transaction per request."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api import deps, limits
from pgqueue import telemetry
from pgqueue.admin import webhook_actions
from pgqueue.errors import PayloadTooLarge
from pgqueue.events import deliveries, ingest, keys
from pgqueue.models import Event
from pgqueue.runner import inline, loop
from pgqueue.store import events

router = APIRouter(route_class=limits.AuthFirstRoute)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def max_request_bytes(request: Request) -> int:
    return limits.event_request_bytes(deps.settings(request))


async def store_events(request: Request, parsed: list[Event], started_ns: int) -> None:
    """Store validated events and wake whatever starts their runs, as POST /e does."""
    cfg = deps.settings(request)
    handled = False
    traced: loop.Traced = []  # events whose runs start here, for traces
    try:
        async with deps.pool(request).connection() as conn:
            if cfg.inline_start:
                async with conn.transaction():
                    queued = await events.ingest(conn, parsed)
                    if queued:
                        # One hop: the events' runs start in this transaction (the runner takes
                        # what this leaves in the inbox).
                        handled = await inline.start(conn, [e.id for e in parsed], [e.name for e in parsed],
                                                     traced=traced)
            else:
                # One statement (pgqueue.event_ingest_v1), its own transaction on the autocommit
                # connection: no BEGIN/COMMIT round trips.
                queued = await events.ingest(conn, parsed)
    except psycopg.OperationalError:
        # A pooled connection that died (database restart, terminated backend): nothing was
        # committed, and the ids are fixed already, so one retry on a fresh connection is safe.
        traced.clear()
        async with deps.pool(request).connection() as conn:
            queued = await events.ingest(conn, parsed)
    telemetry.ingested(request.headers, parsed, started_ns)  # traces (optional): a span per stored event
    telemetry.events_handled(traced)  # and, for events started here, the event's span linked to its runs
    await wake(request, queued, handled=handled)


async def wake(request: Request, queued: int, *, handled: bool = False) -> None:
    services = getattr(request.app.state, "services", None)
    if queued and not handled and services is not None:
        services.wake_runner()
    kicker = getattr(request.app.state, "kicker", None)
    if queued and kicker is not None:
        # Serverless: start the executor now rather than at its next scheduled tick (debounced).
        await kicker.maybe_kick(deps.pool(request))


@router.post("/e/{event_key}", tags=["events"], summary="Send events (or deliver to a webhook)")
async def send_events(event_key: str, request: Request) -> JSONResponse:
    started_ns = time.time_ns()
    stored_key = await deps.event_key(request, event_key)
    if stored_key is not None and stored_key["kind"] == "webhook":
        return await receive_webhook(request, stored_key, started_ns)
    cfg = deps.settings(request)
    body = await read_body(request, max_request_bytes(request))
    parsed = ingest.parse_events(
        body,
        seed_header=request.headers.get("x-inngest-event-id-seed"),
        max_event_bytes=cfg.max_event_bytes,
        max_events=cfg.max_events_per_request,
    )
    if stored_key is not None:
        keys.check_names(stored_key, [e.name for e in parsed])
    await store_events(request, parsed, started_ns)
    return JSONResponse({"ids": [e.id for e in parsed], "status": 200})


async def receive_webhook(request: Request, webhook: dict[str, Any], started_ns: int) -> JSONResponse:
    """A delivery to a webhook's URL: its transform turns the request into events
    (pgqueue/admin/webhook_actions.py).
    Answers as POST /e does, or 4xx with the reason; the delivery is recorded either way."""
    cfg = deps.settings(request)
    limit = limits.webhook_body_bytes(cfg)
    delivery = webhook_actions.Delivery(
        body=b"", content_type=request.headers.get("content-type"),
        headers=deliveries.header_object(request.headers.items()),
        query=deliveries.query_object(request.query_params.multi_items()), method=request.method,
    )
    try:
        delivery.body = await read_body(request, limit)
    except PayloadTooLarge:
        declared = request.headers.get("content-length")
        error = webhook_actions.too_large(limit, int(declared) if declared and declared.isdigit() else None)
        async with deps.pool(request).connection() as conn:
            await webhook_actions.refuse(conn, webhook, delivery, error)
        raise error from None
    async with deps.pool(request).connection() as conn:
        await webhook_actions.deliver(conn, webhook, cfg, delivery)
    telemetry.ingested(request.headers, delivery.events, started_ns)
    await wake(request, delivery.queued)
    return JSONResponse({"ids": [e.id for e in delivery.events], "status": 200})


@router.post("/e/", include_in_schema=False)
async def send_events_without_a_key(request: Request) -> JSONResponse:
    """An SDK with INNGEST_EVENT_KEY set to "" posts to /e/ (the Python SDK's step.send_event and
    client.send do): accepted in dev mode like any key, refused in production like a wrong key."""
    return await send_events("", request)
