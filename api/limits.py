"""Request body limits, enforced at the ASGI layer for every route before any handler or FastAPI
itself reads a byte, and the route class that runs authentication before a body is read.

Each request gets the limit of its route (`body_limit`): events keep theirs
(`PGQUEUE_MAX_EVENT_BYTES` per event, checked when the body is parsed; the request at most the
larger of 4 x that and 16 MiB), SDK endpoints 16 MiB, realtime publishing
PGQUEUE_REALTIME_MAX_STREAM_BYTES (a stream; one message is held to
PGQUEUE_REALTIME_MAX_MESSAGE_BYTES by its route), everything else (REST, GraphQL, dashboard forms) 1 MiB. The
body is counted as it streams: a declared Content-Length over the limit is refused when the app
first asks for the body, without reading it; a chunked body as soon as the count passes the limit.
Either way the answer is 413 with the usual JSON error. The check is lazy on purpose: an app that
answers without reading the body (a 401 from an authentication check) keeps its answer, so a caller
without credentials learns nothing about sizes.

A response sent before the whole body was read gets `Connection: close`, so the server does not
keep draining what the client still sends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors
from pgqueue.settings import Settings

MiB = 1024 * 1024
SDK_BODY_BYTES = 16 * MiB  # /fn/register, /invoke, /v0, /v1/checkpoint: the SDKs' own payloads
DEFAULT_BODY_BYTES = 1 * MiB  # REST control calls, dashboard forms, anything else
REALTIME_PUBLISH_PATHS = frozenset({"/v1/realtime/publish", "/v1/realtime/publish/tee"})


def event_request_bytes(settings: Settings) -> int:
    """Largest `POST /e/{key}` body: room for a batch of events of up to `max_event_bytes` each
    (every event is checked against that on its own when the body is parsed)."""
    return max(settings.max_event_bytes * 4, 16 * MiB)


def webhook_body_bytes(settings: Settings) -> int:
    """Largest body a webhook takes (checked once its key says it is a webhook): a delivery becomes
    a few events of up to `max_event_bytes` each, and a failed one is kept whole."""
    return settings.max_event_bytes * 4


def body_limit(path: str, settings: Settings) -> int:
    if path.startswith("/e/"):
        return event_request_bytes(settings)
    if path == "/v0/gql":  # a GraphQL query, not an SDK payload
        return DEFAULT_BODY_BYTES
    if path == "/fn/register" or path.startswith(("/invoke/", "/v0/", "/v1/checkpoint/")):
        return SDK_BODY_BYTES
    if path in REALTIME_PUBLISH_PATHS:
        # a stream (text/stream, a durable endpoint's tee); one message is held to its own limit
        return max(settings.realtime_max_stream_bytes, settings.realtime_max_message_bytes)
    return DEFAULT_BODY_BYTES


class BodyTooLarge(HTTPException):
    """Raised out of `receive()`; an HTTPException so FastAPI's body parsing lets it through (it
    turns any other error while reading into a 400) and the JSON error handler renders it."""

    def __init__(self, detail: str) -> None:
        super().__init__(status_code=413, detail=detail)


def _declared_length(headers: Headers) -> int | None:
    raw = headers.get("content-length")
    return int(raw) if raw is not None and raw.isdigit() else None


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope["path"], self.settings)
        headers = Headers(scope=scope)
        declared = _declared_length(headers)
        has_body = bool(declared) or "transfer-encoding" in headers
        received = 0
        body_done = not has_body
        started = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if declared is not None and declared > limit:
                raise BodyTooLarge(f"request body is {declared} bytes; the limit is {limit} bytes")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
                if not message.get("more_body", False):
                    body_done = True
            return message

        async def closing_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not body_done:
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, limited_receive, closing_send)
        except BodyTooLarge as exc:
            # Raised where no exception handler ran (a middleware or mount reading the body).
            if started:
                raise
            await errors.error_response(413, exc.detail)(scope, receive, closing_send)


# -- authentication before the body ------------------------------------------------------------


def runs_before_body(
    guard: Callable[[Request], Awaitable[None]],
) -> Callable[[Request], Awaitable[None]]:
    """Mark a `Depends()` guard (it takes only the request and raises to refuse) as one that
    `AuthFirstRoute` runs before the request body is read."""
    guard.runs_before_body = True  # type: ignore[attr-defined]
    return guard


class AuthFirstRoute(APIRoute):
    """A route whose authentication runs before its body is read.

    FastAPI reads and parses a typed body (`body: Model`) before it solves any dependency, the
    route's and its router's authentication included: without this, a request without credentials
    got its body read into memory and parsed (a truncated JSON body was answered 400, not 401).
    Guards marked with `runs_before_body` among the route's dependencies run first here; FastAPI
    runs them again with the other dependencies, which costs a few constant-time comparisons."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        guards = [d.dependency for d in self.dependencies
                  if d.dependency is not None and getattr(d.dependency, "runs_before_body", False)]
        if not guards:
            return handler

        async def guarded(request: Request) -> Response:
            for guard in guards:
                await guard(request)
            return await handler(request)

        return guarded
