"""Coordination with the official Python SDK: wait_for_event, cancel on events, invoke."""

from __future__ import annotations

import random
import string
import time

import pytest

from tests.compat.conftest import App, Server
from tests.compat.invoke_checks import fan_invoke_under_a_limit
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.compat


def _wait_parked(server: Server, app: App, event_id: str) -> str:
    [run] = server.wait_runs(event_id, terminal=False)
    wait_until(lambda: app.count(run["run_id"], "before") == 1, timeout=20, message="step before the wait")
    time.sleep(0.5)  # let the pause be stored
    return str(run["run_id"])


def test_wait_for_event_matches_only_its_own_id(py_stack: tuple[Server, App]) -> None:
    server, app = py_stack
    first = server.send("compat/wait", {"id": "w1"})
    second = server.send("compat/wait", {"id": "w2"})
    _wait_parked(server, app, first)
    _wait_parked(server, app, second)
    server.send("compat/approved", {"id": "nobody"})
    server.send("compat/approved", {"id": "w2", "by": "bob"})
    [run2] = server.wait_runs(second)
    assert run2["status"] == "Completed"
    assert run2["output"] == {"name": "compat/approved", "data": {"id": "w2", "by": "bob"}}
    assert server.runs_for(first)[0]["status"] == "Running"
    server.send("compat/approved", {"id": "w1", "by": "ann"})
    [run1] = server.wait_runs(first)
    assert run1["output"]["data"] == {"id": "w1", "by": "ann"}


def test_wait_for_event_times_out_with_null(py_stack: tuple[Server, App]) -> None:
    server, _ = py_stack
    event_id = server.send("compat/wait", {"id": "t1", "timeout": 1})
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed" and run["output"] is None


def test_event_sent_before_the_pause_does_not_match(py_stack: tuple[Server, App]) -> None:
    server, app = py_stack
    server.send("compat/approved", {"id": "early"})
    time.sleep(0.3)
    event_id = server.send("compat/wait", {"id": "early", "timeout": 2})
    _wait_parked(server, app, event_id)
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["output"] is None  # timed out: the earlier event was not taken


def test_hostile_values_match_by_value_only(py_stack: tuple[Server, App]) -> None:
    server, app = py_stack
    noise = "".join(random.Random(3).choice(string.printable) for _ in range(100_000))
    hostile = "x'; DROP TABLE pgqueue.runs; -- \" \\u0041 ünï €" + noise
    event_id = server.send("compat/wait", {"id": hostile})
    _wait_parked(server, app, event_id)
    server.send("compat/approved", {"id": hostile[:-1]})
    server.send("compat/approved", {"id": hostile, "ok": True})
    [run] = server.wait_runs(event_id)
    assert run["output"]["data"]["ok"] is True
    assert server.get("/v1/runs?limit=1")["data"]  # tables intact


def test_cancel_on_matching_event(py_stack: tuple[Server, App]) -> None:
    server, app = py_stack
    keep = server.send("compat/cancellable", {"id": "keep", "sleep": 2})
    stop = server.send("compat/cancellable", {"id": "stop", "sleep": 30})
    [run] = server.wait_runs(stop, terminal=False)
    wait_until(lambda: app.count(run["run_id"], "first") == 1, timeout=20, message="first step")
    server.send("compat/cancel", {"id": "stop"})
    [cancelled] = server.wait_runs(stop, timeout=20)
    assert cancelled["status"] == "Cancelled"
    [kept] = server.wait_runs(keep, timeout=30)
    assert kept["status"] == "Completed"
    assert app.count(run["run_id"], "second") == 0


def test_invoke_returns_the_child_result(py_stack: tuple[Server, App]) -> None:
    server, _ = py_stack
    event_id = server.send("compat/invoke", {"n": 21})
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed", run
    assert run["output"] == {"result": {"doubled": 42, "invoked_by": "inngest/function.invoked"}}


