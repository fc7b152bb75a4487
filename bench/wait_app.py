"""A minimal app for the waits benchmark: every call parks its run on step.waitForEvent.

It answers exactly as an SDK does for `step.wait_for_event("approval", event="bench/resume",
if_exp="async.data.id == event.data.id", timeout="1h")`, so runs reach the production pause path.
"""

from __future__ import annotations

import json
from typing import Any

OP = json.dumps([{
    "op": "WaitForEvent",
    "id": "5d0a3a7c2ef1c0b3b1a8c6b0b4b1d9a4c2f5e6a7",
    "name": "bench/resume",
    "displayName": "approval",
    "opts": {"event": "bench/resume", "timeout": "1h", "if": "async.data.id == event.data.id"},
}]).encode()
HEADERS = [(b"content-type", b"application/json"), (b"x-inngest-sdk", b"inngest-py:v0.5.19"),
           (b"x-inngest-req-version", b"2")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while True:
        message = await receive()
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 206, "headers": HEADERS})
    await send({"type": "http.response.body", "body": OP})
