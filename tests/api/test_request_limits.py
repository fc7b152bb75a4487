"""Request bodies against a real `pgqueue serve` process over HTTP: a huge or malformed body without
credentials is answered 401 before a byte of it is read, an authenticated one over its route's limit
413 as soon as the limit is crossed (or at once from Content-Length), and the server's memory stays
flat however much a client streams. RSS is the server process's own VmRSS from /proc."""

from __future__ import annotations

import inspect
import json
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from api import limits
from api.app import create_app
from pgqueue.settings import Settings
from tests.compat.conftest import EVENT_KEY, SIGNING_KEY, Server, start_server

MB = 1024 * 1024
HUGE = 300 * MB
RSS_HEADROOM = 50 * MB
AUTH = {"authorization": f"Bearer {SIGNING_KEY}"}

# The routes whose typed bodies FastAPI used to read and parse before their auth dependency ran.
TYPED_BODY_ROUTES = ["/v1/cancellations", "/v1/functions/shop-fn/replay", "/v1/apps/sync"]
# Routes that read their body themselves, after their own key check.
SDK_ROUTES = ["/fn/register", "/invoke/shop-fn", "/e/not-the-event-key"]
# The limit each route answers 413 past, with credentials.
LIMITS = [
    *((path, limits.DEFAULT_BODY_BYTES) for path in TYPED_BODY_ROUTES),
    ("/fn/register", limits.SDK_BODY_BYTES),
    ("/invoke/shop-fn", limits.SDK_BODY_BYTES),
    (f"/e/{EVENT_KEY}", limits.event_request_bytes(Settings())),
    ("/ui/events/send", limits.DEFAULT_BODY_BYTES),  # dashboard form (read after the session check)
]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@dataclass
class Streamed:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    sent: int  # body bytes the client managed to send before the server answered or closed
    peak_rss: int


