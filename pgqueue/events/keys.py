"""Event keys kept in the database: their form, and the event-name filters that limit what a key
may send (Inngest's event key filters, as an allow list)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from pgqueue.errors import Forbidden, InvalidInput
from pgqueue.events.ingest import MAX_NAME_LENGTH

KEY_PREFIX = "evk_"
MAX_FILTERS = 100


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def event_names(raw: Any) -> list[str] | None:
    """A filter as given to the API: null (any event) or a list of names, where a name ending in
    `*` right after `/` or `.` is a prefix (`shop/*`, `shop/order.*`), as trigger wildcards are."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or len(raw) > MAX_FILTERS:
        raise InvalidInput(
            f"`event_names` must be null (any event) or a list of 1 to {MAX_FILTERS} event names"
        )
    out: list[str] = []
    for name in raw:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
            raise InvalidInput(
                f"`event_names` holds event names (strings of 1 to {MAX_NAME_LENGTH} characters)"
            )
        name = name.strip()
        if "*" in name and not (name.endswith(("/*", ".*")) and name.count("*") == 1):
            raise InvalidInput(
                f"`event_names`: {name!r} may only end in a wildcard after / or . (like shop/*)"
            )
        out.append(name)
    return out


def name_allowed(patterns: Sequence[str], name: str) -> bool:
    return any(name == p or (p.endswith("*") and name.startswith(p[:-1])) for p in patterns)


def check_names(key: dict[str, Any], names: Sequence[str]) -> None:
    """Refuse (403) a request with an event the key may not send; nothing of it is stored."""
    patterns = key.get("event_names")
    if patterns is None:
        return
    for index, name in enumerate(names):
        if not name_allowed(patterns, name):
            raise Forbidden(
                f"event {index}: event key {key['name']!r} may not send {name!r}; it may send"
                f" {', '.join(patterns)}"
            )
