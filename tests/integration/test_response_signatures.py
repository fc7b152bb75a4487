"""App answers must be signed in production: a scripted app (a real HTTP server on loopback that
impersonates an SDK) against real `pgqueue serve` processes. Unsigned, wrongly signed, replayed and
tampered answers fail the call and use the app's retries; streamed answers are checked the way each
SDK signs them; PGQUEUE_REQUIRE_RESPONSE_SIGNATURE=false accepts unsigned answers again."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from pgqueue.errors import ConfigError
from pgqueue.protocol import signing
from pgqueue.settings import Settings
from tests.compat.conftest import SIGNING_KEY, Server, start_server

CALLS: dict[str, int] = defaultdict(int)
OTHER_KEY = "signkey-test-" + "0f" * 32
SDK = {"X-Inngest-SDK": "inngest-js:v4.24.0", "X-Inngest-Req-Version": "2"}
FORGED = b'"FORGED-by-a-proxy"'
SETTING = "PGQUEUE_REQUIRE_RESPONSE_SIGNATURE"


def sig(body: bytes, key: str = SIGNING_KEY, *, age_s: int = 0) -> dict[str, str]:
    return {"X-Inngest-Signature": signing.sign(body, key, int(time.time()) - age_s)}


def envelope(body: bytes, headers: dict[str, str]) -> bytes:
    """A streamed (201) answer: keep-alive spaces, then the real answer as a JSON envelope."""
    return b"  " + json.dumps({"status": 200, "headers": headers, "body": body.decode()}).encode()


class SigningApp(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        request = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        assert signing.verify(self.headers.get("x-inngest-signature"), request, [SIGNING_KEY])
        fn = parse_qs(urlsplit(self.path).query)["fnId"][0]
        CALLS[fn] += 1
        ok, forged = b'"ok"', FORGED
        match fn.split("-", 1)[1]:
            case "signed":
                self._send(200, ok, {**SDK, **sig(ok)})
            case "unsigned":
                self._send(200, forged, SDK)
            case "unsigned-once":
                self._send(200, *((forged, SDK) if CALLS[fn] == 1 else (ok, {**SDK, **sig(ok)})))
            case "wrong-key":
                self._send(200, forged, {**SDK, **sig(forged, OTHER_KEY)})
            case "replayed":  # a genuine signature, but made two hours before this call
                self._send(200, forged, {**SDK, **sig(forged, age_s=7200)})
            case "tampered":  # the signature of another answer
                self._send(200, forged, {**SDK, **sig(ok)})
            case "unsigned-no-retry":
                body = b'{"name": "NonRetriableError", "message": "FORGED-by-a-proxy"}'
                self._send(500, body, {**SDK, "X-Inngest-No-Retry": "true"})
            case "unauthorized":  # what an SDK answers when it refuses our key
                self._send(401, b'{"message": "Unauthorized"}', {})
            case "stream-js":  # JS: the answer inside the envelope is signed
                inner = b'"js-streamed"'
                self._send(201, envelope(inner, sig(inner)), SDK)
            case "stream-py":  # Python: outer headers signed over the body it had at first, `null`
                self._send(201, envelope(b'"py-streamed"', {}), {**SDK, **sig(b"null")})
            case "stream-py-replayed":
                self._send(201, envelope(forged, {}), {**SDK, **sig(b"null", age_s=7200)})
            case "stream-unsigned":
                self._send(201, envelope(forged, {}), SDK)
            case "stream-forged":
                self._send(201, envelope(forged, sig(ok)), SDK)
            case _:
                self._send(404, b"{}", {})


SCRIPTS = ["signed", "unsigned", "unsigned-once", "wrong-key", "replayed", "tampered", "unsigned-no-retry",
           "unauthorized", "stream-js", "stream-py", "stream-py-replayed", "stream-unsigned",
           "stream-forged"]


@pytest.fixture(scope="module")
def app_base() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SigningApp)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def register(server: Server, base: str, app: str) -> None:
    body = {
        "appName": app,
        "url": base,
        "sdk": "js:v4.24.0",
        "functions": [
            {"id": f"{app}-{name}", "name": name, "triggers": [{"event": f"{app}/{name}"}],
             "steps": {"step": {"id": "step", "name": "step",
                                "runtime": {"type": "http", "url": f"{base}?fnId={app}-{name}&stepId=step"},
                                "retries": {"attempts": 1}}}}
            for name in SCRIPTS
        ],
    }
    r = httpx.post(f"{server.url}/fn/register", json=body, headers=server.headers)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def strict(module_database_url: str, app_base: str) -> Iterator[Server]:
    server = start_server(module_database_url, mode="serve")
    register(server, app_base, "strict")
    yield server
    server.proc.terminate()


@pytest.fixture
def lax(database_url: str, app_base: str) -> Iterator[Server]:
    """Its own database: the strict server's workers must not take its runs."""
    server = start_server(database_url, mode="serve", env={SETTING: "false"})
    register(server, app_base, "lax")
    yield server
    server.proc.terminate()


