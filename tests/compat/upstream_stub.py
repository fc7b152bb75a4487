"""A real HTTP server on loopback standing in for the services pgqueue calls on an app's behalf:
an OpenAI-compatible chat-completions endpoint (step.ai.infer) and plain endpoints (step.fetch).

It records every request (method, path, headers, body) so tests can check what pgqueue sent, and
scripts failures by path or prompt:
- `GET /fetch/hello` 200 text with an `X-Stub` header; `/fetch/echo` (any method) 201 with what it
  received; `/fetch/status/<code>` that status; `/fetch/flaky/<key>` drops the connection without
  an answer the first time a key is asked for, then answers 200; `/fetch/redirect` 302 to
  `/fetch/hello`; `/fetch/big` 5 MB; `/fetch/multi` two `X-Multi` header lines.
- `POST /v1/chat/completions`: a completion echoing the last user message and the model, with the
  number of times this prompt was asked (`attempt`); prompt `fail-once:<key>` answers 500 the
  first time, `always-500` always, `not-json` a 200 with a body that is not JSON.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest


@dataclass
class Upstream:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests_to(self, path: str) -> list[dict[str, Any]]:
        """Requests to `path` (the query string left out)."""
        with self.lock:
            return [r for r in self.requests if urlsplit(r["path"]).path == path]


def _handler(upstream: Upstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            record = {"method": self.command, "path": self.path,
                      "headers": {k.lower(): v for k, v in self.headers.items()},
                      "body": raw.decode("utf-8", errors="replace")}
            with upstream.lock:
                upstream.requests.append(record)
                upstream.seen[self.path] += 1
                nth = upstream.seen[self.path]
            route = urlsplit(self.path).path
            if route == "/v1/chat/completions":
                self._chat(record, raw)
            elif self.path == "/fetch/redirect":
                self._answer(302, b"", {"Location": "/fetch/hello"})
            elif self.path == "/fetch/big":
                self._answer(200, b"x" * (5 * 1024 * 1024))
            elif self.path == "/fetch/multi":
                self.send_response(200)
                self.send_header("X-Multi", "one")
                self.send_header("X-Multi", "two")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            elif self.path == "/fetch/hello":
                self._answer(200, b"hello from upstream", {"Content-Type": "text/plain", "X-Stub": "yes"})
            elif self.path == "/fetch/echo":
                echo = {"method": self.command, "body": record["body"],
                        "x_test": record["headers"].get("x-test")}
                self._answer(201, json.dumps(echo).encode(),
                             {"Content-Type": "application/json", "X-Stub": "echo"})
            elif self.path.startswith("/fetch/status/"):
                self._answer(int(self.path.rsplit("/", 1)[1]), b"busy upstream", {"X-Stub": "status"})
            elif self.path.startswith("/fetch/flaky/") and nth == 1:
                self.close_connection = True
                self.connection.shutdown(2)  # no answer at all: a transport error for the caller
            elif self.path.startswith("/fetch/flaky/"):
                self._answer(200, f"recovered after {nth - 1} failure".encode(), {"X-Stub": "flaky"})
            else:
                self._answer(404, b"no such stub path")

        def _chat(self, record: dict[str, Any], raw: bytes) -> None:
            body = json.loads(raw)
            prompt = body["messages"][-1]["content"]
            with upstream.lock:
                upstream.seen[f"prompt:{prompt}"] += 1
                nth = upstream.seen[f"prompt:{prompt}"]
            if prompt == "always-500" or (prompt.startswith("fail-once:") and nth == 1):
                self._answer(500, b'{"error": {"message": "the model is overloaded"}}',
                             {"Content-Type": "application/json"})
                return
            if prompt == "not-json":
                self._answer(200, b"<html>not a completion</html>", {"Content-Type": "text/html"})
                return
            completion = {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"echo: {prompt}"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
                "attempt": nth,
            }
            self._answer(200, json.dumps(completion).encode(), {"Content-Type": "application/json"})

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle  # noqa: N815

    return Handler


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a connection dropped on purpose (/fetch/flaky) is not an error of the stub


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    stub = Upstream(url="")
    httpd = _Server(("127.0.0.1", 0), _handler(stub))
    stub.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True, name="upstream-stub")
    thread.start()
    yield stub
    httpd.shutdown()
    httpd.server_close()
