"""Poison inputs on the executor's side, against a real pgqueue server and a scripted app on loopback.

For each case: (a) the bad run ends with its named error, (b) the app received a bounded number of
calls, (c) a healthy run sent right after it, to the same function and to another one, completes
normally, (d) /health keeps answering fast throughout. Each scripted function misbehaves only for
events with `data.bad`, so the same function serves the healthy run.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest

from tests.compat.conftest import Server, start_server
from tests.integration.test_executor_faults import SDK, RogueHandler

CALLS: dict[str, int] = defaultdict(int)
CALL_TIMEOUT_S = 2

# Raw JSON bodies of one StepRun whose output jsonb refuses (written as the SDKs write them).
UNSTORABLE_OUTPUTS = {
    "nan": b'[{"op": "StepRun", "id": "s1", "name": "s1", "data": NaN}]',
    "infinity": b'[{"op": "StepRun", "id": "s1", "name": "s1", "data": {"x": [1, -Infinity]}}]',
    "surrogate": b'[{"op": "StepRun", "id": "s1", "name": "s1", "data": "caf\\ud83d"}]',
    "nul": b'[{"op": "StepRun", "id": "s1", "name": "s1", "data": {"k\\u0000": 1}}]',
    "deep": b'[{"op": "StepRun", "id": "s1", "name": "s1", "data": ' + b"[" * 900 + b"]" * 900 + b"}]",
}


class PoisonApp(RogueHandler):
    """The scripted app of the executor fault tests, answering like an SDK (its headers on every answer)."""

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        super()._send(status, body, {**SDK, **(headers or {})})

    def do_POST(self) -> None:  # noqa: N802
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        fn = parse_qs(urlsplit(self.path).query)["fnId"][0].removeprefix("poison-")
        bad = bool(request["event"]["data"].get("bad"))
        CALLS[f"{fn}:{'bad' if bad else 'good'}"] += 1
        steps = request.get("steps") or {}
        if not bad:
            self._send(200, json.dumps({"ok": fn}).encode())
        elif fn in UNSTORABLE_OUTPUTS:
            memo = steps.get("s1")
            if memo is None:
                self._send(206, UNSTORABLE_OUTPUTS[fn])
            else:  # what an SDK does with a failed step it does not catch: the function fails
                self._send(400, json.dumps(memo["error"]).encode(), {"X-Inngest-No-Retry": "true"})
        elif fn == "unstorable-return":
            self._send(200, b'{"value": NaN}')
        elif fn == "drip":  # one byte at a time, each well within the read timeout: never finishes
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(40):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.25)
            except OSError:
                pass
        else:
            self._send(404, b"{}")


FUNCTIONS = [*UNSTORABLE_OUTPUTS, "unstorable-return", "drip"]
UNREACHABLE = {"unresolvable": "http://does-not-exist.invalid/api/inngest", "malformed": "http://0177.0.0.1/api"}


class HealthProbe:
    """Samples GET /health every 50 ms in a thread while a case runs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                assert client.get("/health").status_code == 200
                self.samples.append(time.perf_counter() - started)
                self._stop.wait(0.05)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        deadline = time.monotonic() + 5
        while len(self.samples) < 5 and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        self._thread.join()

    def assert_responsive(self) -> None:
        assert len(self.samples) >= 5
        # Every sample under 100 ms, but for rare scheduling hiccups of a loaded 2-core CI machine.
        slow = [s for s in self.samples if s > 0.1]
        assert len(slow) <= max(1, len(self.samples) // 50), f"/health slow: {sorted(slow)[-5:]}"
        assert statistics.median(self.samples) < 0.05


@pytest.fixture(scope="module")
def poison(module_database_url: str) -> Iterator[tuple[Server, str]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), PoisonApp)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    server = start_server(module_database_url, env={"PGQUEUE_CALL_TIMEOUT_S": str(CALL_TIMEOUT_S)})

    def function(name: str, url: str) -> dict[str, Any]:
        return {"id": f"poison-{name}", "name": name, "triggers": [{"event": f"poison/{name}"}],
                "steps": {"step": {"id": "step", "name": "step",
                                   "runtime": {"type": "http", "url": f"{url}?fnId=poison-{name}&stepId=step"},
                                   "retries": {"attempts": 2}}}}

    apps = [("poison", base, [function(name, base) for name in FUNCTIONS])]
    apps += [(f"poison-{name}", url, [function(name, url)]) for name, url in UNREACHABLE.items()]
    for app_name, url, functions in apps:
        r = httpx.post(f"{server.url}/fn/register",
                       json={"appName": app_name, "url": url, "sdk": "py:v0.5.19", "functions": functions})
        assert r.status_code == 200, r.text
    yield server, base
    server.proc.terminate()
    httpd.shutdown()


