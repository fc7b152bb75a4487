"""Event meta: the sessions an event carries (the JS SDK 4.x's `meta`), resolved into the one map
stored with the event and sent back as `meta.sessions` on every event a run sees.

An event may carry two layers, as Inngest's server reads them:
- `meta.sessions`, set by the user, with RFC 7386 merge-patch semantics against the inherited
  layer: a `null` value cuts that inherited key, a whole-field `null` clears every inherited key;
- `meta.propagated_sessions`, stamped by the SDK from the sending run's `ctx.sessions`
  (step.sendEvent, step.invoke, a send inside a run); no nulls.
They are merged once, at ingest: user keys always win and are never evicted, the remaining slots
up to MAX_SESSIONS are filled from the inherited layer in UTF-8 byte order of their keys (Go's
string order, which the SDKs mirror), and the result must hold at most MAX_SESSIONS sessions.
The SDK computes `ctx.sessions` itself, as the intersection of its events' `meta.sessions`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pgqueue.errors import InvalidInput

MAX_SESSIONS = 5  # Inngest's consts.MaxEventSessions (the JS SDK's MAX_EVENT_SESSIONS)
# pgqueue's bounds (Inngest's server has its own, not published): keys and ids are index-sized labels.
MAX_KEY_BYTES = 256
MAX_ID_BYTES = 1024
# The propagated layer's spellings: the SDKs send snake_case; Inngest's Go type names it camelCase.
PROPAGATED_FIELDS = ("propagated_sessions", "propagatedSessions")

# A per-key null (tombstone) in the user layer.
_CUT = None


def _session_id(where: str, key: str, value: Any) -> str:
    """A session id as a string: strings as they are, finite numbers as JSON writes them."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidInput(f"{where}: session {key!r} must be a string or a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{where}: session {key!r} must be a finite number")
        text = json.dumps(int(value) if value.is_integer() and abs(value) < 2**53 else value)
    else:
        text = value if isinstance(value, str) else str(value)
    if not text:
        raise InvalidInput(f"{where}: session {key!r} cannot have an empty id")
    if len(text.encode()) > MAX_ID_BYTES:
        raise InvalidInput(f"{where}: the id of session {key!r} is longer than {MAX_ID_BYTES} bytes")
    return text


def _layer(where: str, raw: Any, *, tombstones: bool) -> dict[str, str | None]:
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} must be an object of session keys to ids")
    out: dict[str, str | None] = {}
    for key, value in raw.items():
        if not key:
            raise InvalidInput(f"{where}: session keys cannot be empty")
        if len(key.encode()) > MAX_KEY_BYTES:
            raise InvalidInput(f"{where}: session key {key[:40]!r}... is longer than {MAX_KEY_BYTES} bytes")
        if value is None:
            if not tombstones:
                raise InvalidInput(f"{where}: session {key!r} must be a string or a number (null only cuts "
                                   "an inherited session in meta.sessions)")
            out[key] = _CUT
        else:
            out[key] = _session_id(where, key, value)
    return out


def resolve(meta: Any, where: str) -> dict[str, str] | None:
    """The sessions of an event from its `meta` (None: the event has none). Raises InvalidInput."""
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise InvalidInput(f"{where}: `meta` must be a JSON object")
    inherited: dict[str, str] = {}
    for field in PROPAGATED_FIELDS:
        raw = meta.get(field)
        if raw is not None:
            layer = _layer(f"{where}: meta.{field}", raw, tombstones=False)
            inherited.update({k: v for k, v in layer.items() if v is not None})
    manual: dict[str, str] = {}
    if "sessions" in meta:
        raw = meta["sessions"]
        if raw is None:
            inherited = {}  # whole-field null: clear everything inherited
        else:
            for key, value in _layer(f"{where}: meta.sessions", raw, tombstones=True).items():
                if value is None:
                    inherited.pop(key, None)  # a per-key null cuts the inherited key
                else:
                    manual[key] = value
    if len(manual) > MAX_SESSIONS:
        raise InvalidInput(f"{where}: an event carries at most {MAX_SESSIONS} sessions "
                           f"(meta.sessions has {len(manual)})")
    merged = dict(manual)
    for key in sorted((k for k in inherited if k not in manual), key=lambda k: k.encode()):
        if len(merged) >= MAX_SESSIONS:
            break
        merged[key] = inherited[key]
    return merged or None


def with_meta(event: dict[str, Any], sessions: dict[str, Any] | None) -> dict[str, Any]:
    """`event` (an event object a run sees) with `meta.sessions` when the event has sessions."""
    if sessions:
        event["meta"] = {"sessions": sessions}
    return event
