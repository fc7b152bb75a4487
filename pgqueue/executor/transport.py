"""A lean HTTP/1.1 transport under httpx for every request pgqueue makes to apps (calls, syncs,
step.fetch): O(1) bookkeeping per request, every connection made through the egress policy.

Why not httpcore's pool: it walks every pooled connection twice per request (when the request is
queued and when its response closes) and asks each idle one whether its socket is readable through
anyio's attribute machinery and a poll(2). With the worker's 64 calls in flight that walk was a
third of the executor's CPU; here a request takes the most recently used idle connection of its
origin (one deque pop) and the event loop, which keeps reading idle sockets, has already seen a
server's close (EOF).

Semantics kept from httpx/httpcore: keep-alive with an idle expiry, `Connection: close`, bodies by
Content-Length, chunked or until EOF, no body for HEAD/204/304, informational (1xx) answers
skipped, httpx's exception types (ConnectError, ConnectTimeout, ReadTimeout, WriteTimeout,
ReadError, WriteError, RemoteProtocolError) so callers map failures as before, and the egress
refusal as the cause of the ConnectError (`egress.refusal_of`). Response bodies are streamed, so a
caller's size limit stops reading early. No HTTP/2, no proxies (app calls use neither).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httpcore
import httpx

from pgqueue.executor import egress

READ_CHUNK = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024  # status line and headers of one response
_NO_BODY_STATUS = frozenset({204, 304})

Origin = tuple[str, str, int]


MAX_PARSED_URLS = 4096


class AppClient(httpx.AsyncClient):
    """httpx's client over an AppTransport (no redirects, nothing from the environment), whose
    `call` sends straight to the transport: the executor's calls skip the client's cookie, auth and
    redirect layers, half of what a call cost in httpx after the pool itself."""

    def __init__(self, transport: AppTransport, *, timeout: httpx.Timeout) -> None:
        super().__init__(follow_redirects=False, timeout=timeout, transport=transport, trust_env=False)
        self._app_transport = transport
        self._timeouts = timeout.as_dict()
        # Parsed call URLs: a function's URL with each of its step ids, the same for every run.
        # Parsing one in httpx costs twice the rest of building the request.
        self._urls: dict[str, httpx.URL] = {}

    async def exchange(self, request: httpx.Request) -> httpx.Response:
        """Send `request` as it is, straight to the transport: no cookie jar (a cookie one fetch
        received is never sent with another), no auth from the URL, no redirects (the caller
        decides, pgqueue/executor/gateway.py). The response streams; the caller closes it."""
        request.extensions.setdefault("timeout", self._timeouts)
        response = await self._app_transport.handle_async_request(request)
        response.request = request
        return response

    @contextlib.asynccontextmanager
    async def call(self, url: str, body: bytes, headers: dict[str, str], *,
                   method: str = "POST") -> AsyncIterator[httpx.Response]:
        """POST `body` to `url` (or `method`: a durable endpoint's); the response streams until the
        block ends."""
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= MAX_PARSED_URLS:
                self._urls.clear()
            parsed = self._urls[url] = httpx.URL(url)
        request = httpx.Request(method, parsed, content=body, headers=headers,
                                extensions={"timeout": self._timeouts})
        response = await self._app_transport.handle_async_request(request)
        try:
            yield response
        finally:
            await response.aclose()


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class AppTransport(httpx.AsyncBaseTransport):
    def __init__(self, policy: egress.Policy, *, keepalive_expiry_s: float = 2.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """ssl_context: httpx's default (certifi's CAs, verified) unless given."""
        self.policy = policy
        self.keepalive_expiry_s = keepalive_expiry_s
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._ssl = ssl_context

    # -- pool ------------------------------------------------------------------------------
    def _checkout(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        horizon = time.monotonic() - self.keepalive_expiry_s
        while idle:
            conn = idle.pop()  # the most recently used: the likeliest to be alive and warm
            if conn.idle_since >= horizon and conn.usable():
                return conn
            conn.close()
        return None

    def _checkin(self, origin: Origin, conn: _Connection) -> None:
        now = time.monotonic()
        conn.idle_since = now
        idle = self._idle.setdefault(origin, deque())
        idle.append(conn)
        horizon = now - self.keepalive_expiry_s
        while idle[0].idle_since < horizon:  # the oldest expired ones, so idle deques stay small
            idle.popleft().close()

    async def _connect(self, scheme: str, host: str, port: int, timeout: float | None) -> _Connection:
        try:
            addresses = await egress.resolve(host, port, timeout)
            refusal = egress.first_refusal(self.policy, host, addresses)
            if refusal is not None:
                raise egress.ForbiddenAddress(refusal.message(host))
            tls = self._ssl_context() if scheme == "https" else None
            async with asyncio.timeout(timeout):
                # The address that was checked, not a second resolution of the name.
                reader, writer = await asyncio.open_connection(
                    addresses[0], port, ssl=tls, server_hostname=host if tls else None, limit=MAX_HEAD_BYTES)
        except egress.ForbiddenAddress as exc:
            raise httpx.ConnectError(str(exc)) from exc
        except httpcore.ConnectTimeout as exc:
            raise httpx.ConnectTimeout(str(exc)) from exc
        except httpcore.ConnectError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} took longer than {timeout} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        return _Connection(reader, writer)

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    # -- one request -----------------------------------------------------------------------
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"the URL scheme {url.scheme!r} is not supported (http or https)")
        host = url.raw_host.decode("ascii")
        if not host:
            raise httpx.UnsupportedProtocol(f"the URL {url} has no host")
        port = url.port or (443 if url.scheme == "https" else 80)
        origin = (url.scheme, host, port)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        head = _request_head(request, body)

        conn = self._checkout(origin)
        if conn is None:
            conn = await self._connect(url.scheme, host, port, timeouts.get("connect"))
        try:
            await _write(conn, head + body if len(body) < READ_CHUNK else head, timeouts.get("write"))
            if len(body) >= READ_CHUNK:
                await _write(conn, body, timeouts.get("write"))
            status, reason, headers, framing = await _read_head(conn, request.method, timeouts.get("read"))
        except BaseException:
            conn.close()
            raise
        stream = _Body(self, origin, conn, framing, timeouts.get("read"))
        return httpx.Response(status, headers=headers, stream=stream,
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason})

    async def aclose(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
        self._idle.clear()


def _request_head(request: httpx.Request, body: bytes) -> bytes:
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)]
    chunked = False
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            chunked = True  # a streamed body was read whole above: sent with a length instead
            continue
        if lowered == b"content-length":
            continue
        lines.append(b"%s: %s\r\n" % (name, value))
    if body or chunked or request.method not in ("GET", "HEAD", "OPTIONS", "DELETE"):
        lines.append(b"Content-Length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    return b"".join(lines)


async def _write(conn: _Connection, data: bytes, timeout: float | None) -> None:
    try:
        conn.writer.write(data)
        if conn.writer.transport.get_write_buffer_size() > 0:
            async with asyncio.timeout(timeout):
                await conn.writer.drain()
    except TimeoutError as exc:
        raise httpx.WriteTimeout(f"sending the request took longer than {timeout} s") from exc
    except (OSError, RuntimeError) as exc:
        raise httpx.WriteError(f"{type(exc).__name__}: {exc}") from exc


async def _read(coro: Any, timeout: float | None) -> Any:
    try:
        if timeout is None:
            return await coro
        async with asyncio.timeout(timeout):
            return await coro
    except TimeoutError as exc:
        raise httpx.ReadTimeout(f"no data from the server within {timeout} s") from exc
    except asyncio.IncompleteReadError as exc:
        raise httpx.RemoteProtocolError(
            "the server closed the connection before the response was complete") from exc
    except asyncio.LimitOverrunError as exc:
        raise httpx.RemoteProtocolError(
            f"a response header or chunk line is longer than {MAX_HEAD_BYTES} bytes") from exc
    except (OSError, ssl.SSLError) as exc:
        raise httpx.ReadError(f"{type(exc).__name__}: {exc}") from exc


# framing: ("length", n, keep) | ("chunked", 0, keep) | ("eof", 0, False)
Framing = tuple[str, int, bool]


async def _read_head(
    conn: _Connection, method: str, timeout: float | None
) -> tuple[int, bytes, list[tuple[bytes, bytes]], Framing]:
    while True:
        raw = await _read(conn.reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, _, rest = raw[:-4].partition(b"\r\n")
        version, status, reason = _status_line(status_line)
        headers: list[tuple[bytes, bytes]] = []
        for line in rest.split(b"\r\n") if rest else ():
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise httpx.RemoteProtocolError(f"malformed response header line {line[:80]!r}")
            headers.append((name, value.strip(b" \t")))
        if 100 <= status < 200 and status != 101:
            continue  # informational: the real answer follows
        return status, reason, headers, _framing(version, status, method, headers)


def _status_line(line: bytes) -> tuple[bytes, int, bytes]:
    version, _, rest = line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise httpx.RemoteProtocolError(f"malformed response status line {line[:80]!r}")
    return version, int(code), reason


def _framing(version: bytes, status: int, method: str, headers: list[tuple[bytes, bytes]]) -> Framing:
    connection = b",".join(v for n, v in headers if n.lower() == b"connection").lower()
    keep = b"close" not in connection and (version == b"HTTP/1.1" or b"keep-alive" in connection)
    if method == "HEAD" or status in _NO_BODY_STATUS or status < 200:
        return ("length", 0, keep)
    encodings = b",".join(v for n, v in headers if n.lower() == b"transfer-encoding").lower()
    if encodings:
        if encodings.rsplit(b",", 1)[-1].strip() != b"chunked":
            return ("eof", 0, False)
        return ("chunked", 0, keep)
    lengths = {v for n, v in headers if n.lower() == b"content-length"}
    if lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise httpx.RemoteProtocolError(f"invalid Content-Length {sorted(lengths)!r}")
        return ("length", int(next(iter(lengths))), keep)
    return ("eof", 0, False)


class _Body(httpx.AsyncByteStream):
    def __init__(self, transport: AppTransport, origin: Origin, conn: _Connection, framing: Framing,
                 timeout: float | None) -> None:
        self._transport = transport
        self._origin = origin
        self._conn: _Connection | None = conn
        self._framing = framing
        self._timeout = timeout
        self._complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            raise httpx.StreamClosed()
        kind, length, _ = self._framing
        reader = conn.reader
        if kind == "length":
            remaining = length
            while remaining:
                chunk = await _read(reader.read(min(remaining, READ_CHUNK)), self._timeout)
                if not chunk:
                    raise httpx.RemoteProtocolError(
                        f"the server closed the connection {remaining} bytes before the end of the body")
                remaining -= len(chunk)
                yield chunk
        elif kind == "chunked":
            async for chunk in self._chunks(reader):
                yield chunk
        else:
            while chunk := await _read(reader.read(READ_CHUNK), self._timeout):
                yield chunk
        self._complete = True

    async def _chunks(self, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        while True:
            line = await _read(reader.readuntil(b"\r\n"), self._timeout)
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx.RemoteProtocolError(f"malformed chunk size {size_text[:20]!r}") from None
            if size == 0:
                while (await _read(reader.readuntil(b"\r\n"), self._timeout)) != b"\r\n":
                    pass  # trailers, ignored
                return
            while size:
                chunk = await _read(reader.read(min(size, READ_CHUNK)), self._timeout)
                if not chunk:
                    raise httpx.RemoteProtocolError("the server closed the connection inside a chunk")
                size -= len(chunk)
                yield chunk
            if await _read(reader.readexactly(2), self._timeout) != b"\r\n":
                raise httpx.RemoteProtocolError("a chunk does not end with CRLF")

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._complete and self._framing[2] and conn.usable():
            self._transport._checkin(self._origin, conn)
        else:
            with contextlib.suppress(Exception):
                conn.close()
