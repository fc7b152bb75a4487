"""The event object a function run sees (`ctx.event`, `event.*` in expressions): the stored event
row in the shape the SDKs receive."""

from __future__ import annotations

from typing import Any

from pgqueue.events import meta


def event_object(row: dict[str, Any]) -> dict[str, Any]:
    """The event as functions and expressions see it. `user` is always an object (`{}` when the
    sender gave none), as Inngest's server sends it: JS SDK middleware reads `event.user`.
    `meta.sessions` only when the event carries sessions (pgqueue/events/meta.py)."""
    ev: dict[str, Any] = {
        "id": row.get("external_id") or row["id"],
        "name": row["name"],
        "data": row["data"],
        "user": row.get("user") or {},
        "ts": row["ts"],
    }
    if row.get("v") is not None:
        ev["v"] = row["v"]
    return meta.with_meta(ev, row.get("sessions"))
