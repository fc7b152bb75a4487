"""A webhook delivery before anything is stored: the request as the transform sees it (Inngest's
`transform(evt, headers, queryParams, raw)`) and the transform's result as events, validated
exactly as `POST /e` validates events (pgqueue/events/ingest.py).

What the transform gets, as Inngest passes it:
- `evt`: the JSON body (any JSON value); for `application/x-www-form-urlencoded` an object whose
  values are arrays of strings (`name=Alice&m=a&m=b` → `{"name": ["Alice"], "m": ["a", "b"]}`);
  for any other body that is not JSON, `null` (read `raw`); for an empty body, `{}`.
- `headers`: canonical names (`X-Hub-Signature-256`, `Stripe-Signature`) to values, repeated
  headers joined with ", ".
- `queryParams`: names to arrays of values.
- `raw`: the body as a string (UTF-8).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

from pgqueue import ids
from pgqueue.errors import InvalidInput, PayloadTooLarge
from pgqueue.events import ingest
from pgqueue.events.transforms import TransformFailed
from pgqueue.models import Event

KEY_PREFIX = "whk_"  # a webhook's key: the last segment of its URL, /e/whk_...
FORM = "application/x-www-form-urlencoded"
# Not kept with a failed delivery (its headers are kept for a re-delivery): credentials.
REDACTED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def canonical_header(name: str) -> str:
    """Go's canonical MIME header form, which Inngest's transforms see: `x-hub-signature-256` →
    `X-Hub-Signature-256`."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def header_object(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in pairs:
        key = canonical_header(name)
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def query_object(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name, []).append(value)
    return out


def kept_headers(headers: dict[str, str]) -> dict[str, str]:
    """Headers as stored with a delivery: credentials replaced."""
    return {k: ("[redacted]" if k.lower() in REDACTED_HEADERS else v) for k, v in headers.items()}


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def transform_inputs(
    body: bytes, content_type: str | None, headers: dict[str, str], query: dict[str, list[str]]
) -> dict[str, Any]:
    """The four arguments of the transform, as one JSON object (evt, headers, query, raw)."""
    try:
        raw = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the delivery's body is not UTF-8 text") from None
    media = _media_type(content_type)
    evt: Any
    if not raw.strip():
        evt = {}
    elif media == FORM:
        evt = {k: v for k, v in parse_qs(raw, keep_blank_values=True).items()}
    else:
        try:
            evt = ingest.parse_body(body)
        except InvalidInput:
            if media == "application/json" or media.endswith("+json"):
                raise InvalidInput(
                    "the delivery's body is not valid JSON (its Content-Type says JSON)"
                ) from None
            evt = None  # XML, plain text...: the transform reads `raw`
    problem = ingest.unstorable(evt)
    if problem:
        raise InvalidInput(f"the delivery's body {problem}")
    return {"evt": evt, "headers": headers, "query": query, "raw": raw}


def events_from(result: Any, *, max_event_bytes: int, max_events: int) -> list[Event]:
    """The transform's result as events: one event object or an array of them (an empty array
    stores nothing), each validated as POST /e validates it. Anything else is TransformFailed."""
    items = result if isinstance(result, list) else [result]
    if not isinstance(result, list | dict):
        kind = "null" if result is None else type(result).__name__
        raise TransformFailed(
            f"the transform returned {kind}: return an event {{name, data}} or an array of events"
        )
    if len(items) > max_events:
        raise PayloadTooLarge(f"the transform returned {len(items)} events; the limit is {max_events}")
    try:
        normalised = [
            ingest.normalise_event(r, i, max_event_bytes=max_event_bytes) for i, r in enumerate(items)
        ]
    except PayloadTooLarge as exc:
        raise PayloadTooLarge(f"the transform's {exc.message}") from None
    except InvalidInput as exc:
        raise TransformFailed(f"the transform's {exc.message}") from None
    return [Event(id=ids.new_ulid(), **fields) for fields in normalised]


def describe(result: Any, limit: int = 300) -> str:
    text = json.dumps(result, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
