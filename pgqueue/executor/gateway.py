"""Make the HTTP requests of Gateway (JS `step.fetch`) and AIGateway (`step.ai.infer`, both SDKs)
opcodes on the app's behalf, as Inngest does, and hand each over as the op an SDK would have sent
had it made the request itself: StepRun with the response, StepError (retried by the step's retry
policy) or StepFailed. apply.py then stores it like any other step.

Requests go through the executor's HTTP client, so the egress policy (egress.py) is checked on
every connection, redirects included. Nothing is stored before a response arrives: a crash or a
retry makes the request again (at least once, like a step.run body). Credentials in the op
(AIGateway's auth_key, any headers) are used for the request only and never stored.

Memo shapes (the ones the SDKs read, and Inngest's executor stores):
- Gateway:   {"url", "headers": {Canonical-Name: "v1,v2"}, "body": "<text>", "status_code"}; any HTTP
             status is a response (fetch semantics); only a failed request is an error (GatewayError).
- AIGateway: the response body's JSON; a status above 299, a body that is not JSON or a failed
             request is an error (AIGatewayError).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx

from pgqueue.executor import egress
from pgqueue.protocol.outcome import Op, Ops

log = logging.getLogger(__name__)

GATEWAY_OPS = frozenset({"Gateway", "AIGateway"})
# A response becomes a step output, which is limited to 4 MB (apply.MAX_STEP_OUTPUT_BYTES).
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# How much of a failed AI response's body the error carries (for the SDK's error and the dashboard).
MAX_ERROR_BODY_CHARS = 10_000
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)


@dataclass(frozen=True, slots=True)
class Performed:
    outcome: Ops
    response_bytes: int  # bytes of the responses taken into step outputs


class _Refused(Exception):
    """The request cannot be made as given: no retry can help (StepFailed)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.error = {"name": name, "message": message}


