"""A misbehaving app (a real HTTP server on loopback, scripted per function) against a real
pgqueue server: garbage, unknown opcodes, no-retry headers, Retry-After, infrastructure errors,
hangs, dropped connections, oversized answers and streaming envelopes."""

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

from tests.compat.conftest import Server, start_server

CALLS: dict[str, list[float]] = defaultdict(list)
SDK = {"X-Inngest-SDK": "inngest-py:v0.5.19", "X-Inngest-Req-Version": "2"}


class RogueHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length))
        fn = parse_qs(urlsplit(self.path).query)["fnId"][0].removeprefix("rogue-")
        CALLS[fn].append(time.time())
        n = len(CALLS[fn])
        match fn:
            case "garbage":
                self._send(200, b"not json{", SDK)
            case "unknown-op":
                self._send(206, json.dumps([{"op": "TeleportStep", "id": "abc", "opts": {}}]).encode(), SDK)
            case "js-nonretry":
                self._send(400, b'{"name":"NonRetriableError","message":"nope"}',
                           {**SDK, "X-Inngest-No-Retry": "true"})
            case "retry-after":
                if n == 1:
                    self._send(500, b'{"name":"Error","message":"later"}', {**SDK, "Retry-After": "1"})
                else:
                    self._send(200, b'"ok"', SDK)
            case "no-sdk-5xx":
                self._send(502, b"<html>bad gateway</html>")
            case "hang":
                time.sleep(3)
                self._send(200, b'"too late"', SDK)
            case "close":
                self.close_connection = True
                self.connection.shutdown(2)
            case "huge":
                self._send(200, b'"' + b"x" * 13_000_000 + b'"', SDK)
            case "stream":
                inner = {"status": 200, "headers": {"x-inngest-req-version": "2"},
                         "body": json.dumps({"streamed": request["event"]["data"]})}
                self._send(201, b"  " + json.dumps(inner).encode(), SDK)
            case "step-error-last":
                error = {"name": "Error", "message": f"attempt {request['ctx']['attempt']}"}
                op = {"op": "StepError", "id": "s1", "name": "s1", "error": error}
                self._send(206, json.dumps([op]).encode(), SDK)
            case "many-steps":
                ops = [{"op": "StepRun", "id": f"s{n}-{i}", "name": f"s{n}-{i}", "data": i}
                       for i in range(300)]
                self._send(206, json.dumps(ops).encode(), SDK)
            case "big-state":
                ops = [{"op": "StepRun", "id": f"b{n}-{i}", "name": f"b{n}-{i}", "data": "y" * 3_000_000}
                       for i in range(3)]
                self._send(206, json.dumps(ops).encode(), SDK)
            case "big-output":
                ops = [{"op": "StepRun", "id": "huge", "name": "huge", "data": "z" * 4_200_000}]
                self._send(206, json.dumps(ops).encode(), SDK)
            case _:
                self._send(404, b"{}")


FUNCTIONS = ["garbage", "unknown-op", "js-nonretry", "retry-after", "no-sdk-5xx", "hang", "close", "huge",
             "stream", "step-error-last", "many-steps", "big-state", "big-output"]