def run_of(server: Server, app: str, name: str) -> dict[str, Any]:
    [run] = server.wait_runs(server.send(f"{app}/{name}"), timeout=30)
    return run


@pytest.mark.parametrize(
    ("name", "output", "calls"),
    [("signed", "ok", 1), ("unsigned-once", "ok", 2), ("stream-js", "js-streamed", 1),
     ("stream-py", "py-streamed", 1)],
)
def test_signed_answers_are_accepted(strict: Server, name: str, output: str, calls: int) -> None:
    run = run_of(strict, "strict", name)
    assert run["status"] == "Completed" and run["output"] == output, run
    assert CALLS[f"strict-{name}"] == calls


@pytest.mark.parametrize(
    ("name", "error", "fragments"),
    [
        ("unsigned", "UnsignedResponse", ("HTTP 200", "no X-Inngest-Signature", f"{SETTING}=false")),
        ("unsigned-no-retry", "UnsignedResponse", ("HTTP 500", SETTING)),
        ("stream-unsigned", "UnsignedResponse", ("HTTP 201", SETTING)),
        ("unauthorized", "UnsignedResponse", ("HTTP 401", "INNGEST_SIGNING_KEY", "PGQUEUE_SIGNING_KEY")),
        ("wrong-key", "InvalidSignature", ("does not match", "signing keys")),
        ("replayed", "InvalidSignature", ("replayed",)),
        ("tampered", "InvalidSignature", ("does not match",)),
        ("stream-forged", "InvalidSignature", ("HTTP 201",)),
        ("stream-py-replayed", "InvalidSignature", ("replayed",)),
    ],
)
def test_unsigned_or_wrongly_signed_answers_fail_after_the_apps_retries(
    strict: Server, name: str, error: str, fragments: tuple[str, ...]
) -> None:
    run = run_of(strict, "strict", name)
    assert run["status"] == "Failed" and run["error"]["name"] == error, run
    for fragment in fragments:
        assert fragment in run["error"]["message"], (fragment, run["error"])
    assert "FORGED" not in json.dumps(run)
    # Not the app's verdict: retried like a failed call (retries: 1 → two calls), even when the
    # unsigned answer said not to retry.
    assert CALLS[f"strict-{name}"] == 2


def test_require_false_accepts_unsigned_answers_but_still_refuses_wrong_ones(lax: Server) -> None:
    run = run_of(lax, "lax", "unsigned")
    assert run["status"] == "Completed" and run["output"] == "FORGED-by-a-proxy"
    run = run_of(lax, "lax", "wrong-key")
    assert run["status"] == "Failed" and run["error"]["name"] == "InvalidSignature"


def test_the_setting_defaults_to_production_and_needs_a_key() -> None:
    prod = {"PGQUEUE_SIGNING_KEY": SIGNING_KEY, "PGQUEUE_EVENT_KEYS": "k"}
    assert Settings.from_env(prod, mode="serve").response_signature_required
    assert not Settings.from_env({**prod, SETTING: "false"}, mode="serve").response_signature_required
    assert not Settings.from_env({}, mode="dev").response_signature_required
    key = {"PGQUEUE_SIGNING_KEY": SIGNING_KEY}
    assert Settings.from_env(key, mode="dev", calls_mode="serve").response_signature_required  # worker, tick
    assert Settings.from_env({**key, SETTING: "1"}, mode="dev").response_signature_required
    with pytest.raises(ConfigError, match="PGQUEUE_SIGNING_KEY"):
        Settings.from_env({SETTING: "true"}, mode="dev")
