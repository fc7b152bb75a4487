"""Flow control end to end with the official Python SDK, judged from the app's own records."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.compat.conftest import App, Server, start_server, sync_via_put
from tests.helpers.procs import free_port, start_process, wait_http, wait_until

pytestmark = pytest.mark.compat
FLOW_FUNCTIONS = 8


def start_flow_app(server: Server) -> App:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"INNGEST_DEV": server.url, "INNGEST_BASE_URL": server.url, "INNGEST_SIGNING_KEY": "",
           "INNGEST_EVENT_KEY": "", "PY_APP_ID": "py-flow"}
    argv = [sys.executable, "-m", "uvicorn", "tests.compat.apps.py_flow_app:app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning"]
    proc = start_process("py-flow-app", argv, env=env, url=base)
    wait_http(proc, "/ledger", timeout=60)
    return App(proc, base + "/api/inngest", "py-flow", base)


@pytest.fixture(scope="module")
def flow_stack(module_database_url: str) -> Iterator[tuple[Server, App]]:
    server = start_server(module_database_url)
    app = None
    try:
        app = start_flow_app(server)
        sync_via_put(app, server, expect_functions=FLOW_FUNCTIONS)
        yield server, app
    finally:
        if app:
            app.proc.terminate()
        server.proc.terminate()


def spans(app: App, fn: str) -> list[dict[str, Any]]:
    return [s for s in httpx.get(app.base + "/ledger").json()["spans"] if s["fn"] == fn]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = cur = 0
    for _, d in points:
        cur += d
        best = max(best, cur)
    return best


def send_many(server: Server, events: list[dict[str, Any]]) -> list[str]:
    with server.client() as c:
        r = c.post("/e/key", json=events)
    assert r.status_code == 200, r.text
    return list(r.json()["ids"])


def test_concurrency_key_limit_two(flow_stack: tuple[Server, App]) -> None:
    server, app = flow_stack
    send_many(server, [{"name": "flow/conc", "data": {"key": f"k{i % 3}", "n": i, "seconds": 0.2}} for i in range(18)])
    wait_until(lambda: len(spans(app, "conc-key")) == 18, timeout=60, message="18 runs")
    per_key: dict[str, list[tuple[float, float]]] = {}
    for s in spans(app, "conc-key"):
        per_key.setdefault(s["key"], []).append((s["start"], s["end"]))
    assert {k: max_overlap(v) for k, v in per_key.items()} == {"k0": 2, "k1": 2, "k2": 2}


def test_throttle_delays_starts(flow_stack: tuple[Server, App]) -> None:
    """limit 1 per second, burst 1: limit + burst = 2 start at once, then one per second."""
    server, app = flow_stack
    ids = send_many(server, [{"name": "flow/throttle", "data": {"n": i}} for i in range(4)])
    wait_until(lambda: len(spans(app, "throttled")) == 4, timeout=30, message="4 throttled runs")
    starts = sorted(s["start"] for s in spans(app, "throttled"))
    assert starts[1] - starts[0] < 0.9  # the burst: not spaced
    assert starts[2] - starts[0] >= 0.9 and starts[3] - starts[2] >= 0.9
    assert all(server.runs_for(i)[0]["status"] == "Completed" for i in ids)  # delayed, not dropped


def test_debounce_runs_once_with_the_last_event(flow_stack: tuple[Server, App]) -> None:
    server, app = flow_stack
    ids = []
    for n in range(4):
        ids.append(server.send("flow/debounce", {"key": "d1", "n": n}))
        time.sleep(0.3)
    [run] = server.wait_runs(ids[-1], timeout=30)
    assert run["output"] == 3
    time.sleep(1.5)
    assert [s["n"] for s in spans(app, "debounced") if s["key"] == "d1"] == [3]
    for superseded in ids[:-1]:
        assert server.runs_for(superseded) == []
        assert "superseded" in server.get(f"/v1/events/{superseded}")["data"]["skip_reason"]


def test_start_timeout_counts_from_the_end_of_the_debounce(flow_stack: tuple[Server, App]) -> None:
    """debounce 2 s, timeouts.start 1 s: the run is released after 2 s (3 s after the first of two
    events) and starts at once, so it must run, not be cancelled for waiting in its window."""
    server, app = flow_stack
    first = server.send("flow/debounce-start-timeout", {"key": "st", "n": 1})
    time.sleep(1.2)
    last = server.send("flow/debounce-start-timeout", {"key": "st", "n": 2})
    [run] = server.wait_runs(last, timeout=30)
    assert run["status"] == "Completed" and run["output"] == 2, run
    assert server.runs_for(first) == []
    assert [s["n"] for s in spans(app, "debounced-start-timeout")] == [2]


def test_rate_limit_skips_events_over_the_limit(flow_stack: tuple[Server, App]) -> None:
    """limit 2 per 60 s: one run per 30 s bucket, so of five events sent at once only the first runs."""
    server, app = flow_stack
    ids = [server.send("flow/rate", {"key": "r1", "n": n}) for n in range(5)]
    other = server.send("flow/rate", {"key": "r2", "n": 9})
    server.wait_runs(ids[0], timeout=30)
    server.wait_runs(other, timeout=30)
    time.sleep(1)
    assert sorted(s["n"] for s in spans(app, "rate-limited") if s["key"] == "r1") == [0]
    for skipped in ids[1:]:
        assert server.runs_for(skipped) == []
        assert "rate limit" in server.get(f"/v1/events/{skipped}")["data"]["skip_reason"]


def test_batch_by_size_and_by_timeout(flow_stack: tuple[Server, App]) -> None:
    server, app = flow_stack
    ids = send_many(server, [{"name": "flow/batch", "data": {"n": n}} for n in range(4)])
    [full] = server.wait_runs(ids[0], timeout=30)
    assert full["output"] == [0, 1, 2]
    for event_id in ids[:3]:  # the batch run is listed under every event of the batch
        assert [r["run_id"] for r in server.runs_for(event_id)] == [full["run_id"]]
    [partial] = server.wait_runs(ids[3], timeout=30)  # alone, started by the 2 s timeout
    assert partial["output"] == [3]
    sizes = sorted(s["size"] for s in spans(app, "batched"))
    assert sizes == [1, 3]


def test_priority_orders_queued_work(flow_stack: tuple[Server, App]) -> None:
    server, app = flow_stack
    # One slow run holds the only slot while the rest queue up behind it. A positive priority
    # moves a run ahead; a negative one delays it by that many seconds (as if enqueued later).
    first = server.send("flow/prio", {"n": "first", "prio": 0})
    server.wait_runs(first, terminal=False)
    time.sleep(0.1)
    send_many(server, [{"name": "flow/prio", "data": {"n": n, "prio": p}}
                       for n, p in (("low", -2), ("mid", 0), ("high", 300))])
    wait_until(lambda: len(spans(app, "prioritized")) == 4, timeout=30, message="4 prioritized runs")
    order = [s["n"] for s in sorted(spans(app, "prioritized"), key=lambda s: s["start"])]
    assert order == ["first", "high", "mid", "low"]


def test_start_timeout_cancels_a_run_stuck_behind_a_limit(flow_stack: tuple[Server, App]) -> None:
    server, app = flow_stack
    holder = server.send("flow/start-timeout", {"n": "holder", "seconds": 3})
    server.wait_runs(holder, terminal=False)
    time.sleep(0.3)
    waiting = server.send("flow/start-timeout", {"n": "waiting", "seconds": 0})
    [cancelled] = server.wait_runs(waiting, timeout=30)
    assert cancelled["status"] == "Cancelled" and "timeouts.start" in cancelled["error"]["message"]
    [done] = server.wait_runs(holder, timeout=30)
    assert done["status"] == "Completed"
    assert [s["n"] for s in spans(app, "start-timeout")] == ["holder"]
