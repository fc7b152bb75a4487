"""Make the HTTP requests of Gateway (JS `step.fetch`) and AIGateway (`step.ai.infer`, both SDKs)
opcodes on the app's behalf, as Inngest does, and hand each over as the op an SDK would have sent
had it made the request itself: StepRun with the response, StepError (retried by the step's retry
policy) or StepFailed. apply.py then stores it like any other step.

Requests go through the executor's fetch client: its own egress policy (egress.Policy.for_fetch:
in production public addresses only unless PGQUEUE_FETCH_ALLOWED_NETWORKS / _HOSTS list more,
whatever the apps' policy allows), checked on every connection, redirects included, and no cookie
jar (a cookie one function's fetch received is never sent for another). Nothing is stored before a
response arrives: a crash or a retry makes the request again (at least once, like a step.run body).

Credentials in the op (AIGateway's auth_key, its headers, a URL's user info or `?key=`) are used
for the request only: everything logged, stored or raised about it goes through one redaction
(redaction.py), and a redirect never carries them to another origin. AI calls follow no redirect
at all (a 3xx fails the step); a fetch follows up to MAX_REDIRECTS, and once it leaves the origin
it asked for, it sends none of the caller's headers. Bodies are decoded (gzip, deflate) as they
are read, never more than MAX_RESPONSE_BYTES at a time, so a small compressed answer cannot take
more memory than the cap of a step output.

Memo shapes (the ones the SDKs read, and Inngest's executor stores):
- Gateway:   {"url", "headers": {Canonical-Name: "v1,v2"}, "body": "<text>", "status_code"}; any HTTP
             status is a response (fetch semantics); only a failed request is an error (GatewayError).
             `url` is the URL asked for, its credentials redacted.
- AIGateway: the response body's JSON; a status above 299, a body that is not JSON or a failed
             request is an error (AIGatewayError).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import httpx

from pgqueue.executor import egress, redaction
from pgqueue.protocol.outcome import Op, Ops

log = logging.getLogger(__name__)

GATEWAY_OPS = frozenset({"Gateway", "AIGateway"})
# A response becomes a step output, which is limited to 4 MB (apply.MAX_STEP_OUTPUT_BYTES).
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# How much of a failed AI response's body the error carries (for the SDK's error and the dashboard).
MAX_ERROR_BODY_CHARS = 10_000
MAX_REDIRECTS = 20  # httpx's and browsers' limit
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Decoded bytes produced by one decompress call: memory per fetch stays near the cap.
DECODE_CHUNK = 64 * 1024
# What a fetch asks for unless the caller says otherwise: the encodings `_Decoder` undoes.
ACCEPT_ENCODING = "gzip, deflate"
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)


class Client(Protocol):
    """What the gateway needs of an HTTP client: one request sent as it is (transport.AppClient)."""

    async def exchange(self, request: httpx.Request) -> httpx.Response: ...


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


async def perform(client: Client, outcome: Ops, *, deadline_s: float) -> Performed:
    """Make every Gateway/AIGateway request of `outcome` (concurrently, all within `deadline_s`)
    and return the outcome with each such op replaced by its result."""
    targets = [op for op in outcome.ops if op.op in GATEWAY_OPS]
    results = await asyncio.gather(*(_perform_one(client, op, deadline_s) for op in targets))
    by_id = {id(op): result for op, result in zip(targets, results, strict=True)}
    ops = tuple(by_id[id(op)][0] if id(op) in by_id else op for op in outcome.ops)
    return Performed(replace(outcome, ops=ops), sum(size for _, size in results))


async def _perform_one(client: Client, op: Op, deadline_s: float) -> tuple[Op, int]:
    kind, error_name = _kind(op), _error_name(op)
    # The op handed on names the kind of step; the request's details (headers, keys) stay out.
    opts: dict[str, Any] = {"type": kind}
    if "parallelMode" in op.opts:
        opts["parallelMode"] = op.opts["parallelMode"]
    # Every text about this request (errors stored with the step, the log) is scrubbed of the
    # op's credentials, including what httpx or the provider quote back.
    secrets = _op_secrets(op)
    try:
        if op.op == "Gateway":
            request = _fetch_request(op)
        else:
            request = _ai_request(op)
        secrets = redaction.Secrets(secrets.values + request.secrets.values)
        status, headers, body = await _send(client, request, deadline_s=deadline_s, error_name=error_name)
        if op.op == "Gateway":
            data: Any = {
                "url": request.shown,
                "headers": headers,
                "body": body.decode("utf-8", errors="replace"),
                "status_code": status,
            }
        else:
            data = _ai_output(status, body, secrets)
    except _Refused as exc:
        error = _scrubbed(exc.error, secrets)
        log.info("%s step %s refused: %s", kind, op.label, error["message"])
        return replace(op, op="StepFailed", opts=opts, error=error, data=None, has_data=False), 0
    except _Failed as exc:
        error = _scrubbed(exc.error, secrets)
        log.info("%s step %s failed: %s", kind, op.label, error["message"])
        return replace(op, op="StepError", opts=opts, error=error, data=None, has_data=False), 0
    return replace(op, op="StepRun", opts=opts, data=data, has_data=True, error=None), len(body)


def _scrubbed(error: dict[str, Any], secrets: redaction.Secrets) -> dict[str, Any]:
    return {k: secrets.scrub(v) if isinstance(v, str) else v for k, v in error.items()}


def _op_secrets(op: Op) -> redaction.Secrets:
    """Credentials of the op as it came, before its request is built (a malformed op's message
    quotes its URL too)."""
    raw_url = op.opts.get("url")
    raw_headers = op.opts.get("headers")
    header_values = {str(k): str(v) for k, v in raw_headers.items()} if isinstance(raw_headers, dict) else {}
    return redaction.Secrets.of(raw_url if isinstance(raw_url, str) else "", header_values,
                                [op.opts.get("auth_key")])


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None
    follow_redirects: bool
    secrets: redaction.Secrets
    shown: str  # the URL asked for, as messages and the stored output show it (redaction.url)


def _url(op: Op) -> str:
    url = op.opts.get("url")
    if not isinstance(url, str) or not url:
        raise _Refused(_error_name(op), f"{_kind(op)} step {op.label!r} names no URL")
    shown = redaction.url(url)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        message = f"{_kind(op)} step {op.label!r}: {shown!r} is not a valid URL: {exc}"
        raise _Refused(_error_name(op), message) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise _Refused(_error_name(op), f"{_kind(op)} step {op.label!r}: {shown!r} is not an http(s) URL")
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
    headers = _headers(op)
    asked = url
    parsed = httpx.URL(url)
    if parsed.userinfo:  # user:password@ in the URL is Basic authentication (as httpx sends it)
        if not any(name.lower() == "authorization" for name in headers):
            basic = base64.b64encode(f"{parsed.username}:{parsed.password}".encode()).decode()
            headers["authorization"] = f"Basic {basic}"
        url = str(parsed.copy_with(username=None, password=None))
    return _Request(method.upper(), url, headers, content, True, redaction.Secrets.of(asked, headers),
                    redaction.url(asked))


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
    secrets = redaction.Secrets.of(url, headers, [auth_key])
    return _Request("POST", url, headers, json.dumps(body).encode(), False, secrets, redaction.url(url))


def _ai_output(status: int, body: bytes, secrets: redaction.Secrets) -> Any:
    # A provider's error may echo the request: its body is scrubbed like any message.
    text = body.decode("utf-8", errors="replace")
    if status in REDIRECT_STATUSES:
        raise _Refused("AIGatewayError",
                       f"Error making AI request: the provider answered a redirect ({status}); step.ai.infer "
                       "follows no redirect, so its credentials go only to the URL the model names")
    if status > 299:
        raise _Failed({"name": "AIGatewayError",
                       "message": f"Error making AI request: unsuccessful status code: {status}",
                       "stack": secrets.scrub(text[:MAX_ERROR_BODY_CHARS])})
    try:
        return json.loads(text) if text.strip() else None
    except (ValueError, RecursionError):
        raise _Failed({"name": "AIGatewayError",
                       "message": f"Error making AI request: the response (HTTP {status}) is not JSON",
                       "stack": secrets.scrub(text[:MAX_ERROR_BODY_CHARS])}) from None


def canonical_header(name: str) -> str:
    """Go's canonical MIME header form (content-type -> Content-Type), as Inngest reports headers."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _joined(items: Sequence[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in items:
        key = canonical_header(name)
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


