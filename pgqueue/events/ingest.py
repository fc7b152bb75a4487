"""Validate and normalise events sent to the Event API before anything is stored.

Nothing is stored unless every event of the request is valid: a request is all or nothing.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from pgqueue import ids, storable
from pgqueue.errors import InvalidInput, PayloadTooLarge
from pgqueue.events import meta
from pgqueue.models import Event

MAX_NAME_LENGTH = 512
RESERVED_PREFIX = "inngest/"
# Deeper payloads are refused: later stages (expressions, canonical JSON for signing) recurse.
MAX_DEPTH = 128
# A future `ts` schedules the event's runs for that time (pgqueue/runner/starting.py); Inngest
# accepts up to a year ahead, and so does pgqueue.
MAX_FUTURE_MS = 365 * 24 * 3600 * 1000


def unstorable(value: Any) -> str | None:
    """Why an event payload cannot be stored and matched, else None."""
    return storable.problem(value, max_depth=MAX_DEPTH)


def _reject_constant(name: str) -> Any:
    raise InvalidInput(f"request body contains {name}, which is not valid JSON")


def parse_body(body: bytes) -> Any:
    if not body.strip():
        raise InvalidInput("request body is empty: send an event object or an array of events")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None


def normalise_event(
    raw: Any, index: int, *, max_event_bytes: int, allow_reserved: bool = False
) -> dict[str, Any]:
    where = f"event {index}"
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"{where}: `name` is required and must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"{where}: `name` is longer than {MAX_NAME_LENGTH} characters")
    if name.startswith(RESERVED_PREFIX) and not allow_reserved:
        raise InvalidInput(f"{where}: event names starting with 'inngest/' are reserved for internal events")
    data = raw.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidInput(f"{where}: `data` must be a JSON object")
    user = raw.get("user")
    if user is not None and not isinstance(user, dict):
        raise InvalidInput(f"{where}: `user` must be a JSON object")
    ts = raw.get("ts")
    if ts is None or ts == 0:
        ts = int(time.time() * 1000)
    elif (
        isinstance(ts, bool)
        or not isinstance(ts, int | float)
        or (isinstance(ts, float) and not math.isfinite(ts))
        or int(ts) != ts
        or ts < 0
    ):
        raise InvalidInput(f"{where}: `ts` must be a non-negative integer timestamp in milliseconds")
    ts = int(ts)
    if ts > 2**53:
        raise InvalidInput(f"{where}: `ts` is too large for a millisecond timestamp")
    if ts > time.time() * 1000 + MAX_FUTURE_MS:
        raise InvalidInput(
            f"{where}: `ts` is more than a year in the future; a future `ts` delays the event's runs"
            " until then, by at most a year"
        )
    external_id = raw.get("id")
    if external_id == "":
        external_id = None
    if external_id is not None and not isinstance(external_id, str):
        raise InvalidInput(f"{where}: `id` must be a string")
    if external_id is not None and len(external_id) > 1024:
        raise InvalidInput(f"{where}: `id` is longer than 1024 characters")
    v = raw.get("v")
    if v is not None and not isinstance(v, str):
        raise InvalidInput(f"{where}: `v` must be a string")
    sessions = meta.resolve(raw.get("meta"), where)
    event = {"name": name, "data": data, "user": user, "ts": ts, "v": v, "external_id": external_id,
             "sessions": sessions}
    problem = unstorable(event)
    if problem:
        raise InvalidInput(f"{where} {problem}")
    size = len(json.dumps(event, ensure_ascii=False).encode())
    if size > max_event_bytes:
        raise PayloadTooLarge(f"{where} is {size} bytes; the limit is {max_event_bytes} bytes")
    return event


def parse_events(
    body: bytes,
    *,
    seed_header: str | None,
    max_event_bytes: int,
    max_events: int,
) -> list[Event]:
    parsed = parse_body(body)
    raw_events = parsed if isinstance(parsed, list) else [parsed]
    if not raw_events:
        raise InvalidInput("no events in the request: send an event object or a non-empty array")
    if len(raw_events) > max_events:
        raise PayloadTooLarge(f"{len(raw_events)} events in one request; the limit is {max_events}")
    normalised = [normalise_event(r, i, max_event_bytes=max_event_bytes) for i, r in enumerate(raw_events)]
    seed = ids.parse_event_id_seed(seed_header)
    event_ids = ids.seeded_ulids(seed, len(normalised)) if seed else [ids.new_ulid() for _ in normalised]
    return [Event(id=event_id, **fields) for event_id, fields in zip(event_ids, normalised, strict=True)]