@pytest.fixture(scope="module")
def rogue(module_database_url: str) -> Iterator[tuple[Server, str]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RogueHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    server = start_server(module_database_url,
                          env={"PGQUEUE_CALL_TIMEOUT_S": "1", "PGQUEUE_MAX_RESPONSE_BYTES": "12000000"})
    body = {
        "appName": "rogue",
        "url": base,
        "sdk": "py:v0.5.19",
        "functions": [
            {"id": f"rogue-{name}", "name": name, "triggers": [{"event": f"rogue/{name}"}],
             "steps": {"step": {"id": "step", "name": "step",
                                "runtime": {"type": "http", "url": f"{base}?fnId=rogue-{name}&stepId=step"},
                                "retries": {"attempts": 1}}}}
            for name in FUNCTIONS
        ],
    }
    r = httpx.post(f"{server.url}/fn/register", json=body)
    assert r.status_code == 200, r.text
    yield server, base
    server.proc.terminate()
    httpd.shutdown()


def run_of(
    server: Server, name: str, data: dict[str, Any] | None = None, timeout: float = 30
) -> dict[str, Any]:
    event_id = server.send(f"rogue/{name}", data or {})
    [run] = server.wait_runs(event_id, timeout=timeout)
    return run


def test_garbage_body_is_retried_then_fails_clearly(rogue: tuple[Server, str]) -> None:
    run = run_of(rogue[0], "garbage")
    assert run["status"] == "Failed"
    assert "not JSON" in run["error"]["message"]
    assert len(CALLS["garbage"]) == 2


def test_unknown_opcode_fails_without_retrying(rogue: tuple[Server, str]) -> None:
    run = run_of(rogue[0], "unknown-op")
    assert run["status"] == "Failed"
    assert run["error"] == {"name": "UnsupportedOpcode", "message": "unsupported: TeleportStep"}
    assert len(CALLS["unknown-op"]) == 1


def test_no_retry_header_decides_not_the_status(rogue: tuple[Server, str]) -> None:
    run = run_of(rogue[0], "js-nonretry")
    assert run["status"] == "Failed" and run["error"]["message"] == "nope"
    assert len(CALLS["js-nonretry"]) == 1


def test_retry_after_is_honoured(rogue: tuple[Server, str]) -> None:
    run = run_of(rogue[0], "retry-after")
    assert run["status"] == "Completed" and run["output"] == "ok"
    first, second = CALLS["retry-after"]
    assert second - first >= 0.9


def test_infrastructure_errors_are_retried(rogue: tuple[Server, str]) -> None:
    run = run_of(rogue[0], "no-sdk-5xx")
    assert run["status"] == "Failed" and "HTTP 502" in run["error"]["message"]
    assert len(CALLS["no-sdk-5xx"]) == 2


def test_hanging_app_times_out_and_fails(rogue: tuple[Server, str]) -> None:
    run = run_of(rogue[0], "hang", timeout=40)
    assert run["status"] == "Failed" and run["error"]["name"] == "CallTimedOut"
    assert len(CALLS["hang"]) == 2


def test_dropped_connection_is_retried_then_fails(rogue: tuple[Server, str]) -> None:
    run = run_of(rogue[0], "close")
    assert run["status"] == "Failed" and run["error"]["name"] == "ConnectionError"
    assert len(CALLS["close"]) == 2


def test_oversized_answer_is_refused(rogue: tuple[Server, str]) -> None:
    run = run_of(rogue[0], "huge")
    assert run["status"] == "Failed" and run["error"]["name"] == "ResponseTooLarge"


def test_streaming_envelope_is_unwrapped(rogue: tuple[Server, str]) -> None:
    run = run_of(rogue[0], "stream", {"k": 1})
    assert run["status"] == "Completed" and run["output"] == {"streamed": {"k": 1}}


def test_step_error_on_last_attempt_is_memoised_as_failed_step(rogue: tuple[Server, str]) -> None:
    """After the last attempt a StepError is stored as the step's error and the SDK is called again
    (it would throw the error into user code); our rogue app keeps erroring, so it ends Failed
    once the discovery call's own attempts run out."""
    server, _ = rogue
    event_id = server.send("rogue/step-error-last")
    [run] = server.wait_runs(event_id, timeout=30)
    jobs = server.get(f"/v1/runs/{run['run_id']}/jobs")["data"]
    assert jobs[0]["step_id"] == "s1"
    assert jobs[0]["status"] == "Failed"
    assert jobs[0]["error"] == {"name": "Error", "message": "attempt 1"}


def test_a_run_past_1000_steps_fails_clearly(rogue: tuple[Server, str]) -> None:
    run = run_of(rogue[0], "many-steps", timeout=60)
    assert run["status"] == "Failed"
    assert run["error"]["name"] == "StepLimitExceeded" and "1000" in run["error"]["message"]


def test_run_state_over_32_mb_fails_clearly(rogue: tuple[Server, str]) -> None:
    run = run_of(rogue[0], "big-state", timeout=60)
    assert run["status"] == "Failed"
    assert run["error"]["name"] == "StateTooLarge" and "32 MB" in run["error"]["message"]


def test_step_output_over_4_mb_is_a_failed_step(rogue: tuple[Server, str]) -> None:
    server, _ = rogue
    event_id = server.send("rogue/big-output")
    [run] = server.wait_runs(event_id, timeout=60)
    jobs = server.get(f"/v1/runs/{run['run_id']}/jobs")["data"]
    assert jobs[0]["status"] == "Failed"
    assert jobs[0]["error"]["name"] == "OutputTooLarge"