# -- redirects ---------------------------------------------------------------------------------------


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)


def _next_request(req: _Request, current: httpx.URL, status: int, location: str,
                  first: tuple[str, str, int | None]) -> _Request:
    """The request a fetch makes for a redirect: the method and body as browsers change them, and
    none of the caller's headers once the chain has left the origin the caller asked for."""
    target = current.join(location)
    if target.scheme not in ("http", "https") or not target.host:
        shown = redaction.url(str(target))
        raise _Refused("GatewayError", f"a redirect points to {shown!r}, not an http(s) URL")
    method, content = req.method, req.content
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, content = "GET", None
    headers = dict(req.headers) if _origin(target) == first else {}
    if content is None:
        headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "content-length")}
    return replace(req, method=method, url=str(target), headers=headers, content=content)


# -- bodies ------------------------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


class _Decoder:
    """Undoes one Content-Encoding (gzip, deflate) chunk by chunk, each decompress call producing at
    most DECODE_CHUNK bytes (zlib's max_length): what is held stays near what was read, however
    far the data would inflate. httpx's decoders inflate each received chunk whole."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        # gzip: a gzip header; deflate: zlib-wrapped, or raw deflate as some servers send it.
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding != "deflate" else zlib.MAX_WBITS)
        self._first = encoding == "deflate"

    def decode(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        while data:
            try:
                piece = self._zlib.decompress(data, DECODE_CHUNK)
            except zlib.error:
                if not self._first:
                    raise
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                self._first = False
                continue
            self._first = False
            data = self._zlib.unconsumed_tail
            if piece:
                out.append(piece)
                if len(out) * DECODE_CHUNK > MAX_RESPONSE_BYTES + DECODE_CHUNK:
                    raise _TooLarge()  # only an upper bound of what one received chunk inflates to
        return out

    def flush(self) -> bytes:
        return self._zlib.flush()


def _decoders(content_encoding: str) -> list[_Decoder]:
    """Decoders for the encodings applied, last applied first; unknown ones are left as they are
    (as httpx does without the library for one)."""
    names = [e.strip().lower() for e in content_encoding.split(",") if e.strip()]
    return [_Decoder("gzip" if name == "x-gzip" else name)
            for name in reversed(names) if name in ("gzip", "x-gzip", "deflate")]


async def _read(resp: httpx.Response, limit: int) -> bytes:
    """The decoded body, refused (_TooLarge) as soon as more than `limit` bytes were decoded."""
    decoders = _decoders(resp.headers.get("content-encoding", ""))
    chunks: list[bytes] = []
    size = 0

    def take(pieces: list[bytes]) -> None:
        nonlocal size
        for piece in pieces:
            size += len(piece)
            if size > limit:
                raise _TooLarge()
            chunks.append(piece)

    def through(data: bytes, layers: list[_Decoder]) -> list[bytes]:
        pieces = [data]
        for layer in layers:
            pieces = [out for piece in pieces for out in layer.decode(piece)]
        return pieces

    try:
        raw: AsyncIterator[bytes] = resp.aiter_raw()
        async for data in raw:
            take(through(data, decoders))
        for index, layer in enumerate(decoders):
            take(through(layer.flush(), decoders[index + 1:]))
    except zlib.error as exc:
        broken = f"the response's {resp.headers.get('content-encoding')} body is broken: {exc}"
        raise httpx.DecodingError(broken, request=resp.request) from None
    return b"".join(chunks)


async def _send(
    client: Client, req: _Request, *, deadline_s: float, error_name: str
) -> tuple[int, dict[str, str], bytes]:
    def failed(detail: str) -> _Failed:
        prefix = "Error making gateway request" if error_name == "GatewayError" else "Error making AI request"
        return _Failed({"name": error_name, "message": req.secrets.scrub(f"{prefix}: {detail}")})

    shown = req.shown
    try:
        async with asyncio.timeout(max(deadline_s, 0.0)):
            first = _origin(httpx.URL(req.url))
            for _ in range(MAX_REDIRECTS + 1):
                headers = dict(req.headers)
                if not any(name.lower() == "accept-encoding" for name in headers):
                    headers["accept-encoding"] = ACCEPT_ENCODING
                request = httpx.Request(req.method, req.url, headers=headers, content=req.content)
                resp = await client.exchange(request)
                try:
                    location = resp.headers.get("location")
                    if req.follow_redirects and resp.status_code in REDIRECT_STATUSES and location:
                        req = _next_request(req, request.url, resp.status_code, location, first)
                        continue
                    try:
                        body = await _read(resp, MAX_RESPONSE_BYTES)
                    except _TooLarge:
                        message = (f"the response of {req.method} {shown} is larger than {MAX_RESPONSE_BYTES}"
                                   " bytes (4 MB), the limit of a step's output")
                        raise _Refused("OutputTooLarge", message) from None
                    return resp.status_code, _joined(resp.headers.multi_items()), body
                finally:
                    await resp.aclose()
            raise failed(f"more than {MAX_REDIRECTS} redirects")
    except TimeoutError:
        raise failed(f"no complete response within {deadline_s:g} s") from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise _Refused(error_name, req.secrets.scrub(f"{shown!r} cannot be requested: {exc}")) from None
    except httpx.HTTPError as exc:
        if refusal := egress.refusal_of(exc):
            raise _Refused("ForbiddenAddress", req.secrets.scrub(refusal)) from None
        raise failed(f"{type(exc).__name__}: {exc}") from None
    except (OSError, ValueError) as exc:
        raise failed(f"{type(exc).__name__}: {exc}") from None
