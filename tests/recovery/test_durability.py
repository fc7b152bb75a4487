"""Crash and shutdown behaviour with real processes: kill -9 of the server mid-flight, SIGTERM."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.compat.conftest import (
    PY_APP_FUNCTIONS,
    App,
    Server,
    start_py_app,
    start_server,
    sync_via_put,
)
from tests.helpers.procs import free_port, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def stack(database_url: str) -> Iterator[dict[str, Any]]:
    port = free_port()
    state: dict[str, Any] = {"database_url": database_url, "port": port, "servers": [], "app": None}

    def start() -> Server:
        srv = start_server(database_url, extra_args=(), env={"PGQUEUE_PORT": str(port), "PGQUEUE_LEASE_MS": "3000"},
                           port=port)
        state["servers"].append(srv)
        return srv

    state["start"] = start
    yield state
    for srv in state["servers"]:
        srv.proc.terminate(timeout=10)
    if state["app"]:
        state["app"].proc.terminate()


def _statuses(server_url: str, event_ids: list[str]) -> dict[str, str]:
    out = {}
    with httpx.Client(base_url=server_url, timeout=30) as c:
        for event_id in event_ids:
            runs = c.get(f"/v1/events/{event_id}/runs").json()["data"]
            out[event_id] = runs[0]["status"] if runs else "NoRun"
    return out


def _stored_steps(database_url: str) -> dict[tuple[str, str], float]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT run_id, name, extract(epoch FROM created_at) FROM pgqueue.steps"
        ).fetchall()
    return {(r[0], r[1]): float(r[2]) for r in rows}


def test_kill_9_mid_flight_loses_nothing_and_reruns_no_stored_step(stack: dict[str, Any]) -> None:
    rng = random.Random(7)
    server = stack["start"]()
    app = start_py_app(server)
    stack["app"] = app
    sync_via_put(app, server, expect_functions=PY_APP_FUNCTIONS)

    events = [{"name": "compat/durable", "data": {"n": i, "delay": round(rng.uniform(0.02, 0.25), 3)}}
              for i in range(100)]
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/e/key", json=events)
    assert r.status_code == 200, r.text
    event_ids = r.json()["ids"]

    kills = 0
    for _ in range(4):
        time.sleep(rng.uniform(0.4, 1.2))
        server.proc.kill9()
        kills += 1
        server = stack["start"]()

    restarted = time.monotonic()

    def all_done() -> bool:
        statuses = _statuses(server.url, event_ids)
        return all(s == "Completed" for s in statuses.values())

    wait_until(all_done, timeout=60, interval=0.5, message="all 100 runs completed after the last restart")
    assert time.monotonic() - restarted < 60
    assert kills == 4

    stored = _stored_steps(stack["database_url"])
    ledger: dict[str, list[float]] = app.ledger()["ledger"]
    reruns_after_store = []
    executions = 0
    for key, times in ledger.items():
        run_id, step = key.rsplit(":", 1)
        stored_at = stored.get((run_id, step))
        assert stored_at is not None, f"step {step} of run {run_id} ran but was never stored"
        executions += len(times)
        reruns_after_store += [(key, t - stored_at) for t in times if t > stored_at]
    assert reruns_after_store == []
    # Every run's three steps were stored exactly once.
    assert len(stored) == 300
    assert executions >= 300


def test_sigterm_lets_in_flight_call_finish(stack: dict[str, Any]) -> None:
    server = stack["start"]()
    app = start_py_app(server)
    stack["app"] = app
    sync_via_put(app, server, expect_functions=PY_APP_FUNCTIONS)
    event_id = server.send("compat/slow", {"seconds": 1.5})
    [run] = server.wait_runs(event_id, terminal=False)
    wait_until(lambda: app.count(run["run_id"], "slow") == 1, timeout=20, message="slow step started")
    assert server.proc.terminate(timeout=30) == 0
    # The in-flight step finished within the grace period and its output was stored.
    assert ("slow" in {name for (rid, name) in _stored_steps(stack["database_url"]) if rid == run["run_id"]})
    server = stack["start"]()
    [done] = server.wait_runs(event_id, timeout=30)
    assert done["status"] == "Completed"
    assert app.count(run["run_id"], "slow") == 1


def test_sigterm_past_grace_releases_leases(stack: dict[str, Any]) -> None:
    port = stack["port"]
    server = start_server(stack["database_url"], env={"PGQUEUE_SHUTDOWN_GRACE_S": "0.5", "PGQUEUE_LEASE_MS": "60000"},
                          port=port)
    stack["servers"].append(server)
    app = start_py_app(server)
    stack["app"] = app
    sync_via_put(app, server, expect_functions=PY_APP_FUNCTIONS)
    event_id = server.send("compat/slow", {"seconds": 4})
    [run] = server.wait_runs(event_id, terminal=False)
    wait_until(lambda: app.count(run["run_id"], "slow") == 1, timeout=20, message="slow step started")
    assert server.proc.terminate(timeout=30) == 0
    with psycopg.connect(stack["database_url"]) as conn:
        items = conn.execute(
            "SELECT state::text, lease_token, attempt FROM pgqueue.queue_items WHERE run_id = %s", (run["run_id"],)
        ).fetchall()
    # The lease was handed back (not left to expire in 60 s) without using an attempt.
    assert items == [("available", None, 0)]
    server = start_server(stack["database_url"], env={"PGQUEUE_LEASE_MS": "60000"}, port=port)
    stack["servers"].append(server)
    started = time.monotonic()
    [done] = server.wait_runs(event_id, timeout=30)
    assert done["status"] == "Completed"
    assert time.monotonic() - started < 20
