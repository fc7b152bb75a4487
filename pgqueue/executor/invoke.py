"""Build the signed call request for one queue item and send it to the app with httpx.

Transport failures (refused, reset, timeout, oversized answer) become retriable CallErrors; the
executor never raises past this module for anything the app does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from pgqueue.executor import checkpoint, egress, redaction, transport
from pgqueue.models import QueueItem
from pgqueue.protocol import canonical, signing
from pgqueue.protocol.outcome import CallError, Response, transport_error

if TYPE_CHECKING:
    from pgqueue.settings import Settings

# Above this the SDK is asked to fetch state through /v0/runs/{id}/actions and /batch instead.
MAX_REQUEST_BODY = 4 * 1024 * 1024
log = logging.getLogger(__name__)
SDK_HEADERS = {"content-type": "application/json", "user-agent": "pgqueue/0.1"}
BODYLESS_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class CallRequest:
    url: str
    body: bytes
    headers: dict[str, str]
    use_api: bool
    method: str = "POST"


def with_step_id(url: str, step_id: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "stepId"]
    query.append(("stepId", step_id))
    return urlunsplit(parts._replace(query=urlencode(query)))


class StateTooLarge(Exception):
    """The run's state no longer fits what the SDK can fetch from this deployment's API."""


def _embedded_size(value: Any) -> int:
    """The size of `value`'s JSON as the body string of a Lambda response (quotes escaped)."""
    return len(json.dumps(canonical.canonical_bytes(value).decode()))


def build(
    item: QueueItem, ctx: dict[str, Any], *, signing_key: str | None, env: str = "dev",
    max_api_response_bytes: int | None = None, checkpointing: bool = False,
) -> CallRequest:
    """The call request for `item`. `checkpointing`: the body names the function and the queue item
    (ctx.fn_id, ctx.qi_id), which lets the JS SDK 4.x run steps back to back in this one request
    and store each with POST /v1/checkpoint/{runId}/async (pgqueue/executor/checkpoint.py)."""
    events: list[dict[str, Any]] = list(ctx["events"])
    step_pairs: list[list[Any]] = list(ctx["steps"])
    steps = {step_id: memo for step_id, memo in step_pairs}
    stack = [step_id for step_id, _ in step_pairs]
    event = events[0] if events else {"name": "", "data": {}, "id": "", "ts": 0}
    body_ctx: dict[str, Any] = {
        "run_id": ctx["id"],
        "env": env,
        "step_id": item.step_id,
        "attempt": item.attempt,
        "max_attempts": item.max_attempts,
        "stack": {"stack": stack, "current": len(stack)},
        "disable_immediate_execution": bool(ctx["force_step_plan"]),
        "use_api": False,
        "request_id": f"{item.id}-{item.attempt}",
        "job_id": str(item.id),
    }
    if checkpointing:
        body_ctx["fn_id"] = str(item.function_id)
        body_ctx["qi_id"] = checkpoint.queue_item_ref(item)
    payload: dict[str, Any] = {
        "event": event,
        "events": events,
        "steps": steps,
        "defers": {},
        "ctx": body_ctx,
        "version": ctx["request_version"],
        "use_api": False,
    }
    body = canonical.canonical_bytes(payload)
    use_api = False
    if len(body) > MAX_REQUEST_BODY:
        use_api = True
        body_ctx["use_api"] = True
        if max_api_response_bytes is not None:
            for what, part in (("step outputs", steps), ("events", events)):
                size = _embedded_size(part)
                if size > max_api_response_bytes:
                    raise StateTooLarge(
                        f"the run's {what} take {size} bytes as an API response, and this deployment's API "
                        f"answers at most {max_api_response_bytes} bytes (PGQUEUE_MAX_API_RESPONSE_BYTES; "
                        "AWS Lambda's response limit is 6 MB): keep step outputs small (store large data "
                        "elsewhere and return a reference), or run the API in a container")
        payload.update(events=[], steps={}, use_api=True)
        body = canonical.canonical_bytes(payload)
        log.info("run %s: state too large for the request body; the SDK fetches it (use_api)", ctx["id"])
    headers = dict(SDK_HEADERS)
    headers["x-run-id"] = ctx["id"]
    headers["x-inngest-job-id"] = str(item.id)
    headers["x-request-id"] = body_ctx["request_id"]
    if ctx["request_version"] >= 0:
        headers["x-inngest-req-version"] = str(ctx["request_version"])
    method = "POST"
    if ctx.get("endpoint_method"):
        # A durable endpoint's run (pgqueue/executor/endpoint.py): the SDK takes a request as
        # pgqueue's when it has X-Run-Id and an X-Inngest-Signature header (empty in dev mode),
        # ignores the body and fetches the run's state (use_api). It is called with the method of
        # the request that started the run; a GET or HEAD carries no body (signed as empty).
        method = ctx["endpoint_method"]
        if method in BODYLESS_METHODS:
            body = b""
        headers.setdefault("x-inngest-signature", "")
    if signing_key:
        headers["x-inngest-signature"] = signing.sign(body, signing_key)
    return CallRequest(with_step_id(ctx["url"], item.step_id), body, headers, use_api, method)


