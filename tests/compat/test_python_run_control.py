"""Idempotency, singletons and run timeouts with the official Python SDK, under concurrent
duplicate events from two OS processes against a server plus a second worker process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.compat.conftest import (
    PY_APP_FUNCTIONS,
    App,
    Server,
    start_py_app,
    start_server,
    start_worker,
    sync_via_put,
)
from tests.helpers.procs import Proc, wait_until

pytestmark = pytest.mark.compat

SENDER = """
import json, sys, threading, httpx
url, body, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
barrier = threading.Barrier(n)
codes = []
def send():
    barrier.wait()
    codes.append(httpx.post(url, json=body, timeout=30).status_code)
threads = [threading.Thread(target=send) for _ in range(n)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps(codes))
"""


@pytest.fixture(scope="module")
def two_workers(module_database_url: str) -> Iterator[tuple[Server, App]]:
    server = start_server(module_database_url)
    worker: Proc | None = None
    app = None
    try:
        worker = start_worker(module_database_url, server)
        app = start_py_app(server)
        sync_via_put(app, server, expect_functions=PY_APP_FUNCTIONS)
        yield server, app
    finally:
        if app:
            app.proc.terminate()
        if worker:
            assert worker.terminate() == 0, worker.log()
        server.proc.terminate()


def blast(server: Server, event: dict, *, per_process: int = 10, processes: int = 2) -> None:
    """20 identical events at once: 10 threads in each of 2 OS processes."""
    procs = [
        subprocess.Popen([sys.executable, "-c", SENDER, f"{server.url}/e/key", json.dumps(event), str(per_process)],
                         stdout=subprocess.PIPE)
        for _ in range(processes)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert json.loads(out) == [200] * per_process


def test_idempotency_key_starts_exactly_one_run(two_workers: tuple[Server, App]) -> None:
    server, app = two_workers
    blast(server, {"name": "compat/order", "data": {"order_id": "ord-1"}})
    wait_until(lambda: app.ledger()["ledger"].get("ord-1:charge"), timeout=30, message="the charge")
    time.sleep(2)  # every duplicate has been through a runner by now
    assert len(app.ledger()["ledger"]["ord-1:charge"]) == 1
    skipped = [e for e in server.get("/v1/events?name=compat/order&limit=100")["data"]
               if e["data"]["order_id"] == "ord-1"]
    assert len(skipped) == 20
    reasons = [e["skip_reason"] for e in skipped]
    assert sum(r is None for r in reasons) == 1
    assert all("idempotency" in r for r in reasons if r)
    # A different key runs.
    server.send("compat/order", {"order_id": "ord-2"})
    wait_until(lambda: app.ledger()["ledger"].get("ord-2:charge"), timeout=30, message="the second order")


def test_singleton_skip_runs_once_while_active(two_workers: tuple[Server, App]) -> None:
    server, app = two_workers
    blast(server, {"name": "compat/single-skip", "data": {"user": "u-skip", "seconds": 3}})
    wait_until(lambda: app.ledger()["ledger"].get("u-skip:single-skip"), timeout=30, message="the singleton run")
    time.sleep(2)
    assert len(app.ledger()["ledger"]["u-skip:single-skip"]) == 1
    # Once it has finished, the key is free again.
    wait_until(lambda: not [r for r in server.get("/v1/runs?status=Running&limit=200")["data"]
                            if r["function_slug"] == "py-compat-singleton-skip"], timeout=30, message="run end")
    event_id = server.send("compat/single-skip", {"user": "u-skip", "seconds": 0})
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed"


def test_singleton_cancel_replaces_the_active_run(two_workers: tuple[Server, App]) -> None:
    server, app = two_workers
    first = server.send("compat/single-cancel", {"user": "u-c", "n": 1, "seconds": 30})
    [run1] = server.wait_runs(first, terminal=False)
    wait_until(lambda: app.count(run1["run_id"], "first") == 1, timeout=20, message="first run started")
    second = server.send("compat/single-cancel", {"user": "u-c", "n": 2, "seconds": 0})
    [done] = server.wait_runs(second, timeout=30)
    assert done["status"] == "Completed" and done["output"] == 2
    assert server.runs_for(first)[0]["status"] == "Cancelled"


def test_finish_timeout_cancels_a_slow_run(two_workers: tuple[Server, App]) -> None:
    server, _ = two_workers
    event_id = server.send("compat/finish-timeout")
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Cancelled"
    assert "timeouts.finish" in run["error"]["message"]
