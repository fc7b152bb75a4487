"""A small HTTP server on loopback that answers as a test scripts it and records what it was sent:
an app's endpoint, an AI provider or any service pgqueue calls on an app's behalf."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

    return Handler


@contextlib.contextmanager
def running(script: Script) -> Iterator[Stub]:
    port = free_port()
    stub = Stub(f"http://127.0.0.1:{port}", script)
    httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(stub))
    threading.Thread(target=httpd.serve_forever, name=f"stub-{port}", daemon=True).start()
    try:
        yield stub
    finally:
        httpd.shutdown()
        httpd.server_close()


def json_answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()