async def send(
    client: httpx.AsyncClient, req: CallRequest, *, max_response_bytes: int, deadline_s: float | None = None
) -> Response | CallError:
    """One call to the app. `deadline_s` bounds the whole call (connect, sending, every read): the
    client's own timeouts bound each read only, and an app dribbling one byte a second would
    otherwise hold the call open forever."""
    try:
        async with asyncio.timeout(deadline_s):
            return await _send(client, req, max_response_bytes=max_response_bytes)
    except TimeoutError:
        return CallError(
            {"name": "CallTimedOut",
             "message": f"the app did not finish answering within {deadline_s:g} s (PGQUEUE_CALL_TIMEOUT_S)"},
            retriable=True,
        )


async def _send(
    client: httpx.AsyncClient, req: CallRequest, *, max_response_bytes: int
) -> Response | CallError:
    try:
        stream = (client.call(req.url, req.body, req.headers, method=req.method)
                  if isinstance(client, transport.AppClient)
                  else client.stream(req.method, req.url, content=req.body, headers=req.headers))
        async with stream as resp:
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > max_response_bytes:
                    return CallError(
                        {
                            "name": "ResponseTooLarge",
                            "message": f"the function's answer exceeded {max_response_bytes} bytes",
                        },
                        retriable=True,
                        status_code=resp.status_code,
                    )
                chunks.append(chunk)
            headers = {k.lower(): v for k, v in resp.headers.items()}
            return Response(resp.status_code, headers, b"".join(chunks))
    # The app's URL as messages show it: an app URL can carry a credential too (redaction.py).
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        # Retrying cannot fix the URL: the app must be synced again with a valid one.
        message = f"the app URL {redaction.url(req.url)!r} is not valid: {exc}"
        return CallError({"name": "AppUnreachable", "message": message}, retriable=False)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        if refusal := egress.refusal_of(exc):
            return CallError({"name": "ForbiddenAddress", "message": refusal}, retriable=False)
        shown = redaction.url(req.url)
        return transport_error(f"could not connect to the app at {shown}: {type(exc).__name__}: {exc}",
                               name="AppUnreachable")
    except httpx.TimeoutException as exc:
        shown = redaction.url(req.url)
        return transport_error(f"calling {shown} timed out ({type(exc).__name__})", name="CallTimedOut")
    except httpx.HTTPError as exc:
        return transport_error(f"calling {redaction.url(req.url)} failed: {type(exc).__name__}: {exc}")
    except (OSError, ValueError) as exc:
        # What a transport raises outside httpx's own errors (a resolver error, an address it cannot
        # use): the app cannot be reached, which is the app's problem, never the engine's.
        shown = redaction.url(req.url)
        return transport_error(f"could not reach the app at {shown}: {type(exc).__name__}: {exc}",
                               name="AppUnreachable")


# Idle connections are dropped after 2 s, before the usual 5 s keep-alive timeout of app servers
# (uvicorn, Node): reusing a connection the app is closing at that moment fails the call with a
# ReadError.
KEEPALIVE_EXPIRY_S = 2.0


def new_client(
    *, connect_timeout_s: float, call_timeout_s: float, policy: egress.Policy = egress.DEV_POLICY
) -> transport.AppClient:
    """No redirects (a 3xx could point anywhere) and no proxy from the environment: every
    connection goes where the egress policy checked it may go."""
    return transport.AppClient(
        transport.AppTransport(policy, keepalive_expiry_s=KEEPALIVE_EXPIRY_S),
        timeout=httpx.Timeout(call_timeout_s, connect=connect_timeout_s, pool=None),
    )


def client_for(settings: Settings, *, call_timeout_s: float | None = None) -> transport.AppClient:
    """The HTTP client for calls to apps, with the egress policy the settings ask for."""
    return new_client(
        connect_timeout_s=settings.connect_timeout_s,
        call_timeout_s=settings.call_timeout_s if call_timeout_s is None else call_timeout_s,
        policy=egress.Policy.from_settings(settings),
    )


def fetch_client_for(settings: Settings) -> transport.AppClient:
    """The HTTP client for the requests functions make through pgqueue (step.fetch, step.ai.infer),
    with their own egress policy (egress.Policy.for_fetch), not the apps'."""
    return new_client(connect_timeout_s=settings.connect_timeout_s, call_timeout_s=settings.call_timeout_s,
                      policy=egress.Policy.for_fetch(settings))
