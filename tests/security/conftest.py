"""Fixtures for the attack tests of issue 22: a real `pgqueue serve` (with its workers) and small
HTTP servers on loopback standing in for an app's endpoint or a provider, which answer as each
test scripts them and record what they were sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from pgqueue import ids
from tests.compat.conftest import Server, start_server
from tests.helpers.procs import free_port

# (status, headers, body) for a request: method, path (with query), headers (lower case), body.
Answer = tuple[int, dict[str, str], bytes]
Script = Callable[[str, str, dict[str, str], bytes], Answer]


@dataclass
class Stub:
    url: str
    script: Script
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self, path_prefix: str = "/") -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].startswith(path_prefix)]


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            with stub.lock:
                stub.requests.append({"method": self.command, "path": self.path, "headers": headers,
                                      "body": body})
            status, answer_headers, answer = stub.script(self.command, self.path, headers, body)
            self.send_response(status)
            for name, value in answer_headers.items():
                self.send_header(name, value)
            if not any(name.lower() == "content-length" for name in answer_headers):
                self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = do_PUT = do_DELETE = _handle

    return Handler


@pytest.fixture
def stub_factory() -> Iterator[Callable[[Script], Stub]]:
    servers: list[ThreadingHTTPServer] = []

    def make(script: Script) -> Stub:
        port = free_port()
        stub = Stub(f"http://127.0.0.1:{port}", script)
        httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(stub))
        threading.Thread(target=httpd.serve_forever, name=f"stub-{port}", daemon=True).start()
        servers.append(httpd)
        return stub

    yield make
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def serve_factory(database_url: str) -> Iterator[Callable[..., Server]]:
    """`pgqueue serve` with its workers (PGQUEUE_ALLOW_LOOPBACK=1: the stubs are on loopback)."""
    started: list[Server] = []

    def make(env: dict[str, str] | None = None) -> Server:
        server = start_server(database_url, mode="serve", env=env)
        started.append(server)
        return server

    yield make
    for server in started:
        server.proc.terminate()


def json_answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


def start_endpoint_run(server: Server, domain: str, steps: list[dict[str, Any]], *, retries: int = 0,
                       path: str = "/api/endpoint") -> dict[str, Any]:
    """Start a durable endpoint's run as the JS SDK does (POST /v1/checkpoint with the signing key):
    the answer's data ({run_id, fn_id, app_id, token, ...})."""
    run_id = ids.new_ulid()
    request = {"domain": domain, "method": "POST", "path": path}
    body = {"run_id": run_id, "retries": retries, "steps": steps,
            "event": {"name": "inngest/http.request", "data": request}}
    with server.client() as client:
        started = client.post("/v1/checkpoint", json=body)
    assert started.status_code == 200, started.text
    data = dict(started.json()["data"])
    assert data["run_id"] == run_id
    return data


def run_status(server: Server, run_id: str) -> dict[str, Any] | None:
    """The run as GET /v1/runs/{id} shows it once it has ended, else None."""
    with server.client() as client:
        r = client.get(f"/v1/runs/{run_id}")
    assert r.status_code == 200, r.text
    run = dict(r.json()["data"])
    return None if run["status"] in ("Queued", "Running") else run


def raw_client(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30)
