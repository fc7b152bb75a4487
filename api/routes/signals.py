"""POST /v1/signals: resume the run waiting in step.waitForSignal (the JS SDK's `sendSignal` and
`step.sendSignal` call it, as may any REST client).

Shapes as Inngest's API: body `{"signal": "<name>", "data": <any JSON>}`; 200
`{"data": {"run_id": "<run>"}}` when a run was waiting (it resumes with
`{"signal": <name>, "data": <data>}`), 404 `{"error": "No signal found", "status": 404}` when none
was (the signal is dropped; the SDK reports `runId: undefined`). The work is done by the same SQL
function as `SELECT pgqueue.send_signal(...)` (sql/functions/signals.sql).
"""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from api import deps, limits
from api.routes.events import read_body
from pgqueue import storable
from pgqueue.errors import InvalidInput, NotFound
from pgqueue.events import ingest
from pgqueue.store import pauses

router = APIRouter(route_class=limits.AuthFirstRoute, dependencies=[Depends(deps.require_signing_key)])


def _parse(raw: bytes) -> tuple[str, Any]:
    body = ingest.parse_body(raw)
    if not isinstance(body, dict):
        raise InvalidInput('the body must be a JSON object like {"signal": "<name>", "data": {...}}')
    signal = body.get("signal")
    if not isinstance(signal, str) or not signal.strip():
        raise InvalidInput("`signal` is required and must be a non-empty string")
    data = body.get("data")
    problem = storable.problem(data)
    if problem:
        raise InvalidInput(f"the signal's data cannot be stored: {problem}")
    return signal, data


@router.post("/v1/signals", tags=["runs"], summary="Send a signal to the run waiting for it (waitForSignal)")
async def send_signal(request: Request) -> JSONResponse:
    signal, data = _parse(await read_body(request, limits.DEFAULT_BODY_BYTES))
    try:
        async with deps.pool(request).connection() as conn, conn.transaction():
            run_id = await pauses.signal_send(conn, signal, data)
    except (psycopg.errors.InvalidParameterValue, psycopg.errors.ProgramLimitExceeded) as exc:
        raise InvalidInput(exc.diag.message_primary or str(exc)) from None
    if run_id is None:
        raise NotFound("No signal found")
    services = getattr(request.app.state, "services", None)
    if services is not None:
        services.queue_wakeup.set()
    kicker = getattr(request.app.state, "kicker", None)
    if kicker is not None:
        # Serverless: the resumed run's next call is due now, not at the executor's next tick.
        await kicker.maybe_kick(deps.pool(request))
    return JSONResponse({"data": {"run_id": run_id}})