def test_invoke_child_failure_propagates(py_stack: tuple[Server, App]) -> None:
    server, _ = py_stack
    event_id = server.send("compat/invoke", {"mode": "fail"})
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed", run
    assert run["output"]["message"] and "child failed on purpose" in run["output"]["message"]


def test_invoke_timeout(py_stack: tuple[Server, App]) -> None:
    server, _ = py_stack
    event_id = server.send("compat/invoke", {"mode": "slow", "timeout": 1})
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed", run
    assert run["output"]["error"] == "InngestInvokeTimeoutError"


def test_rest_cancel_while_a_step_is_in_flight_discards_its_result(py_stack: tuple[Server, App]) -> None:
    server, app = py_stack
    event_id = server.send("compat/slow", {"seconds": 2})
    [run] = server.wait_runs(event_id, terminal=False)
    wait_until(lambda: app.count(run["run_id"], "slow") == 1, timeout=20, message="slow step in flight")
    with server.client() as c:
        r = c.delete(f"/v1/runs/{run['run_id']}")
    assert r.status_code == 200 and r.json()["data"]["status"] == "Cancelled"
    time.sleep(3)  # the step finishes in the app; its answer must change nothing
    final = server.get(f"/v1/runs/{run['run_id']}")["data"]
    assert final["status"] == "Cancelled"
    assert server.get(f"/v1/runs/{run['run_id']}/jobs")["data"] == []  # the in-flight output was discarded
    assert app.count(run["run_id"], "after") == 0


def test_invoke_starts_one_child_each_under_its_concurrency_limit(py_stack: tuple[Server, App]) -> None:
    fan_invoke_under_a_limit(*py_stack, child_slug="py-compat-limited-child")


def _wait_run(server: Server, run_id: str) -> dict:
    def ended() -> dict | None:
        run = server.get(f"/v1/runs/{run_id}")["data"]
        return run if run["status"] not in ("Queued", "Running") else None

    return wait_until(ended, timeout=60, message=f"run {run_id} to end")


def test_direct_invoke_and_replay_obey_the_concurrency_limit(py_stack: tuple[Server, App]) -> None:
    """POST /invoke and replays start runs the way events do: `concurrency limit 1` holds."""
    server, _ = py_stack
    tag = "".join(random.Random().choice(string.ascii_lowercase) for _ in range(8))
    with server.client() as c:
        invoked = []
        for i in range(3):
            body = {"data": {"tag": f"{tag}-{i}", "seconds": 0.4}}
            r = c.post("/invoke/py-compat-limited-child", json=body)
            assert r.status_code == 200 and r.json()["run_id"] and r.json()["skip_reason"] is None, r.text
            invoked.append(r.json()["run_id"])
        firsts = [_wait_run(server, run_id) for run_id in invoked]
        replays = []
        for run_id in invoked:
            r = c.post(f"/v1/runs/{run_id}/replay")
            assert r.status_code in (200, 201), r.text
            replays.append(r.json()["data"]["run_id"])
    seconds = [_wait_run(server, run_id) for run_id in replays]
    assert all(r["status"] == "Completed" for r in firsts + seconds), firsts + seconds
    spans = sorted((r["output"]["started"], r["output"]["ended"]) for r in seconds)
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans
    spans = sorted((r["output"]["started"], r["output"]["ended"]) for r in firsts)
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans


def test_invoke_of_a_function_that_does_not_start_fails_the_step(py_stack: tuple[Server, App]) -> None:
    """A paused target starts no run: the invoke step fails at once with the reason (as Inngest
    fails it for a rate-limited target), instead of the caller waiting for ever."""
    server, _ = py_stack
    with server.client() as c:
        assert c.post("/v1/functions/py-compat-child/pause").status_code == 200
        try:
            event_id = server.send("compat/invoke", {"n": 2, "timeout": 600})
            [run] = server.wait_runs(event_id, timeout=30)
        finally:
            assert c.post("/v1/functions/py-compat-child/resume").status_code == 200
    assert run["status"] == "Completed", run
    assert "did not start" in run["output"]["message"] and "paused" in run["output"]["message"], run
