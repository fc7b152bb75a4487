"""Realtime subscribers for tests: a WebSocket client that records what it receives (and when), an
SSE reader, and a subscriber that completes the WebSocket handshake and then never reads again."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect


@dataclass
class Received:
    messages: list[Any] = field(default_factory=list)
    at: list[float] = field(default_factory=list)  # time.time() of each
    closed: tuple[int | None, str] | None = None

    def data(self) -> list[Any]:
        return [m.get("data") if isinstance(m, dict) else m for m in self.messages]

    async def wait_for(self, count: int, timeout: float = 15) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"received {len(self.messages)} of {count} messages: {self.messages[-3:]}")
            await asyncio.sleep(0.01)
        return self.messages


def ws_url(base: str, token: str) -> str:
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}/v1/realtime/connect?token={quote(token)}"


@contextlib.asynccontextmanager
async def subscribed(base: str, token: str, *, raw: bool = False, **kwargs: Any) -> AsyncIterator[Received]:
    """A WebSocket subscriber for the duration of the block; messages parsed as JSON unless `raw`."""
    got = Received()
    async with connect(ws_url(base, token), open_timeout=10, **kwargs) as ws:

        async def read(conn: ClientConnection) -> None:
            try:
                async for frame in conn:
                    got.messages.append(frame if raw else json.loads(frame))
                    got.at.append(time.time())
            finally:
                if conn.close_code is not None:
                    got.closed = (conn.close_code, conn.close_reason)

        reader = asyncio.create_task(read(ws))
        try:
            yield got
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader


async def token(client: httpx.AsyncClient, channel: str, topics: list[str], **headers: str) -> str:
    body = [{"channel": channel, "name": t, "kind": "run"} for t in topics]
    r = await client.post("/v1/realtime/token", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["jwt"])


async def publish(
    client: httpx.AsyncClient, channel: str, topic: str, data: Any, **params: str
) -> dict[str, Any]:
    r = await client.post("/v1/realtime/publish", params={"channel": channel, "topic": topic, **params},
                          content=json.dumps(data), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


class StuckSubscriber:
    """A WebSocket (or SSE) client that completes the handshake (reads the response head) and then
    stops reading: the server's writes back up into the socket buffers and then into the server's own
    buffer for it."""

    def __init__(self, base: str, token: str, *, sse: bool = False) -> None:
        parts = urlsplit(base)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # a small receive window, set before connecting so the peer sees it from the start
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
        key = base64.b64encode(os.urandom(16)).decode()
        if sse:
            request = (f"GET /v1/realtime/sse?token={quote(token)} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                       "Accept: text/event-stream\r\n\r\n")
        else:
            request = (f"GET /v1/realtime/connect?token={quote(token)} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                       f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError(f"closed during the handshake: {head!r}")
            head += chunk
        self.status = head.split(b" ", 2)[1].decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


async def sse_events(client: httpx.AsyncClient, token: str, into: list[str], *, raw: bool = False,
                     headers: dict[str, str] | None = None) -> None:
    """Read `/v1/realtime/sse` until cancelled: each `data:` payload (or with `raw`, the text as it
    came) appended to `into`."""
    async with client.stream("GET", "/v1/realtime/sse", params={"token": token}, headers=headers or {},
                             timeout=None) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        if raw:
            async for text in r.aiter_text():
                into.append(text)
            return
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                into.append(line[6:])
            elif line.startswith("id: "):
                into.append(line)
