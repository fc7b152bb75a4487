"""Checkpoints: the JS SDK 4.x stores the steps it runs back to back inside one call request
(`POST /v1/checkpoint/{runId}/async`, pgqueue/executor/checkpoint.py), and durable endpoints run
inside the app's own HTTP request (`POST /v1/checkpoint`, `POST /v1/checkpoint/{runId}/steps`,
`GET /v1/http/runs/{runId}/output`; pgqueue/executor/endpoint.py).

Shapes as Inngest's API: body `{run_id, fn_id, qi_id, request_id, generation_id, request_started_at,
steps, ts}`; 200 when stored (a duplicate is stored once and answered 200 too); 409
`{"error", "status"}` when the call that sent it no longer holds its queue item or the run has
ended (the SDK stops the function: StaleDispatchError); 400 for anything malformed or a step this
endpoint does not store (the SDK then sends its steps in the call's answer). Authenticated like
every SDK endpoint (the signing key, raw or hashed, in production), and each write by the lease of
the request that sent it: `qi_id` of `/async`, the `fn_id` that `POST /v1/checkpoint` answered for
`/steps`.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from api import deps, limits, security
from api.routes.events import read_body
from pgqueue import ids
from pgqueue.errors import Conflict, NotFound, Unauthorized
from pgqueue.executor import checkpoint, endpoint
from pgqueue.executor.apply import Applier
from pgqueue.realtime import tokens
from pgqueue.store import durable_endpoints

router = APIRouter(route_class=limits.AuthFirstRoute, dependencies=[Depends(deps.require_sdk_key)])
# The output of a durable endpoint's run: its token is the authentication (the user's browser or
# client follows the endpoint's redirect here, without any key). It is the app's response, served
# on pgqueue's origin sandboxed, or on PGQUEUE_ENDPOINT_OUTPUT_ORIGIN (api/security.py).
output_router = APIRouter()

# How long GET .../output waits for the run to end before answering 202 (the client asks again).
OUTPUT_WAIT_S = 60.0
OUTPUT_POLL_S = 0.2
# Headers of the endpoint's recorded response that describe the old body's framing, not the one sent.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "content-encoding"})


@router.post("/v1/checkpoint/{run_id}/async", tags=["sdk"],
             summary="Store steps a call ran back to back (JS SDK checkpointing)")
async def checkpoint_async(run_id: str, request: Request) -> JSONResponse:
    received_at = datetime.now(UTC)
    cp = checkpoint.parse(run_id, await read_body(request, limits.SDK_BODY_BYTES))
    async with deps.pool(request).connection() as conn:
        result = await checkpoint.store(conn, cp, received_at=received_at)
    if result.failed is not None:
        raise Conflict(f"run {run_id} failed: {result.failed['message']}")
    data = {"run_id": run_id, "stored": result.stored, "duplicates": result.duplicates}
    return JSONResponse({"data": data})


def _applier(request: Request) -> Applier:
    cfg = deps.settings(request)
    return Applier(backoff_scale=cfg.backoff_scale)


@router.post("/v1/checkpoint", tags=["sdk"], summary="Start a durable endpoint's run (JS SDK endpoint())")
async def checkpoint_new_run(request: Request) -> JSONResponse:
    received_at = datetime.now(UTC)
    new = endpoint.parse_new_run(await read_body(request, limits.SDK_BODY_BYTES),
                                 now_ms=ids.ulid_time_ms(ids.new_ulid()))
    async with deps.pool(request).connection() as conn:
        started = await endpoint.start(conn, _applier(request), new, received_at=received_at)
    keys = deps.settings(request).signing_keys
    # fn_id carries the request's lease: the SDK sends it back with each /steps (endpoint.request_ref).
    # realtime_token: the client that asked for a stream follows the SDK's redirect to
    # /v1/realtime/sse with it and reads what the endpoint tees once the run leaves the request.
    realtime_token = tokens.mint(started.run_id, [tokens.STREAM_TOPIC], signing_keys=keys,
                                 ttl_s=tokens.ENDPOINT_TOKEN_TTL_S)
    data = {"run_id": started.run_id, "fn_id": started.ref, "app_id": started.app_id,
            "token": endpoint.output_token(started.run_id, keys), "realtime_token": realtime_token}
    return JSONResponse({"data": data})


@router.post("/v1/checkpoint/{run_id}/steps", tags=["sdk"],
             summary="Store a durable endpoint's steps, or end or hand over its run")
async def checkpoint_steps(run_id: str, request: Request) -> JSONResponse:
    received_at = datetime.now(UTC)
    steps = endpoint.parse_steps(run_id, await read_body(request, limits.SDK_BODY_BYTES))
    async with deps.pool(request).connection() as conn:
        result = await endpoint.record(conn, _applier(request), run_id, steps, received_at=received_at)
    if isinstance(result, checkpoint.Stored) and result.failed is not None:
        raise Conflict(f"run {run_id} failed: {result.failed['message']}")
    return JSONResponse({"data": {"run_id": run_id, "steps": len(steps.ops)}})


def _run_response(run_id: str, row: dict[str, Any]) -> Response:
    """The endpoint's own response when the run completed with one (RunComplete's data is
    {status, headers, body}), else the output as JSON; a failed or cancelled run as a JSON error.
    Its cookies and security headers are dropped, and pgqueue's set, by api/security.py
    (SecurityHeaders), whatever the run stored."""
    if row["status"] == "failed":
        error = row["error"] if isinstance(row["error"], dict) else {}
        message = str(error.get("message") or "the run failed")
        return JSONResponse({"error": message, "status": 500, "run_id": run_id}, status_code=500)
    if row["status"] == "cancelled":
        return JSONResponse({"error": f"run {run_id} was cancelled", "status": 409, "run_id": run_id},
                            status_code=409)
    output = row["output"]
    status = output.get("status") if isinstance(output, dict) else None
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
        assert isinstance(output, dict)
        raw_headers = output.get("headers")
        headers = {str(k): str(v) for k, v in raw_headers.items()} if isinstance(raw_headers, dict) else {}
        headers = {k: v for k, v in headers.items() if k.lower() not in _FRAMING_HEADERS}
        body = output.get("body")
        content = body if isinstance(body, str) else "" if body is None else json.dumps(body)
        return Response(content, status_code=status, headers=headers)
    return JSONResponse(output)


@output_router.get("/v1/http/runs/{run_id}/output", tags=["sdk"],
                   summary="A durable endpoint's response, once its run has ended")
@output_router.get("/v1/checkpoint/{run_id}/output", tags=["sdk"], include_in_schema=False)
async def run_output(run_id: str, request: Request, token: str | None = None) -> Response:
    cfg = deps.settings(request)
    if not endpoint.verify_output_token(run_id, token, cfg.signing_keys):
        raise Unauthorized("missing or invalid token: use the one in the durable endpoint's redirect")
    if cfg.output_origin is not None and not security.on_output_origin(request.scope, cfg):
        # The SDK redirects its client to pgqueue's API origin; outputs are served from their own.
        query = request.url.query
        return RedirectResponse(f"{cfg.output_origin}{request.url.path}" + (f"?{query}" if query else ""),
                                status_code=307)
    deadline = time.monotonic() + OUTPUT_WAIT_S
    while True:
        async with deps.pool(request).connection() as conn:
            row = await durable_endpoints.result(conn, run_id)
        if row is None:
            raise NotFound(f"run {run_id} not found")
        if row["status"] not in checkpoint.LIVE:
            return _run_response(run_id, row)
        if time.monotonic() >= deadline:
            message = f"run {run_id} did not end within {OUTPUT_WAIT_S:g} s: ask again"
            return JSONResponse({"status": "running", "run_id": run_id, "message": message}, status_code=202,
                                headers={"retry-after": "1"})
        await asyncio.sleep(OUTPUT_POLL_S)