class _Failed(Exception):
    """The request failed in a way a retry may fix (StepError)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["message"])
        self.error = error


def has_requests(outcome: Ops) -> bool:
    return any(op.op in GATEWAY_OPS for op in outcome.ops)


async def perform(client: httpx.AsyncClient, outcome: Ops, *, deadline_s: float) -> Performed:
    """Make every Gateway/AIGateway request of `outcome` (concurrently, all within `deadline_s`)
    and return the outcome with each such op replaced by its result."""
    targets = [op for op in outcome.ops if op.op in GATEWAY_OPS]
    results = await asyncio.gather(*(_perform_one(client, op, deadline_s) for op in targets))
    by_id = {id(op): result for op, result in zip(targets, results, strict=True)}
    ops = tuple(by_id[id(op)][0] if id(op) in by_id else op for op in outcome.ops)
    return Performed(replace(outcome, ops=ops), sum(size for _, size in results))


async def _perform_one(client: httpx.AsyncClient, op: Op, deadline_s: float) -> tuple[Op, int]:
    kind, error_name = _kind(op), _error_name(op)
    # The op handed on names the kind of step; the request's details (headers, keys) stay out.
    opts: dict[str, Any] = {"type": kind}
    if "parallelMode" in op.opts:
        opts["parallelMode"] = op.opts["parallelMode"]
    try:
        if op.op == "Gateway":
            request = _fetch_request(op)
        else:
            request = _ai_request(op)
        status, headers, body = await _send(client, request, deadline_s=deadline_s, error_name=error_name)
        if op.op == "Gateway":
            data: Any = {
                "url": request.url,
                "headers": headers,
                "body": body.decode("utf-8", errors="replace"),
                "status_code": status,
            }
        else:
            data = _ai_output(status, body)
    except _Refused as exc:
        log.info("%s step %s refused: %s", kind, op.label, exc)
        return replace(op, op="StepFailed", opts=opts, error=exc.error, data=None, has_data=False), 0
    except _Failed as exc:
        log.info("%s step %s failed: %s", kind, op.label, exc)
        return replace(op, op="StepError", opts=opts, error=exc.error, data=None, has_data=False), 0
    return replace(op, op="StepRun", opts=opts, data=data, has_data=True, error=None), len(body)


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None


def _url(op: Op) -> str:
    url = op.opts.get("url")
    if not isinstance(url, str) or not url:
        raise _Refused(_error_name(op), f"{_kind(op)} step {op.label!r} names no URL")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        message = f"{_kind(op)} step {op.label!r}: {url!r} is not a valid URL: {exc}"
        raise _Refused(_error_name(op), message) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise _Refused(_error_name(op), f"{_kind(op)} step {op.label!r}: {url!r} is not an http(s) URL")
    return url


def _kind(op: Op) -> str:
    return "step.fetch" if op.op == "Gateway" else "step.ai.infer"


def _error_name(op: Op) -> str:
    return "GatewayError" if op.op == "Gateway" else "AIGatewayError"


def _headers(op: Op) -> dict[str, str]:
    raw = op.opts.get("headers")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _Refused(_error_name(op), f"{_kind(op)} step {op.label!r}: headers must be an object")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


def _fetch_request(op: Op) -> _Request:
    url = _url(op)
    method = op.opts.get("method") or "GET"
    if not isinstance(method, str) or not _METHOD.fullmatch(method):
        raise _Refused("GatewayError", f"step.fetch step {op.label!r}: {method!r} is not an HTTP method")
    body = op.opts.get("body")
    # The JS SDK passes fetch's `init.body` through: a string is sent as it is (any other value
    # was serialised by the SDK as JSON already).
    content = None if body is None else body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return _Request(method.upper(), url, _headers(op), content)


def _ai_request(op: Op) -> _Request:
    url = _url(op)
    headers = {"content-type": "application/json"}
    auth_key = op.opts.get("auth_key")
    fmt = op.opts.get("format") or "openai-chat"
    if isinstance(auth_key, str) and auth_key:
        match fmt:
            case "gemini":  # Gemini takes the key as a query parameter
                url = str(httpx.URL(url).copy_merge_params({"key": auth_key}))
            case "bedrock":  # a complete, already signed Authorization value
                headers["authorization"] = auth_key
            case "anthropic":
                headers["x-api-key"] = auth_key
            case _:
                headers["authorization"] = f"Bearer {auth_key}"
    # The model's own headers last: they win over the defaults.
    headers.update({k.lower(): v for k, v in _headers(op).items()})
    body = op.opts.get("body")
    if not isinstance(body, dict):
        raise _Refused("AIGatewayError",
                       f"step.ai.infer step {op.label!r}: the request body must be a JSON object")
    return _Request("POST", url, headers, json.dumps(body).encode())


def _ai_output(status: int, body: bytes) -> Any:
    text = body.decode("utf-8", errors="replace")
    if status > 299:
        raise _Failed({"name": "AIGatewayError",
                       "message": f"Error making AI request: unsuccessful status code: {status}",
                       "stack": text[:MAX_ERROR_BODY_CHARS]})
    try:
        return json.loads(text) if text.strip() else None
    except (ValueError, RecursionError):
        raise _Failed({"name": "AIGatewayError",
                       "message": f"Error making AI request: the response (HTTP {status}) is not JSON",
                       "stack": text[:MAX_ERROR_BODY_CHARS]}) from None


def canonical_header(name: str) -> str:
    """Go's canonical MIME header form (content-type -> Content-Type), as Inngest reports headers."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _joined(items: Sequence[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in items:
        key = canonical_header(name)
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


async def _send(
    client: httpx.AsyncClient, req: _Request, *, deadline_s: float, error_name: str
) -> tuple[int, dict[str, str], bytes]:
    def failed(detail: str) -> _Failed:
        prefix = "Error making gateway request" if error_name == "GatewayError" else "Error making AI request"
        return _Failed({"name": error_name, "message": f"{prefix}: {detail}"})

    try:
        async with asyncio.timeout(max(deadline_s, 0.0)):
            async with client.stream(req.method, req.url, content=req.content, headers=req.headers,
                                     follow_redirects=True) as resp:
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise _Refused("OutputTooLarge",
                                       f"the response of {req.method} {req.url} is larger than "
                                       f"{MAX_RESPONSE_BYTES} bytes (4 MB), the limit of a step's output")
                    chunks.append(chunk)
                return resp.status_code, _joined(resp.headers.multi_items()), b"".join(chunks)
    except TimeoutError:
        raise failed(f"no complete response within {deadline_s:g} s") from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise _Refused(error_name, f"{req.url!r} cannot be requested: {exc}") from None
    except httpx.TooManyRedirects as exc:
        raise failed(f"too many redirects: {exc}") from None
    except httpx.HTTPError as exc:
        if refusal := egress.refusal_of(exc):
            raise _Refused("ForbiddenAddress", refusal) from None
        raise failed(f"{type(exc).__name__}: {exc}") from None
    except (OSError, ValueError) as exc:
        raise failed(f"{type(exc).__name__}: {exc}") from None