def _bad_run_then_healthy(server: Server, name: str, *, timeout: float = 30) -> dict[str, Any]:
    with HealthProbe(server.url) as probe:
        started = time.monotonic()
        bad_event = server.send(f"poison/{name}", {"bad": True})
        same_fn = server.send(f"poison/{name}", {"bad": False})
        other_fn = server.send("poison/nan", {"bad": False})
        [bad] = server.wait_runs(bad_event, timeout=timeout)
        for healthy in (same_fn, other_fn):
            [run] = server.wait_runs(healthy, timeout=10)
            assert run["status"] == "Completed", run
        assert time.monotonic() - started < timeout
    probe.assert_responsive()
    return bad


@pytest.mark.parametrize("name", list(UNSTORABLE_OUTPUTS))
def test_an_unstorable_step_output_fails_the_step_at_once(poison: tuple[Server, str], name: str) -> None:
    bad = _bad_run_then_healthy(poison[0], name)
    assert bad["status"] == "Failed", bad
    assert bad["error"]["name"] == "UnstorableOutput", bad["error"]
    # one call that answered the output, one that got the step's error back: no retry of the output
    assert CALLS[f"{name}:bad"] == 2


def test_an_unstorable_return_value_fails_the_run(poison: tuple[Server, str]) -> None:
    bad = _bad_run_then_healthy(poison[0], "unstorable-return")
    assert bad["status"] == "Failed" and bad["error"]["name"] == "UnstorableOutput", bad
    assert "NaN" in bad["error"]["message"]
    assert CALLS["unstorable-return:bad"] == 1


def test_an_app_dripping_its_answer_hits_the_call_deadline(poison: tuple[Server, str]) -> None:
    bad = _bad_run_then_healthy(poison[0], "drip")
    assert bad["status"] == "Failed" and bad["error"]["name"] == "CallTimedOut", bad
    assert CALLS["drip:bad"] == 3  # retries.attempts = 2: three calls, each cut at the deadline


@pytest.mark.parametrize(("name", "calls_retried"), [("unresolvable", True), ("malformed", False)])
def test_an_unreachable_app_fails_its_run(poison: tuple[Server, str], name: str, calls_retried: bool) -> None:
    server = poison[0]
    with HealthProbe(server.url) as probe:
        bad_event = server.send(f"poison/{name}", {"bad": True})
        other_fn = server.send("poison/nan", {"bad": False})
        [bad] = server.wait_runs(bad_event, timeout=30)
        [run] = server.wait_runs(other_fn, timeout=10)
        assert run["status"] == "Completed"
    probe.assert_responsive()
    assert bad["status"] == "Failed" and bad["error"]["name"] == "AppUnreachable", bad
    with psycopg.connect(server.database_url) as conn:
        attempts = conn.execute("SELECT count(*) FROM pgqueue.attempts WHERE run_id = %s", (bad["run_id"],)).fetchone()
    assert attempts is not None and attempts[0] == (3 if calls_retried else 1)


def test_syncing_an_unreachable_or_malformed_url_is_a_clear_4xx(poison: tuple[Server, str]) -> None:
    server = poison[0]
    with server.client() as c:
        for url in UNREACHABLE.values():
            r = c.post("/v1/apps/sync", json={"url": url})
            assert 400 <= r.status_code < 500, r.text
            assert "sync failed" in r.json()["error"]
