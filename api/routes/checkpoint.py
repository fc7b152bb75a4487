"""Checkpoints: the JS SDK 4.x stores the steps it runs back to back inside one call request
(`POST /v1/checkpoint/{runId}/async`, pgqueue/executor/checkpoint.py).

Shapes as Inngest's API: body `{run_id, fn_id, qi_id, request_id, generation_id, request_started_at,
steps, ts}`; 200 when stored (a duplicate is stored once and answered 200 too); 409
`{"error", "status"}` when the call that sent it no longer holds its queue item or the run has
ended (the SDK stops the function: StaleDispatchError); 400 for anything malformed or a step this
endpoint does not store (the SDK then sends its steps in the call's answer). Authenticated like
every SDK endpoint (the signing key, raw or hashed, in production).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from api import deps, limits
from api.routes.events import read_body
from pgqueue.errors import Conflict
from pgqueue.executor import checkpoint

router = APIRouter(route_class=limits.AuthFirstRoute, dependencies=[Depends(deps.require_sdk_key)])


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
