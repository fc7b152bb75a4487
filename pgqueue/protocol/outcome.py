"""Turn an SDK's HTTP answer into one value of the closed Outcome union.

The executor never interprets a response anywhere else: invoke.py produces a `Response`, this
module decides what it means, apply.py applies it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from pgqueue.durations import parse_instant

# An SDK's Retry-After is clamped to this range.
RETRY_AFTER_MIN_S = 1.0
RETRY_AFTER_MAX_S = 86400.0


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass(frozen=True, slots=True)
class Op:
    op: str
    id: str
    name: str | None = None
    display_name: str | None = None
    opts: dict[str, Any] = field(default_factory=dict)
    data: Any = None
    has_data: bool = False
    error: Any = None
    # The run/step metadata the op carries (JS SDK 4.x: [{kind, scope, op, values}]), as sent;
    # pgqueue/runs/metadata.py reads it. None when absent.
    metadata: Any = None

    @property
    def label(self) -> str:
        return self.display_name or self.name or self.id


@dataclass(frozen=True, slots=True)
class RunDone:
    output: Any
    request_version: int | None


@dataclass(frozen=True, slots=True)
class Ops:
    ops: tuple[Op, ...]
    request_version: int | None
    no_retry: bool
    retry_after_s: float | None


@dataclass(frozen=True, slots=True)
class CallError:
    """A function-level failure (or a transport failure). `retriable` False = fail the run now."""

    error: dict[str, Any]
    retriable: bool
    retry_after_s: float | None = None
    status_code: int | None = None
    request_version: int | None = None


Outcome = RunDone | Ops | CallError


def transport_error(message: str, *, name: str = "ConnectionError") -> CallError:
    return CallError({"name": name, "message": message}, retriable=True)


def _invalid(message: str, status: int, version: int | None = None) -> CallError:
    """An answer that is not the protocol: retried, the SDK may answer properly next time."""
    return CallError({"name": "InvalidResponse", "message": message}, retriable=True, status_code=status,
                     request_version=version)


def _req_version(headers: dict[str, str]) -> int | None:
    raw = headers.get("x-inngest-req-version")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def _error_object(body: bytes, status: int) -> dict[str, Any]:
    text = body.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text) if text.strip() else None
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict):
        err = dict(parsed)
        err.setdefault("name", "Error")
        if "message" not in err:
            err["message"] = str(err.get("error") or f"function returned HTTP {status}")
        return err
    if isinstance(parsed, str):
        return {"name": "Error", "message": parsed}
    snippet = text[:500]
    return {"name": "Error", "message": f"HTTP {status}: {snippet}" if snippet else f"HTTP {status}"}


def is_stream(resp: Response) -> bool:
    return resp.status == 201 and "x-inngest-sdk" in resp.headers


def stream_envelope(resp: Response) -> Response | None:
    """201 = streaming envelope: keep-alive spaces, then {"status", "headers", "body": "<json string>"}.
    The answer inside it (its own headers only), or None if the envelope is broken."""
    text = resp.body.decode("utf-8", errors="replace").strip()
    try:
        envelope = json.loads(text)
        status = int(envelope["status"])
        headers = {str(k).lower(): str(v) for k, v in (envelope.get("headers") or {}).items()}
        body = envelope.get("body")
        if not isinstance(body, str):
            body = json.dumps(body)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    # The inner body is JSON text; a lone surrogate in it stays escaped, so it is caught downstream
    # like one sent directly, instead of failing to encode here.
    return Response(status, headers, body.encode("utf-8", "backslashreplace"))


def _unwrap_stream(resp: Response) -> Response | CallError:
    inner = stream_envelope(resp)
    if inner is None:
        return _invalid("the SDK's streaming response ended without a valid envelope", 201)
    return Response(inner.status, {**resp.headers, **inner.headers}, inner.body)


def parse_op(raw: Any) -> Op | None:
    """One opcode of an SDK's answer (or of a checkpoint); None when it is not an opcode."""
    if not isinstance(raw, dict):
        return None
    op = raw.get("op")
    if not isinstance(op, str):
        return None
    if op == "SyncRunComplete":
        op = "RunComplete"  # Inngest's name for the return value of a durable endpoint's run
    opts = raw.get("opts")
    return Op(
        op=op,
        id=str(raw.get("id") or ""),
        name=raw.get("name") if isinstance(raw.get("name"), str) else None,
        display_name=raw.get("displayName") if isinstance(raw.get("displayName"), str) else None,
        opts=opts if isinstance(opts, dict) else {},
        data=raw.get("data"),
        has_data="data" in raw,
        error=raw.get("error"),
        metadata=raw.get("metadata"),
    )


def parse(resp: Response) -> Outcome:
    if is_stream(resp):
        unwrapped = _unwrap_stream(resp)
        if isinstance(unwrapped, CallError):
            return unwrapped
        resp = unwrapped

    version = _req_version(resp.headers)
    no_retry = resp.headers.get("x-inngest-no-retry", "").lower() == "true"
    retry_after = retry_after_s(resp.headers.get("retry-after"))

    if resp.status == 200:
        if not resp.body.strip():
            return RunDone(None, version)
        try:
            return RunDone(json.loads(resp.body), version)
        except (ValueError, RecursionError):
            return _invalid("the function answered 200 with a body that is not JSON", 200, version)

    if resp.status == 206:
        try:
            parsed = json.loads(resp.body) if resp.body.strip() else []
        except (ValueError, RecursionError):
            parsed = None
        raw_ops = [parsed] if isinstance(parsed, dict) else parsed
        if not isinstance(raw_ops, list):
            message = "the function answered 206 with a body that is not a list of opcodes"
            return _invalid(message, 206, version)
        ops = []
        for raw in raw_ops:
            op = parse_op(raw)
            if op is None:
                return _invalid(f"malformed opcode in 206 response: {str(raw)[:200]}", 206, version)
            ops.append(op)
        return Ops(tuple(ops), version, no_retry, retry_after)

    error = _error_object(resp.body, resp.status)
    if "x-inngest-no-retry" in resp.headers:
        retriable = not no_retry
    else:
        # Not from the SDK (proxy, gateway, crash) or an SDK error without a verdict: retry.
        retriable = True
    return CallError(error, retriable=retriable, retry_after_s=retry_after, status_code=resp.status,
                     request_version=version)


def retry_after_s(header: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds, ISO-8601 or RFC 1123), clamped 1 s..24 h."""
    if not header:
        return None
    value = header.strip()
    seconds: float | None = None
    if value.isdigit() and len(value) <= 7:
        seconds = float(value)
    else:
        when = parse_instant(value)
        if when is None:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, RETRY_AFTER_MIN_S), RETRY_AFTER_MAX_S)
