"""Decide whether a matched event starts a run: idempotency keys and singletons.

Keys are CEL expressions over the triggering event; a key that cannot be computed starts no run
(and says why on the event). Values are stored compacted (ids.compact_key), so a key of any size
fits the tables' btree indexes. Claims are SQL functions (idempotency_claim_v1, singleton_claim_v1)
so concurrent runners agree.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from pgqueue import expressions, ids
from pgqueue.db.pool import Conn
from pgqueue.errors import ExpressionError
from pgqueue.runs import transitions
from pgqueue.store import runs

log = logging.getLogger(__name__)


def key_value(source: str, event: dict[str, Any]) -> str:
    """The string form of a key expression's value (raises ExpressionError)."""
    value = expressions.compile(source).evaluate({"event": event})
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def needs_admission(config: dict[str, Any]) -> bool:
    return bool(config.get("idempotency") or config.get("singleton"))


async def admit(
    conn: Conn, function_id: UUID, config: dict[str, Any], run_id: str, event: dict[str, Any], *,
    idempotency: bool = True,
) -> str | None:
    """None when the run may start, else the reason it does not. `idempotency=False` (replays)
    applies the singleton only."""
    idem = config.get("idempotency") if idempotency else None
    if idem:
        try:
            key = ids.compact_key(key_value(idem, event))
        except ExpressionError as exc:
            log.warning("idempotency key of %s could not be computed: %s", function_id, exc)
            return f"idempotency key could not be computed: {exc.message}"
        if not await runs.idempotency_claim(conn, function_id, key, run_id):
            return "skipped: a run with the same idempotency key started in the last 24 hours"
    singleton = config.get("singleton")
    if singleton:
        try:
            key = ids.compact_key(key_value(singleton["key"], event)) if singleton.get("key") else ""
        except ExpressionError as exc:
            return f"singleton key could not be computed: {exc.message}"
        holder = await runs.singleton_claim(conn, function_id, key, run_id)
        if holder is not None:
            if singleton.get("mode") == "cancel":
                locked = await runs.lock(conn, holder)
                if locked is not None and locked["status"] in ("queued", "running"):
                    await transitions.cancel(
                        conn, holder, reason="cancelled by a newer run of a singleton function")
                await runs.singleton_take(conn, function_id, key, run_id)
            else:
                return "skipped: singleton function already has an active run for this key"
    return None
