"""Turn a wait/cancel/invoke condition into a storable pause: substitute the run's `event.*`
values as typed literals (never spliced into text), and pick one equality literal to index."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from pgqueue import expressions
from pgqueue.errors import ExpressionError

log = logging.getLogger(__name__)
# UTF-8 bytes of the indexed path and value together. With an event name of at most 512
# characters (2,048 bytes) the entry (event_name, match_path, match_value) stays under a btree
# entry's limit of about 2,700 bytes; a longer value is matched by evaluation instead.
MAX_INDEXED_BYTES = 512
MAX_EVENT_NAME_LENGTH = 512  # as for events (pgqueue.events.ingest) and synced triggers


@dataclass(frozen=True, slots=True)
class PauseSpec:
    expression: str | None
    trigger_event: dict[str, Any] | None  # kept only when substitution could not be stored
    match_path: str | None
    match_value: Any


def build(if_expr: str | None, trigger_event: dict[str, Any]) -> PauseSpec:
    """Raises ExpressionError (syntax) for an invalid expression."""
    if not if_expr:
        return PauseSpec(None, None, None, None)
    program = expressions.compile(if_expr)
    if "event" in program.references():
        program = program.substitute("event", trigger_event)
    try:
        stored = expressions.compile(program.source).source
        keep_event = None
    except ExpressionError:
        # Substituted literals made the text too long to re-parse: keep the original expression
        # and the trigger event instead (evaluated with both at match time).
        stored, keep_event = if_expr, trigger_event
        program = expressions.compile(if_expr)
    path, value = None, None
    for candidate_path, literal in program.equality_literals("async"):
        # null never indexes: two missing fields must not pair every event with every pause.
        # Long values stay out of the btree (its entries are limited to ~2.7 kB).
        if (
            literal is not None
            and isinstance(literal, str | int | float | bool)
            and _indexed_size(candidate_path, literal) <= MAX_INDEXED_BYTES
        ):
            path, value = candidate_path, literal
            break
    if path is None:
        log.info("pause expression %r cannot use the index; it is evaluated for every %s", if_expr, "event")
    return PauseSpec(stored, keep_event, path, value)


def _indexed_size(path: str, literal: Any) -> int:
    return len(path.encode()) + len(json.dumps(literal, ensure_ascii=False).encode())


def lookup(event: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of an event (None when missing)."""
    value: Any = event
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def matches(pause: dict[str, Any], incoming: dict[str, Any]) -> bool:
    source = pause["expression"]
    if not source:
        return True
    variables: dict[str, Any] = {"async": incoming}
    if pause.get("trigger_event") is not None:
        variables["event"] = pause["trigger_event"]
    try:
        return expressions.truthy(expressions.compile(source).evaluate(variables))
    except ExpressionError as exc:
        log.warning("pause %s expression failed for event %s: %s", pause["id"], incoming.get("id"), exc)
        return False
