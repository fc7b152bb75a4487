"""The queue's order with the official Python SDK (issue 26), judged from the app's own records:
started runs finish before newer ones start, a flooded tenant does not hold up another tenant or
another function, and a healthy run of 1,000 keyed runs needs no rescue and misses no wake-up."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.compat.conftest import App, Server, start_server, sync_via_put
from tests.helpers.procs import free_port, start_process, wait_http, wait_until

pytestmark = pytest.mark.compat
QUEUE_FUNCTIONS = 4


@pytest.fixture(scope="module")
def queue_stack(module_database_url: str) -> Iterator[tuple[Server, App]]:
    server = start_server(module_database_url)
    app = None
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {"INNGEST_DEV": server.url, "INNGEST_BASE_URL": server.url, "INNGEST_SIGNING_KEY": "",
               "INNGEST_EVENT_KEY": "", "PY_APP_ID": "py-queue"}
        argv = [sys.executable, "-m", "uvicorn", "tests.compat.apps.py_queue_app:app", "--host", "127.0.0.1",
                "--port", str(port), "--log-level", "warning"]
        proc = start_process("py-queue-app", argv, env=env, url=base)
        wait_http(proc, "/ledger", timeout=60)
        app = App(proc, base + "/api/inngest", "py-queue", base)
        sync_via_put(app, server, expect_functions=QUEUE_FUNCTIONS)
        yield server, app
    finally:
        if app:
            app.proc.terminate()
        server.proc.terminate()


def records(app: App, fn: str, what: str) -> list[dict[str, Any]]:
    return [r for r in httpx.get(app.base + "/ledger", timeout=30).json()["records"]
            if r["fn"] == fn and r["what"] == what]


def send_many(server: Server, events: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    with server.client() as c:
        for i in range(0, len(events), 1000):
            r = c.post("/e/key", json=events[i:i + 1000])
            assert r.status_code == 200, r.text
            ids += r.json()["ids"]
    return ids


def housekeeping(server: Server) -> dict[str, float]:
    with server.client() as c:
        text = c.get("/metrics").text
    return {m[1]: float(m[2]) for m in re.finditer(r"^(pgqueue_\w+_total) (\S+)$", text, re.M)}


def test_started_runs_finish_before_newer_runs_start(queue_stack: tuple[Server, App]) -> None:
    """concurrency 2, 30 runs of three 0.3 s steps sent at once: each of the first four runs ends
    within 5 s of being sent (ideally ~1 s and ~2 s), every run completes, never more than two steps
    run at once."""
    server, app = queue_stack
    sent = time.time()
    ids = send_many(server, [{"name": "queue/ordered", "data": {"n": n}} for n in range(30)])
    wait_until(lambda: len(records(app, "ordered", "end")) == 30, timeout=90, message="30 ordered runs")
    ends = sorted(r["at"] - sent for r in records(app, "ordered", "end"))
    first = [round(e, 2) for e in ends[:4]]
    print(f"ordered: the first four runs ended {first} s after sending, the last {ends[-1]:.2f} s")
    assert ends[3] < 5.0, f"the first four runs ended {first} s after they were sent"
    runs = [run for event_id in ids for run in server.runs_for(event_id)]
    assert len(runs) == 30 and {r["status"] for r in runs} == {"Completed"}
    # The limit held: never more than two steps running at once.
    steps = [(r["at"], r["until"]) for r in records(app, "ordered", "step")]
    assert len(steps) == 90
    points = sorted([(s, 1) for s, _ in steps] + [(e, -1) for _, e in steps])
    running = peak = 0
    for _, d in points:
        running += d
        peak = max(peak, running)
    assert peak <= 2


def test_a_flooded_tenant_does_not_hold_up_another(queue_stack: tuple[Server, App]) -> None:
    """5,000 runs queued for tenant A (five at a time), then 10 for tenant B and 10 of another
    function: B's and the other function's runs all start within 2 s of being sent."""
    server, app = queue_stack
    send_many(server, [{"name": "queue/tenant", "data": {"key": "A", "n": n}} for n in range(5000)])
    wait_until(lambda: len(records(app, "tenant", "start")) >= 20, timeout=60, message="tenant A started")
    sent = time.time()
    send_many(server, [{"name": "queue/tenant", "data": {"key": "B", "n": n}} for n in range(10)]
              + [{"name": "queue/neighbour", "data": {"n": n}} for n in range(10)])
    wait_until(lambda: len([r for r in records(app, "tenant", "start") if r["key"] == "B"]) == 10
               and len(records(app, "neighbour", "start")) == 10, timeout=30, message="B and the neighbour")
    b = [r["at"] - sent for r in records(app, "tenant", "start") if r["key"] == "B"]
    other = [r["at"] - sent for r in records(app, "neighbour", "start")]
    print(f"flood: tenant B started within {max(b):.2f} s, the other function within {max(other):.2f} s")
    assert max(b) < 2.0, f"tenant B's runs started {sorted(round(x, 2) for x in b)} s after they were sent"
    assert max(other) < 2.0, f"the other function's runs started {sorted(round(x, 2) for x in other)} s after"
    a_started = len([r for r in records(app, "tenant", "start") if r["key"] == "A"])
    assert a_started < 5000, "tenant A was still flooded while B ran"
    # What is left of A's flood is cancelled, so the next test starts on a quiet queue.
    [fn] = [f for f in server.functions("py-queue") if f["slug"].endswith("tenant")]
    with server.client() as c:
        r = c.post("/v1/cancellations", json={"app_id": "py-queue", "function_id": fn["id"]})
    assert r.status_code == 201, r.text
    wait_until(lambda: server.get("/v1/metrics")["data"]["runs_queued"] == 0, timeout=60,
               message="A's flood cancelled")
    time.sleep(2.5)  # a rescuer round: cancelling the flood missed no wake-up either
    assert "missed wake-up" not in server.proc.log()


def test_a_healthy_keyed_workload_needs_no_rescue(queue_stack: tuple[Server, App]) -> None:
    """1,000 runs of two steps over 20 keys (2 at a time per key, 8 per function): all complete,
    the rescuer hands back no lease and unparks nothing (no wake-up was missed)."""
    server, app = queue_stack
    before = housekeeping(server)
    log_from = server.proc.log_path.stat().st_size
    ids = send_many(server, [{"name": "queue/mixed", "data": {"key": f"k{n % 20}", "n": n}}
                             for n in range(1000)])
    wait_until(lambda: len(records(app, "mixed", "end")) == 1000, timeout=240, message="1,000 mixed runs")
    time.sleep(2.5)  # at least one rescuer round after the last run
    after = housekeeping(server)
    assert after["pgqueue_missed_unparks_total"] == before["pgqueue_missed_unparks_total"]
    assert after["pgqueue_rescued_leases_total"] == before["pgqueue_rescued_leases_total"]
    with open(server.proc.log_path, errors="replace") as f:
        f.seek(log_from)
        log = f.read()
    assert "whose lease expired" not in log and "missed wake-up" not in log, log[-3000:]
    sample = ids[::97]
    assert {server.runs_for(i)[0]["status"] for i in sample} == {"Completed"}