def stream_post(
    server: Server, path: str, *, headers: dict[str, str], total: int, declared: int | None = None,
    prefix: bytes = b'{"url": "', chunk: int = MB, rss_limit: int | None = None,
) -> Streamed:
    """POST `total` body bytes over a raw socket, chunked (or with Content-Length `declared` when
    given), watching the server's RSS between chunks. Stops sending as soon as the server answers,
    closes, or its RSS passes `rss_limit` (a server that buffers everything fails fast instead of
    eating a gigabyte)."""
    pid = server.proc.popen.pid
    url = urlsplit(server.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    framing = f"Content-Length: {declared}" if declared is not None else "Transfer-Encoding: chunked"
    head = [f"POST {path} HTTP/1.1", f"Host: {url.netloc}", "Content-Type: application/json", framing,
            *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    peak = rss_bytes(pid)
    sent = 0
    payload = prefix + b"a" * (chunk - len(prefix))
    try:
        while sent < total and declared is None:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered (or closed) without waiting for the rest
            piece = payload if sent == 0 else b"a" * chunk
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
            peak = max(peak, rss_bytes(pid))
            if rss_limit is not None and peak > rss_limit:
                break
        else:
            if declared is None:
                sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed the connection after answering
    raw = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        peak = max(peak, rss_bytes(pid))
        if rss_limit is not None and peak > rss_limit:
            break
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not data:
            break
        raw += data
        head_end = raw.find(b"\r\n\r\n")
        if head_end >= 0:
            length = next((int(line.split(b":", 1)[1]) for line in raw[:head_end].split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if length is not None and len(raw) >= head_end + 4 + length:
                break
    sock.close()
    for _ in range(5):  # anything still being processed shows up within a moment
        peak = max(peak, rss_bytes(pid))
        time.sleep(0.05)
    if not raw:
        return Streamed(0, {}, {}, sent, peak)
    head_raw, _, body = raw.partition(b"\r\n\r\n")
    lines = head_raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    resp_headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = {"raw": body[:200].decode("latin-1")}
    return Streamed(status, parsed, resp_headers, sent, peak)


@pytest.fixture(scope="module")
def serve(module_database_url: str) -> Iterator[Server]:
    server = start_server(module_database_url, mode="serve")
    try:
        # warm up every route once (first requests import and allocate), then measure idle
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for path in TYPED_BODY_ROUTES:
                client.post(path, json={})
                client.post(path, json={}, headers=AUTH)
        yield server
    finally:
        server.proc.terminate()


def idle_rss(server: Server) -> int:
    return rss_bytes(server.proc.popen.pid)


def assert_json_error(streamed: Streamed, status: int, *fragments: str) -> None:
    assert streamed.status == status, streamed
    assert set(streamed.body) == {"error", "status"}, streamed.body
    assert streamed.body["status"] == status
    for fragment in fragments:
        assert fragment in streamed.body["error"], (fragment, streamed.body)


@pytest.mark.parametrize("path", TYPED_BODY_ROUTES + SDK_ROUTES)
def test_huge_body_without_credentials_is_401_and_memory_stays_flat(serve: Server, path: str) -> None:
    idle = idle_rss(serve)
    streamed = stream_post(serve, path, headers={}, total=HUGE, rss_limit=idle + RSS_HEADROOM)
    assert streamed.peak_rss - idle <= RSS_HEADROOM, (
        f"server RSS grew from {idle // MB} MB to {streamed.peak_rss // MB} MB "
        f"after {streamed.sent // MB} MB of an unauthenticated body"
    )
    assert_json_error(streamed, 401)
    assert streamed.sent < HUGE  # answered before the body was done
    assert streamed.headers.get("connection") == "close"  # and the rest is not drained


@pytest.mark.parametrize(("path", "limit"), LIMITS)
def test_huge_body_with_credentials_is_413_past_its_limit_and_memory_stays_flat(
    serve: Server, path: str, limit: int
) -> None:
    idle = idle_rss(serve)
    streamed = stream_post(serve, path, headers=AUTH, total=HUGE, rss_limit=idle + RSS_HEADROOM)
    assert streamed.peak_rss - idle <= RSS_HEADROOM, (
        f"server RSS grew from {idle // MB} MB to {streamed.peak_rss // MB} MB "
        f"after {streamed.sent // MB} MB of a body over the limit"
    )
    if path.startswith("/ui/"):  # no dashboard session: refused before the form is read
        assert streamed.status in (401, 403), streamed
        return
    assert_json_error(streamed, 413, f"limit of {limit} bytes")
    assert limit <= streamed.sent < limit + 16 * MB


def test_a_route_that_takes_no_body_answers_without_draining_one(serve: Server) -> None:
    idle = idle_rss(serve)
    streamed = stream_post(serve, "/v1/functions/shop-fn/pause", headers=AUTH, total=HUGE,
                           rss_limit=idle + RSS_HEADROOM)
    assert streamed.peak_rss - idle <= RSS_HEADROOM
    assert_json_error(streamed, 404, "function shop-fn not found")
    assert streamed.headers.get("connection") == "close"
    assert streamed.sent < 32 * MB


@pytest.mark.parametrize("path", TYPED_BODY_ROUTES)
def test_declared_length_over_the_limit_is_413_before_the_body_is_sent(serve: Server, path: str) -> None:
    streamed = stream_post(serve, path, headers=AUTH, total=0, declared=HUGE)
    assert_json_error(streamed, 413, str(HUGE), "limit")
    unauthenticated = stream_post(serve, path, headers={}, total=0, declared=HUGE)
    assert_json_error(unauthenticated, 401, "Authorization")


@pytest.mark.parametrize("path", TYPED_BODY_ROUTES)
@pytest.mark.parametrize("body", [b'{"app_id": "a", "function_id": ', b"{", b"not json"])
def test_malformed_body_without_credentials_is_401_not_400(serve: Server, path: str, body: bytes) -> None:
    resp = httpx.post(serve.url + path, content=body, headers={"content-type": "application/json"},
                      timeout=30)
    assert resp.status_code == 401, resp.text[:300]
    assert resp.json()["status"] == 401


@pytest.mark.parametrize("path", ["/v1/cancellations", "/v1/apps/sync"])
def test_rest_bodies_are_limited_to_one_megabyte(serve: Server, path: str) -> None:
    big = json.dumps({"url": "http://x/" + "a" * (MB + 10), "app_id": "a", "function_id": "f"})
    resp = httpx.post(serve.url + path, content=big, headers={**AUTH, "content-type": "application/json"},
                      timeout=30)
    assert resp.status_code == 413, resp.text[:300]
    assert resp.json() == {"error": resp.json()["error"], "status": 413}
    assert "1048576" in resp.json()["error"]


def _api_routes(routes: list[Any]) -> list[Any]:
    from fastapi.routing import APIRoute

    found: list[Any] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found.extend(_api_routes(route.original_router.routes))
    return found


def test_every_guarded_route_checks_credentials_before_reading_its_body() -> None:
    """A route with an authentication dependency must be an AuthFirstRoute (else FastAPI parses a
    typed body first), and a typed body needs such a guard."""
    app = create_app(Settings(database_url="postgresql://unused/x").validated(), run_services=False)
    guarded = typed = 0
    for route in _api_routes(app.routes):
        guards = [d for d in route.dependencies if getattr(d.dependency, "runs_before_body", False)]
        if guards:
            guarded += 1
            assert isinstance(route, limits.AuthFirstRoute), route.path
        if route.body_field is not None:
            typed += 1
            assert guards, f"{route.path} parses a typed body without a before-body guard"
    assert guarded >= 20 and typed >= 3


def test_no_route_sends_a_request_through_a_worker_thread() -> None:
    """FastAPI runs a sync (`def`) dependency or endpoint in anyio's thread pool: a thread hop and
    GIL hand-over on every request (the authentication guard of every SDK checkpoint and REST call
    was one). Every route's endpoint and dependencies are coroutines."""
    app = create_app(Settings(database_url="postgresql://unused/x").validated(), run_services=False)

    def sync_calls(dependant: Any) -> list[str]:
        own = [] if dependant.call is None or inspect.iscoroutinefunction(dependant.call) else [
            getattr(dependant.call, "__qualname__", repr(dependant.call))]
        return own + [name for sub in dependant.dependencies for name in sync_calls(sub)]

    found = {route.path: sync_calls(route.dependant) for route in _api_routes(app.routes)}
    assert len(found) >= 20
    assert {path: calls for path, calls in found.items() if calls} == {}
