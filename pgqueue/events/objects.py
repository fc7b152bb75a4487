"""The event object a function run sees (`ctx.event`, `event.*` in expressions): the stored event
row in the shape the SDKs receive."""

from __future__ import annotations

from typing import Any


def event_object(row: dict[str, Any]) -> dict[str, Any]:
    """The event as functions and expressions see it."""
    ev: dict[str, Any] = {
        "id": row.get("external_id") or row["id"],
        "name": row["name"],
        "data": row["data"],
        "ts": row["ts"],
    }
    if row.get("user") is not None:
        ev["user"] = row["user"]
    if row.get("v") is not None:
        ev["v"] = row["v"]
    return ev
