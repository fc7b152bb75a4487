"""SDK registration (`POST /fn/register`) and server-initiated sync (`POST /v1/apps/sync`)."""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api import deps, limits
from api.routes.events import read_body
from pgqueue.admin import actions
from pgqueue.apps import registration, sync
from pgqueue.errors import InvalidInput
from pgqueue.store import apps

router = APIRouter(route_class=limits.AuthFirstRoute)
MAX_REGISTER_BYTES = limits.SDK_BODY_BYTES
log = logging.getLogger(__name__)


@router.post("/fn/register", tags=["sync"], summary="Register an app's functions (called by the SDKs)")
async def register(request: Request) -> JSONResponse:
    deps.check_sdk_key(request)
    cfg = deps.settings(request)
    expected = request.headers.get("x-inngest-expected-server-kind")
    kind = sync.server_kind(cfg)
    if expected and expected != kind:
        raise InvalidInput(f"server kind mismatch: the SDK expects a {expected!r} server, this is {kind!r}")
    raw = await read_body(request, MAX_REGISTER_BYTES)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting too deep to parse
        raise InvalidInput("registration body is not valid JSON") from None
    spec = registration.parse_register(body)
    await sync.check_urls(spec, cfg)
    async with deps.pool(request).connection() as conn:
        result = await actions.sync_app(conn, spec)
    log.info(
        "synced app %s (%d functions, modified=%s, archived=%s)",
        spec.name, len(spec.functions), result.modified, list(result.archived),
    )
    answer = {"ok": True, "modified": result.modified, "app_id": str(result.app_id), "status": 200}
    if result.moved_from is not None:
        answer["warning"] = moved_warning(spec.name, result.moved_from, spec.url)
        log.warning("%s", answer["warning"])
    return JSONResponse(answer)


def moved_warning(app: str, before: str, now: str) -> str:
    return (
        f"app {app!r} was synced from {now}, and before from {before}: its functions are now called at"
        f" {now}. If two different apps use the id {app!r}, give each its own id (Inngest(app_id=...) in"
        " Python, new Inngest({ id }) in JS), or each sync moves the other's functions"
    )


class SyncRequest(BaseModel):
    url: str


@router.post("/v1/apps/sync", tags=["apps"], summary="Ask the app at a URL to sync with this server",
             dependencies=[Depends(deps.require_signing_key)])
async def sync_by_url(payload: SyncRequest, request: Request) -> JSONResponse:
    if not payload.url.startswith(("http://", "https://")):
        raise InvalidInput("url must start with http:// or https://")
    services = request.app.state.services
    client = services.client if services is not None else request.app.state.http
    attempt = await sync.sync_app(client, payload.url, deps.settings(request))
    if not attempt.ok:
        async with deps.pool(request).connection() as conn:
            await apps.set_sync_error(conn, payload.url, attempt.error)
        raise InvalidInput(f"sync failed: {attempt.error}")
    # Never the app's answer: this endpoint must not read other services for its caller.
    return JSONResponse({"data": {"url": payload.url, "app_status": attempt.status}, "status": 200})
