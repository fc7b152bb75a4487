"""Match an event to the functions it triggers: name (exact or wildcard prefix), then `expression`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from pgqueue import expressions
from pgqueue.errors import ExpressionError

log = logging.getLogger(__name__)


def name_matches(name: str, trigger: dict[str, Any]) -> bool:
    if trigger["event_name"] is not None:
        return bool(trigger["event_name"] == name)
    prefix = trigger["name_prefix"]
    return prefix is not None and name.startswith(prefix)


def matching_functions(event: dict[str, Any], candidates: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Candidates (trigger rows) whose trigger fires for this event, one per function."""
    matched: dict[UUID, dict[str, Any]] = {}
    for trig in candidates:
        if trig["function_id"] in matched or not name_matches(event["name"], trig):
            continue
        source = trig["expression"]
        if source:
            try:
                result = expressions.compile(source).evaluate({"event": event})
            except ExpressionError as exc:
                log.warning(
                    "trigger expression of %s failed for event %s: %s", trig["slug"], event["id"], exc
                )
                continue
            if not expressions.truthy(result):
                continue
        matched[trig["function_id"]] = trig
    return list(matched.values())
