"""REST: sign out everywhere (every dashboard session ends at once, on every process)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from api import deps, limits, sessions, throttle

router = APIRouter(route_class=limits.AuthFirstRoute, dependencies=[Depends(deps.require_signing_key)])


@router.delete("/v1/sessions", tags=["auth"], summary="End every dashboard session (sign out everywhere)")
async def end_all_sessions(request: Request) -> JSONResponse:
    ended = await sessions.end_all(request, by=f"the REST API, from {throttle.client_address(request)}")
    return JSONResponse({"data": {"ended": ended}})
