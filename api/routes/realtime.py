"""Realtime: publish, subscription tokens, and the subscribers' WebSocket and SSE (pgqueue/realtime/).

Shapes as the official SDKs speak them (JS `inngest` 4.x `api/api.js` and
`components/realtime/subscribe/TokenSubscription.js`, Python `inngest.experimental.realtime`):
- `POST /v1/realtime/publish?channel=&topic=[&topic=][&run_id=]`, body the data (JSON, or text
  published as a string); `Content-Type: text/stream` streams it (datastream-start, chunks,
  datastream-end). 200 `{"data": {"ids": [...], "duplicates": n}}`; 413 past
  PGQUEUE_REALTIME_MAX_MESSAGE_BYTES.
- `POST /v1/realtime/publish/tee?channel={runId}`: a durable endpoint's SSE response, stored whole
  events at a time on topic `$stream` of the run's channel.
- `POST /v1/realtime/token`, body `[{"channel", "name", "kind": "run"}, ...]`: 201 `{"jwt": "..."}`,
  a token for those topics of that one channel.
- `GET /v1/realtime/connect?token=<jwt>` (WebSocket; also `Authorization: Bearer <jwt>`): every
  message of the token's topics as a JSON text frame `{kind, channel, topic, data, created_at,
  run_id?}` from the moment it connects; a `$stream` topic's SSE text as it was teed.
- `GET /v1/realtime/sse?token=<jwt>`: the same as Server-Sent Events (`id: <n>` and `data: <json>`
  per message; a `$stream` topic's text as it was teed, which is already SSE), comments as
  keep-alive, `Last-Event-ID` to resume.
- `GET /v1/realtime/stats`: this process's subscribers and drops.

The publishing routes take the signing key (raw or hashed) in production, like every SDK route;
the subscriber routes take only the token (a browser holds no key) and may be opened from any
origin, so an app's pages can subscribe. An API that cannot hold connections (the Lambda) sends SSE
subscribers to PGQUEUE_REALTIME_URL (307), where `pgqueue realtime` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import anyio
import psycopg
from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect, WebSocketState

from api import deps, errors, limits
from api.routes.events import read_body
from pgqueue.errors import InvalidInput, PayloadTooLarge, PgQueueError, Unauthorized
from pgqueue.events import ingest
from pgqueue.realtime import publishing, tokens
from pgqueue.realtime.hub import Delivery, Hub, Subscriber

log = logging.getLogger("pgqueue.api")

router = APIRouter(route_class=limits.AuthFirstRoute, dependencies=[Depends(deps.require_sdk_key)])
subscribe_router = APIRouter()
stats_router = APIRouter(route_class=limits.AuthFirstRoute,
                         dependencies=[Depends(deps.require_signing_key)])

# Keep-alive on an idle subscription: an SSE comment, so proxies do not close it as idle (the
# WebSocket's pings are uvicorn's).
KEEPALIVE_S = 15.0
# How long a subscriber that fell behind gets to take its close frame before it is cut.
CLOSE_TIMEOUT_S = 2.0
CORS = {"access-control-allow-origin": "*", "access-control-expose-headers": "content-type"}


def _stream_media(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower() == "text/stream"


def _publish_error(exc: psycopg.Error) -> PgQueueError:
    message = exc.diag.message_primary or str(exc)
    if isinstance(exc, psycopg.errors.ProgramLimitExceeded):
        return PayloadTooLarge(f"{message} (PGQUEUE_REALTIME_MAX_MESSAGE_BYTES)")
    return InvalidInput(message)


@router.post("/v1/realtime/publish", tags=["realtime"], summary="Publish a message to a channel's topics")
async def publish(request: Request) -> JSONResponse:
    cfg = deps.settings(request)
    params = request.query_params
    to = publishing.target(params.get("channel"), params.getlist("topic"), params.get("run_id"))
    try:
        if _stream_media(request):
            done = await publishing.publish_stream(
                deps.pool(request), to, request.stream(), max_bytes=cfg.realtime_max_message_bytes,
                max_stream_bytes=cfg.realtime_max_stream_bytes)
        else:
            limit = cfg.realtime_max_message_bytes
            # Read a body somewhat over the limit to its end, so the SDK gets the 413 (a server that
            # hangs up mid-upload is a network error to it); past the stream limit it is cut off.
            try:
                body = await read_body(request, limits.body_limit(request.url.path, cfg))
            except PayloadTooLarge:
                raise publishing.too_large(request.headers.get("content-length"), limit) from None
            data = publishing.message_data(body, max_bytes=limit)
            batcher: publishing.Batcher | None = request.app.state.realtime_publisher
            if batcher is not None:
                done = await batcher.publish(to, data)
            else:  # the Lambda: one request at a time, nothing to commit together
                done = await publishing.publish(deps.pool(request), to, data, max_bytes=limit)
    except (psycopg.errors.InvalidParameterValue, psycopg.errors.ProgramLimitExceeded) as exc:
        raise _publish_error(exc) from None
    return JSONResponse({"data": {"channel": to.channel, "topics": list(to.topics), "ids": list(done.ids),
                                  "duplicates": done.duplicates}})


@router.post("/v1/realtime/publish/tee", tags=["realtime"],
             summary="A durable endpoint's response stream, to the clients that follow its redirect")
async def publish_tee(request: Request, channel: str | None = None) -> JSONResponse:
    cfg = deps.settings(request)
    if not channel:
        raise InvalidInput("`channel` is required: POST /v1/realtime/publish/tee?channel=<run id>")
    tokens.check_name(channel, "channel")
    try:
        done = await publishing.tee(deps.pool(request), channel, request.stream(),
                                    max_bytes=cfg.realtime_max_message_bytes,
                                    max_stream_bytes=cfg.realtime_max_stream_bytes)
    except (psycopg.errors.InvalidParameterValue, psycopg.errors.ProgramLimitExceeded) as exc:
        raise _publish_error(exc) from None
    return JSONResponse({"data": {"channel": channel, "messages": len(done.ids)}})


@router.post("/v1/realtime/token", tags=["realtime"], summary="A subscription token for one channel's topics")
async def create_token(request: Request) -> JSONResponse:
    cfg = deps.settings(request)
    body = ingest.parse_body(await read_body(request, limits.DEFAULT_BODY_BYTES))
    channel, topics = tokens.parse_request(body)
    jwt = tokens.mint(channel, topics, signing_keys=cfg.signing_keys, ttl_s=cfg.realtime_token_ttl_s)
    return JSONResponse({"jwt": jwt}, status_code=201)


@stats_router.get("/v1/realtime/stats", tags=["realtime"], summary="This process's realtime subscribers")
async def stats(request: Request) -> JSONResponse:
    hub = _hub(request)
    if hub is None:
        return JSONResponse({"data": None})
    return JSONResponse({"data": hub.stats().to_dict()})


# -- subscribers ------------------------------------------------------------------------------------


def _hub(conn: Request | WebSocket) -> Hub | None:
    return getattr(conn.app.state, "realtime", None)


def _token(conn: Request | WebSocket) -> str | None:
    token = conn.query_params.get("token")
    if token:
        return token
    scheme, _, value = (conn.headers.get("authorization") or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _elsewhere(conn: Request | WebSocket, path: str) -> str | None:
    """Where a process that cannot hold subscriptions sends subscribers (PGQUEUE_REALTIME_URL)."""
    base = deps.settings(conn).realtime_url  # type: ignore[arg-type]
    if not base:
        return None
    query = urlencode(list(conn.query_params.multi_items()))
    return f"{base.rstrip('/')}{path}" + (f"?{query}" if query else "")


def _no_hub_message(conn: Request | WebSocket) -> str:
    where = _elsewhere(conn, "")
    if where:
        return (f"this API process cannot hold realtime subscriptions (serverless): connect to the"
                f" `pgqueue realtime` process at {where} instead")
    return ("this API process cannot hold realtime subscriptions (serverless): run `pgqueue realtime`"
            " beside it, set PGQUEUE_REALTIME_URL to its address and point subscribers there")


def _resume_from(request: Request) -> int | None:
    raw = request.headers.get("last-event-id", "").strip()
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


def _sse_frames(batch: list[Delivery]) -> bytes:
    parts = []
    for message in batch:
        if message.raw:
            parts.append(message.text)
        else:
            parts.append(f"id: {message.id}\ndata: {message.text}\n\n")
    return "".join(parts).encode("utf-8")


@subscribe_router.get("/v1/realtime/sse", tags=["realtime"], summary="Subscribe with Server-Sent Events")
async def subscribe_sse(request: Request) -> Response:
    hub = _hub(request)
    if hub is None:
        where = _elsewhere(request, "/v1/realtime/sse")
        if where:
            return RedirectResponse(where, status_code=307, headers=CORS)
        return errors_json(501, _no_hub_message(request))
    cfg = deps.settings(request)
    try:
        grant = tokens.verify(_token(request), signing_keys=cfg.signing_keys)
    except Unauthorized as exc:
        return errors_json(401, exc.message)
    sub = await hub.subscribe(grant.channel, grant.topics, since=_resume_from(request))

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b": subscribed\n\n"
            while True:
                batch = await sub.next_batch(KEEPALIVE_S)
                if batch:
                    yield _sse_frames(batch)
                elif sub.closed is not None:
                    yield f": closed: {sub.closed}\n\n".encode()
                    return
                else:
                    yield b":\n\n"
        finally:
            hub.unsubscribe(sub)

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no", **CORS}
    # the background task also covers a client gone before the body started (its finally never runs)
    return _SubscriptionStream(sub, events(), media_type="text/event-stream", headers=headers,
                               background=BackgroundTask(hub.unsubscribe, sub))


class _SubscriptionStream(StreamingResponse):
    """An SSE subscription that is cut at once when the hub drops it for falling behind: its body may
    be stuck in a send to a client that reads nothing, which would otherwise hold the connection
    (and the batch being sent) until the client goes."""

    def __init__(self, sub: Subscriber, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sub = sub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def cut_when_dropped() -> None:
                if "fell behind" in await self.sub.wait_closed():
                    group.cancel_scope.cancel()

            group.start_soon(cut_when_dropped)
            await super().__call__(scope, receive, send)
            group.cancel_scope.cancel()


@subscribe_router.options("/v1/realtime/sse", include_in_schema=False)
async def subscribe_sse_preflight() -> Response:
    """CORS preflight of a page's SSE subscription that sends headers beyond the safelisted ones
    (`Last-Event-ID` when resuming, `Authorization: Bearer <token>`): allowed from any origin, as
    the subscription itself is (the token is the credential)."""
    return Response(status_code=204, headers={
        **CORS, "access-control-allow-methods": "GET", "access-control-max-age": "600",
        "access-control-allow-headers": "authorization, last-event-id, cache-control, accept",
    })


def errors_json(status: int, message: str) -> JSONResponse:
    response = errors.error_response(status, message)
    response.headers.update(CORS)
    return response


_TOKEN_IN_QUERY = re.compile(r"(?<=[?&]token=)[^&\s\"]+")


class _UvicornWebSocketLog(logging.Filter):
    """uvicorn's WebSocket lines on `uvicorn.error`: a subscription token is a credential, so the one
    in a logged URL is redacted (uvicorn logs each WebSocket's path and query at INFO, whatever the
    access log says). And uvicorn (0.54, websockets-sansio) logs "ASGI callable returned without
    completing handshake." at ERROR after every refusal sent as an HTTP answer
    (`send_denial_response`), which is not an error: each refusal is logged at INFO with its reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "ASGI callable returned without completing handshake.":
            return False
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "token=" in a for a in record.args):
            record.args = tuple(_TOKEN_IN_QUERY.sub("[redacted]", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


logging.getLogger("uvicorn.error").addFilter(_UvicornWebSocketLog())


async def _deny(websocket: WebSocket, status: int, message: str) -> None:
    """Refuse a WebSocket before it opens: an HTTP answer with the usual JSON error where the server
    supports it (uvicorn does), else a close with a policy-violation code."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(errors.error_response(status, message))
    else:
        await websocket.close(code=1008, reason=message[:120])


async def _send_all(websocket: WebSocket, sub: Subscriber) -> None:
    while True:
        batch = await sub.next_batch(KEEPALIVE_S)
        for message in batch:
            await websocket.send_text(message.text)
        if not batch and sub.closed is not None:
            return


async def _read_until_closed(websocket: WebSocket) -> None:
    # The JS SDK sends nothing; reading notices when the client goes (and answers its pings).
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


@subscribe_router.websocket("/v1/realtime/connect")
async def subscribe_websocket(websocket: WebSocket) -> None:
    hub = _hub(websocket)
    if hub is None:
        log.info("realtime connection refused: no hub in this process")
        await _deny(websocket, 501, _no_hub_message(websocket))
        return
    cfg = deps.settings(websocket)  # type: ignore[arg-type]
    try:
        grant = tokens.verify(_token(websocket), signing_keys=cfg.signing_keys)
    except Unauthorized as exc:
        log.info("realtime connection refused: %s", exc.message)
        await _deny(websocket, 401, exc.message)
        return
    try:
        sub = await hub.subscribe(grant.channel, grant.topics)
    except psycopg.Error as exc:
        log.warning("realtime subscription failed: %s", exc)
        await _deny(websocket, 503, f"database unavailable ({type(exc).__name__}); retry later")
        return
    try:
        await websocket.accept()
        sender = asyncio.create_task(_send_all(websocket, sub), name="pgqueue-realtime-ws-send")
        reader = asyncio.create_task(_read_until_closed(websocket), name="pgqueue-realtime-ws-read")
        # a subscriber closed by the hub (it fell behind) may have its sender stuck in a send to a
        # client that reads nothing: stop waiting for it then
        closed = asyncio.create_task(sub.wait_closed(), name="pgqueue-realtime-ws-closed")
        await asyncio.wait({sender, reader, closed}, return_when=asyncio.FIRST_COMPLETED)
        for task in (sender, reader, closed):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError, OSError):
                await task
        if sub.closed is not None and websocket.application_state == WebSocketState.CONNECTED:
            # fell behind (or the server is stopping): say why, but do not wait on a stuck reader
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await websocket.close(code=1013 if "fell behind" in sub.closed else 1001,
                                          reason=sub.closed[:120])
    finally:
        hub.unsubscribe(sub)

