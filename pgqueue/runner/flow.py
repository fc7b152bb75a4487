"""Flow control decided when a run is created: concurrency keys, priority, throttle parameters
(enforced at claim time by the claim function), rate limit (skips the event), debounce and batching
(one waiting run per key that later events update)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from pgqueue import expressions, ids
from pgqueue.db.pool import Conn
from pgqueue.durations import parse_duration
from pgqueue.errors import ExpressionError, InvalidInput
from pgqueue.runner.admission import key_value
from pgqueue.store import flow_control

log = logging.getLogger(__name__)

MAX_PRIORITY_S = 43_200


@dataclass(frozen=True, slots=True)
class RunShape:
    """What a new run carries into run_create_v2."""

    ckeys: list[str] = field(default_factory=list)
    climits: list[int] = field(default_factory=list)
    priority_s: int = 0
    throttle_key: str | None = None
    throttle: dict[str, Any] | None = None

    def fields(self) -> dict[str, Any]:
        return {
            "ckeys": self.ckeys,
            "climits": self.climits,
            "priority_s": self.priority_s,
            "throttle_key": self.throttle_key,
            "throttle": self.throttle,
        }


def _key(source: str | None, event: dict[str, Any], what: str, function_id: UUID) -> str:
    if not source:
        return ""
    try:
        return ids.compact_key(key_value(source, event))
    except ExpressionError as exc:
        log.warning("%s key of function %s could not be computed (%s); using the unkeyed limit", what,
                    function_id, exc.message)
        return ""


def shape(function_id: UUID, config: dict[str, Any], event: dict[str, Any]) -> RunShape:
    ckeys: list[str] = []
    climits: list[int] = []
    for entry in config.get("concurrency") or []:
        limit = int(entry.get("limit") or 0)
        if limit <= 0:
            continue
        value = _key(entry.get("key"), event, "concurrency", function_id)
        scope = entry.get("scope", "fn")
        prefix = f"fn:{function_id}" if scope == "fn" else scope
        if entry.get("key"):
            # Keys of env/account scope are shared by every function using the same expression.
            expr_id = hashlib.sha1(entry["key"].encode()).hexdigest()[:12] if scope != "fn" else "k"
            ckeys.append(f"{prefix}:{expr_id}:{value}")
        else:
            ckeys.append(prefix)
        climits.append(limit)
    priority_s = 0
    run_expr = (config.get("priority") or {}).get("run")
    if run_expr:
        try:
            value = expressions.compile(run_expr).evaluate({"event": event})
            if isinstance(value, int | float) and not isinstance(value, bool):
                priority_s = max(-MAX_PRIORITY_S, min(MAX_PRIORITY_S, int(value)))
        except ExpressionError as exc:
            log.warning("priority of function %s could not be computed: %s", function_id, exc.message)
    throttle_key = None
    throttle = None
    cfg = config.get("throttle")
    if cfg and int(cfg.get("limit") or 0) > 0:
        throttle_key = f"throttle:{function_id}:{_key(cfg.get('key'), event, 'throttle', function_id)}"
        throttle = {
            "limit": int(cfg["limit"]),
            "period_ms": int(parse_duration(cfg["period"]) * 1000),
            "burst": int(cfg.get("burst") or 1),
        }
    return RunShape(ckeys, climits, priority_s, throttle_key, throttle)


async def rate_limited(
    conn: Conn, function_id: UUID, config: dict[str, Any], event: dict[str, Any]
) -> str | None:
    """The skip reason when the function's rate limit refuses this event, else None."""
    cfg = config.get("rateLimit")
    if not cfg or int(cfg.get("limit") or 0) <= 0:
        return None
    key = f"ratelimit:{function_id}:{_key(cfg.get('key'), event, 'rateLimit', function_id)}"
    period_ms = int(parse_duration(cfg["period"]) * 1000)
    if await flow_control.rate_limit_admit(conn, key, int(cfg["limit"]), period_ms):
        return None
    return f"skipped: rate limit of {cfg['limit']} per {cfg['period']} reached"


@dataclass(frozen=True, slots=True)
class Deferred:
    """Debounce/batch outcome: either a run already waiting absorbed the event (run_id set, nothing
    to create), or a new waiting run must be created with this delay."""

    absorbed_by: str | None
    delay_s: float = 0.0
    batch_key: str | None = None
    debounce_key: str | None = None
    superseded_event: str | None = None


async def debounce(
    conn: Conn, function_id: UUID, config: dict[str, Any], event_id: str, event: dict[str, Any], run: RunShape
) -> Deferred | None:
    """A waiting run of the key takes the event and everything computed from it (`run`: keys,
    priority, throttle); otherwise a new waiting run must be created."""
    cfg = config.get("debounce")
    if not cfg:
        return None
    try:
        period = parse_duration(cfg["period"])
        timeout = parse_duration(cfg["timeout"]) if cfg.get("timeout") else None
    except InvalidInput as exc:
        log.warning("debounce of %s is invalid: %s", function_id, exc.message)
        return None
    key = _key(cfg.get("key"), event, "debounce", function_id)
    updated = await flow_control.debounce_push(conn, function_id, key, event_id, period, timeout, run.fields())
    if updated is not None:
        return Deferred(absorbed_by=updated["run_id"], superseded_event=updated["previous_event_id"])
    return Deferred(absorbed_by=None, delay_s=period, debounce_key=key)


async def batch(
    conn: Conn, function_id: UUID, config: dict[str, Any], event_id: str, event: dict[str, Any]
) -> Deferred | None:
    cfg = config.get("batchEvents")
    if not cfg:
        return None
    condition = cfg.get("if")
    if condition:
        try:
            if not expressions.truthy(expressions.compile(condition).evaluate({"event": event})):
                return None  # not batched: runs on its own, now
        except ExpressionError:
            return None
    max_size = max(1, int(cfg.get("maxSize") or 1))
    timeout = parse_duration(cfg["timeout"])
    key = _key(cfg.get("key"), event, "batch", function_id)
    appended = await flow_control.batch_append(conn, function_id, key, event_id, max_size)
    if appended is not None:
        return Deferred(absorbed_by=appended)
    return Deferred(absorbed_by=None, delay_s=0.0 if max_size <= 1 else timeout, batch_key=key)
