"""Pausing a function holds its queued work end to end: a real `pgqueue dev` server and a real
HTTP app on loopback (scripted answers in the Inngest wire protocol). Runs of the paused function
mid-way (one sleeping, one with a call in flight) make no progress while it is paused, the call in
flight finishes, other functions run as usual, and after the resume both runs complete."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psycopg
import pytest

from tests.compat.conftest import Server, start_server
from tests.helpers.procs import wait_until

SDK = {"X-Inngest-SDK": "inngest-py:v0.5.19", "X-Inngest-Req-Version": "2"}
CALLS: dict[str, list[dict[str, Any]]] = defaultdict(list)  # run id -> the requests for it
GATE = threading.Event()  # holds the in-flight run's first call until the test opens it
IN_FLIGHT = threading.Event()


class App(BaseHTTPRequestHandler):
    """hold-me, event data {"mode": "sleep"}: sleeps 2 s, then returns; {"mode": "slow"}: its first
    call waits for GATE and answers one step, then returns. other: returns at once."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        for k, v in {**SDK, "Content-Type": "application/json", "Content-Length": str(len(raw))}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:  # noqa: N802
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        run_id, steps = request["ctx"]["run_id"], request.get("steps") or {}
        CALLS[run_id].append(request)
        if "fnId=pause-other" in self.path:
            self._send(200, "other done")
        elif request["event"]["data"].get("mode") == "sleep":
            if "nap" in steps:
                self._send(200, "slept")
            else:
                self._send(206, [{"op": "Sleep", "id": "nap", "name": "nap", "opts": {"duration": "2s"}}])
        elif "one" in steps:
            self._send(200, "stepped")
        else:
            IN_FLIGHT.set()
            GATE.wait(30)
            self._send(206, [{"op": "StepRun", "id": "one", "name": "one", "data": 1}])


@pytest.fixture
def stack(database_url: str) -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    server = start_server(database_url)
    body = {
        "appName": "pause",
        "url": base,
        "sdk": "py:v0.5.19",
        "functions": [
            {"id": f"pause-{name}", "name": name, "triggers": [{"event": f"pause/{name}"}],
             "steps": {"step": {"id": "step", "name": "step",
                                "runtime": {"type": "http", "url": f"{base}?fnId=pause-{name}&stepId=step"}}}}
            for name in ("hold-me", "other")
        ],
    }
    try:
        r = httpx.post(f"{server.url}/fn/register", json=body)
        assert r.status_code == 200, r.text
        yield server
    finally:
        GATE.set()
        server.proc.terminate()
        httpd.shutdown()


def _run(server: Server, event_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        runs = server.runs_for(event_id)
        return runs[0] if runs else None

    return wait_until(found, timeout=30, message=f"a run for event {event_id}")


def test_a_paused_function_holds_its_queued_work_until_resumed(stack: Server) -> None:
    server = stack
    sleeping = _run(server, server.send("pause/hold-me", {"mode": "sleep"}))["run_id"]
    wait_until(lambda: len(CALLS[sleeping]) == 1 or None, timeout=30, message="the sleeping run's first call")
    slow = _run(server, server.send("pause/hold-me", {"mode": "slow"}))["run_id"]
    assert IN_FLIGHT.wait(30)

    with server.client() as c:
        assert c.post("/v1/functions/pause-hold-me/pause").json()["data"]["paused"] is True
    paused_at = time.monotonic()
    GATE.set()  # the call in flight finishes: its step is stored, its next call is queued and held
    wait_until(lambda: _stored_step(server.database_url, slow) or None, timeout=30,
               message="the in-flight step")

    other = server.wait_runs(server.send("pause/other"), timeout=30)
    assert [r["status"] for r in other] == ["Completed"]  # other functions are not held

    # The sleep came due 2 s after it started and the stored step queued a call at once; nothing
    # of the paused function is claimed while it stays paused.
    while time.monotonic() - paused_at < 4:
        assert (len(CALLS[sleeping]), len(CALLS[slow])) == (1, 1)
        time.sleep(0.2)
    with psycopg.connect(server.database_url) as conn:
        held = conn.execute("SELECT run_id, state::text FROM pgqueue.queue_items WHERE run_id = ANY(%s)",
                            ([sleeping, slow],)).fetchall()
    assert set(held) == {(sleeping, "available"), (slow, "available")}
    runs = [server.get(f"/v1/runs/{run_id}")["data"] for run_id in (sleeping, slow)]
    assert [r["status"] for r in runs] == ["Running", "Running"]

    with server.client() as c:
        assert c.post("/v1/functions/pause-hold-me/resume").json()["data"]["paused"] is False

    def ended(run_id: str) -> dict[str, Any] | None:
        run = server.get(f"/v1/runs/{run_id}")["data"]
        return run if run["status"] not in ("Queued", "Running") else None

    assert wait_until(lambda: ended(sleeping), timeout=30, message="the sleeping run")["output"] == "slept"
    assert wait_until(lambda: ended(slow), timeout=30, message="the slow run")["output"] == "stepped"
    assert (len(CALLS[sleeping]), len(CALLS[slow])) == (2, 2)


def _stored_step(database_url: str, run_id: str) -> bool:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM pgqueue.steps WHERE run_id = %s AND step_id = 'one'",
                           (run_id,)).fetchone()
    return row == (1,)
