"""The official Python SDK (`inngest` 0.5.x) against pgqueue, in dev and production mode."""

from __future__ import annotations

import time

import httpx

from pgqueue.protocol import signing
from tests.compat.conftest import EVENT_KEY, App, Server
from tests.helpers.procs import wait_until

pytestmark = __import__("pytest").mark.compat


def test_sync_lists_every_function(py_stack: tuple[Server, App]) -> None:
    server, app = py_stack
    slugs = {f["slug"] for f in server.functions(app.app_id)}
    assert {"py-compat-three-steps", "py-compat-always-fails", "py-compat-always-fails-failure"} <= slugs
    failure_fn = next(f for f in server.functions(app.app_id) if f["slug"] == "py-compat-always-fails-failure")
    assert failure_fn["triggers"][0]["event"] == "inngest/function.failed"


def test_three_sequential_steps_run_once_each(py_stack: tuple[Server, App]) -> None:
    server, app = py_stack
    event_id = server.send("compat/three", {"echo": "hi"})
    [run] = server.wait_runs(event_id)
    assert run["status"] == "Completed", run
    assert run["output"] == {"a": 1, "b": 2, "c": "three", "echo": "hi"}
    for step in ("a", "b", "c"):
        assert app.count(run["run_id"], step) == 1, step
    jobs = server.get(f"/v1/runs/{run['run_id']}/jobs")["data"]
    assert [j["name"] for j in jobs] == ["a", "b", "c"]
    assert [j["output"] for j in jobs] == [1, 2, "three"]
    assert server.get(f"/v1/runs/{run['run_id']}")["data"]["status"] == "Completed"


def test_parallel_steps(py_stack: tuple[Server, App]) -> None:
    server, app = py_stack
    event_id = server.send("compat/parallel")
    [run] = server.wait_runs(event_id)
    assert run["status"] == "Completed", run
    assert run["output"] == ["L", "R", "done"]
    for step in ("left", "right", "after"):
        assert app.count(run["run_id"], step) == 1, step


def test_sleep_parks_the_run(py_stack: tuple[Server, App]) -> None:
    server, _ = py_stack
    event_id = server.send("compat/sleep", {"seconds": 1})
    [running] = server.wait_runs(event_id, terminal=False)
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed", run
    assert run["output"]["slept"] >= 1.0
    assert running["run_id"] == run["run_id"]


def test_retries_then_success(py_stack: tuple[Server, App]) -> None:
    server, app = py_stack
    event_id = server.send("compat/flaky", {"fail_times": 2})
    [run] = server.wait_runs(event_id, timeout=60)
    assert run["status"] == "Completed", run
    assert run["output"] == "ok after 3"
    assert app.count(run["run_id"], "unstable") == 3


def test_non_retriable_error_fails_at_once(py_stack: tuple[Server, App]) -> None:
    server, app = py_stack
    event_id = server.send("compat/nonretriable")
    [run] = server.wait_runs(event_id)
    assert run["status"] == "Failed", run
    assert "this cannot work" in str(run["output"])
    assert app.count(run["run_id"], "body") == 1


def test_exhausted_retries_fail_and_on_failure_runs_once(py_stack: tuple[Server, App]) -> None:
    server, app = py_stack
    event_id = server.send("compat/fail", {"marker": event_id_marker()})
    [run] = server.wait_runs(event_id, timeout=60)
    assert run["status"] == "Failed", run
    assert app.count(run["run_id"], "boom") == 2  # retries=1 -> two attempts

    def failures() -> list[dict]:
        return [f for f in app.ledger()["failures"] if f["data"].get("run_id") == run["run_id"]]

    wait_until(failures, timeout=30, message="onFailure handler")
    time.sleep(0.5)
    [failure] = failures()
    assert failure["event"] == "inngest/function.failed"
    assert failure["data"]["function_id"] == "py-compat-always-fails"
    assert failure["data"]["error"]["message"]


def event_id_marker() -> str:
    return str(time.monotonic_ns())


def test_trigger_expression_filters_events(py_stack: tuple[Server, App]) -> None:
    server, _ = py_stack
    no = server.send("compat/plan", {"plan": "free", "seats": 10})
    few = server.send("compat/plan", {"plan": "pro", "seats": 1})
    yes = server.send("compat/plan", {"plan": "pro", "seats": 3})
    [run] = server.wait_runs(yes)
    assert run["output"] == "pro"
    assert server.runs_for(no) == []
    assert server.runs_for(few) == []


def test_wildcard_trigger(py_stack: tuple[Server, App]) -> None:
    server, _ = py_stack
    event_id = server.send("compat-wild/anything.here")
    [run] = server.wait_runs(event_id)
    assert run["output"] == "compat-wild/anything.here"


def test_wrong_keys_are_refused_on_both_sides(py_stack: tuple[Server, App]) -> None:
    server, app = py_stack
    if server.mode != "serve":
        return
    # Server side: a wrong event key, no bearer, a wrong bearer.
    r = httpx.post(f"{server.url}/e/not-the-key", json={"name": "compat/three"})
    assert r.status_code == 401 and r.json() == {"error": "Event key not found", "status": 401}
    assert httpx.get(f"{server.url}/v1/runs").status_code == 401
    wrong = "signkey-test-" + "ff" * 32
    assert httpx.get(f"{server.url}/v1/runs", headers={"authorization": f"Bearer {wrong}"}).status_code == 401
    r = httpx.post(f"{server.url}/fn/register", json={"appName": "x", "url": "http://x", "functions": []},
                   headers={"authorization": f"Bearer {signing.hashed_key(wrong)}"})
    assert r.status_code == 401
    # App side: the SDK refuses a call signed with another key.
    body = b'{"event":{"name":"compat/three","data":{}},"events":[],"steps":{},"ctx":{},"use_api":false}'
    r = httpx.post(f"{app.url}?fnId=py-compat-three-steps&stepId=step", content=body,
                   headers={"x-inngest-signature": signing.sign(body, wrong), "content-type": "application/json"})
    assert r.status_code == 401
    assert EVENT_KEY  # the right key is what every other test used
