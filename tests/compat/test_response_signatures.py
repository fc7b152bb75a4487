"""The official Python SDK in production mode behind a proxy that can strip or rewrite its answers.

The SDK signs every answer to a signed request; pgqueue serve requires that signature, so a proxy
stripping the header (or an attacker on the path rewriting the body) makes the call fail and use the
app's retries instead of its forged answer being stored.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from tests.compat.conftest import PY_APP_FUNCTIONS, App, Server, start_py_app, start_server, sync_via_put

pytestmark = pytest.mark.compat

HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive"}


class Proxy(BaseHTTPRequestHandler):
    """Forwards to the app; `mode` decides what happens to the app's answers to calls (POST)."""

    protocol_version = "HTTP/1.1"
    upstream = ""
    mode: ClassVar[list[str]] = ["pass"]
    seen: ClassVar[list[str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
        url = self.upstream + self.path
        answer = httpx.request(self.command, url, content=body, headers=headers, timeout=30)
        out_headers = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        out = answer.content
        if self.command == "POST":
            Proxy.seen.append(answer.headers.get("x-inngest-signature", ""))
            if "strip" in Proxy.mode[0]:
                out_headers = {k: v for k, v in out_headers.items() if k.lower() != "x-inngest-signature"}
            if "tamper" in Proxy.mode[0]:
                out = out.replace(b'"data": 1', b'"data": 666')
        self.send_response(answer.status_code)
        for k, v in out_headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_POST = do_PUT = do_GET = _forward


@pytest.fixture(scope="module")
def proxied(module_database_url: str) -> Iterator[tuple[Server, App]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    server = start_server(module_database_url, mode="serve")
    app = None
    try:
        # The app registers the proxy's origin as its URL, so every call goes through the proxy.
        origin = f"http://127.0.0.1:{httpd.server_address[1]}"
        app = start_py_app(server, app_id="py-sig", env={"INNGEST_SERVE_ORIGIN": origin})
        Proxy.upstream = app.url.removesuffix("/api/inngest")
        fns = sync_via_put(app, server, expect_functions=PY_APP_FUNCTIONS)
        assert all(f["url"].startswith(f"{origin}/") for f in fns), fns
        yield server, app
    finally:
        if app:
            app.proc.terminate()
        server.proc.terminate()
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(
    ("mode", "status", "error"),
    [("pass", "Completed", None), ("strip", "Failed", "UnsignedResponse"),
     ("tamper", "Failed", "InvalidSignature"), ("strip-and-tamper", "Failed", "UnsignedResponse")],
)
def test_the_sdks_signature_is_required_on_every_answer(
    proxied: tuple[Server, App], mode: str, status: str, error: str | None
) -> None:
    server, app = proxied
    Proxy.mode[0], Proxy.seen[:] = mode, []
    [run] = server.wait_runs(server.send("compat/three", {"echo": mode}), timeout=60)
    assert Proxy.seen and all(Proxy.seen), "the SDK signs each answer"
    assert run["status"] == status, run
    if error is None:
        assert run["output"] == {"a": 1, "b": 2, "c": "three", "echo": "pass"}
        return
    assert run["error"]["name"] == error, run
    # The forged value is nowhere in what the run reports (not `str(run)`: a run id or a
    # timestamp may contain the digits 666 by chance).
    assert 666 not in _leaves(run["output"]) and 666 not in _leaves(run["error"]), run
    stored = server.get(f"/v1/runs/{run['run_id']}/jobs")["data"]
    assert all(step["output"] != 666 for step in stored), stored
    # The forged or unsigned answer was not stored: step `a` ran once per attempt (5 attempts:
    # the default 4 retries) and never got past it.
    assert app.count(run["run_id"], "a") == 5
    assert app.count(run["run_id"], "b") == 0


def _leaves(value: object) -> list[object]:
    """Every scalar in a decoded JSON value."""
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]
