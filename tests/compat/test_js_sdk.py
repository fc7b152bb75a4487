"""The official JS SDK (`inngest` 4.24.0 on express) against pgqueue, in dev and production mode.

The twin of test_python_sdk.py: the same functions (tests/compat/js_app/server.js), the same
expectations, plus the SDK's own `inngest.send()` path.
"""

from __future__ import annotations

import time

import httpx
import pytest

from pgqueue.protocol import signing
from tests.compat import js_fixtures
from tests.compat.conftest import EVENT_KEY, SIGNING_KEY, App, Server
from tests.helpers.procs import wait_until

pytestmark = pytest.mark.compat
js_stack = js_fixtures.js_stack  # the fixture, by name


def test_sync_lists_every_function(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    fns = {f["slug"]: f for f in server.functions(app.app_id)}
    local_ids = ("three-steps", "parallel", "sleeper", "flaky", "non-retriable", "always-fails",
                 "pro-only", "wildcard", "always-fails-failure", "waiter", "waiter-if", "cancellable",
                 "child", "invoker", "cross-invoker", "limited-child", "fan-invoker",
                 # operations (test_js_ops.py)
                 "signal-waiter", "signal-sender", "fetcher", "ai-infer", "racer", "race-timer", "deferred",
                 "deferrer")
    assert {f"js-compat-{fn}" for fn in local_ids} == set(fns)
    failure_fn = fns["js-compat-always-fails-failure"]
    assert failure_fn["triggers"][0]["event"] == "inngest/function.failed"
    assert fns["js-compat-flaky"]["retries"] == 3
    assert fns["js-compat-always-fails"]["retries"] == 1
    assert fns["js-compat-pro-only"]["triggers"] == [
        {"event": "compat/plan", "expression": "event.data.plan == 'pro' && event.data.seats > 2"}
    ]
    assert fns["js-compat-wildcard"]["triggers"] == [{"event": "compat-wild/*"}]


def test_three_sequential_steps_run_once_each(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
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


def test_parallel_steps(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    event_id = server.send("compat/parallel")
    [run] = server.wait_runs(event_id)
    assert run["status"] == "Completed", run
    assert run["output"] == ["L", "R", "done"]
    for step in ("left", "right", "after"):
        assert app.count(run["run_id"], step) == 1, step


def test_sleep_parks_the_run(js_stack: tuple[Server, App]) -> None:
    server, _ = js_stack
    event_id = server.send("compat/sleep", {"seconds": 1})
    [running] = server.wait_runs(event_id, terminal=False)
    [run] = server.wait_runs(event_id, timeout=30)
    assert run["status"] == "Completed", run
    assert run["output"]["slept"] >= 1.0
    assert running["run_id"] == run["run_id"]


def test_retries_then_success(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    event_id = server.send("compat/flaky", {"fail_times": 2})
    [run] = server.wait_runs(event_id, timeout=60)
    assert run["status"] == "Completed", run
    assert run["output"] == "ok after 3"
    assert app.count(run["run_id"], "unstable") == 3


def test_non_retriable_error_fails_at_once(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    event_id = server.send("compat/nonretriable")
    [run] = server.wait_runs(event_id)
    assert run["status"] == "Failed", run
    assert "this cannot work" in str(run["output"])
    assert app.count(run["run_id"], "body") == 1


def test_exhausted_retries_fail_and_on_failure_runs_once(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
    event_id = server.send("compat/fail", {"marker": str(time.monotonic_ns())})
    [run] = server.wait_runs(event_id, timeout=60)
    assert run["status"] == "Failed", run
    assert app.count(run["run_id"], "boom") == 2  # retries=1 -> two attempts

    def failures() -> list[dict]:
        return [f for f in app.ledger()["failures"] if f["data"].get("run_id") == run["run_id"]]

    wait_until(failures, timeout=30, message="onFailure handler")
    time.sleep(0.5)
    [failure] = failures()
    assert failure["event"] == "inngest/function.failed"
    assert failure["data"]["function_id"] == "js-compat-always-fails"
    assert failure["data"]["error"]["message"]


def test_trigger_expression_filters_events(js_stack: tuple[Server, App]) -> None:
    server, _ = js_stack
    no = server.send("compat/plan", {"plan": "free", "seats": 10})
    few = server.send("compat/plan", {"plan": "pro", "seats": 1})
    yes = server.send("compat/plan", {"plan": "pro", "seats": 3})
    [run] = server.wait_runs(yes)
    assert run["output"] == "pro"
    assert server.runs_for(no) == []
    assert server.runs_for(few) == []


def test_wildcard_trigger(js_stack: tuple[Server, App]) -> None:
    server, _ = js_stack
    event_id = server.send("compat-wild/anything.here")
    [run] = server.wait_runs(event_id)
    assert run["output"] == "compat-wild/anything.here"


def test_sdk_send_gets_ids_and_starts_a_run(js_stack: tuple[Server, App]) -> None:
    """`inngest.send()` only succeeds if the Event API answers `{"ids": [...], "status": 200}`."""
    server, app = js_stack
    r = httpx.post(app.base + "/send", timeout=60)
    assert r.status_code == 200, f"{r.text}\n{server.proc.log()}"
    [event_id] = r.json()["ids"]
    [run] = server.wait_runs(event_id)
    assert run["status"] == "Completed", run
    assert run["output"] == {"a": 1, "b": 2, "c": "three", "echo": "from-js"}


def test_wrong_keys_are_refused_on_both_sides(js_stack: tuple[Server, App]) -> None:
    server, app = js_stack
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
    # App side: the SDK (cloud mode) refuses a call signed with another key, or not signed at all.
    body = (b'{"ctx":{"attempt":0,"run_id":"01J0000000000000000000000","stack":{"current":0,"stack":[]}},'
            b'"event":{"data":{},"name":"compat/three"},"events":[],"steps":{},"use_api":false,"version":-1}')
    url = f"{app.url}?fnId=js-compat-three-steps&stepId=step"
    json_type = {"content-type": "application/json"}
    r = httpx.post(url, content=body, headers={"x-inngest-signature": signing.sign(body, wrong), **json_type})
    assert r.status_code == 401
    r = httpx.post(url, content=body, headers=json_type)
    assert r.status_code == 401
    # ...and runs it when signed with the right one (the server's key).
    right = signing.sign(body, SIGNING_KEY)
    r = httpx.post(url, content=body, headers={"x-inngest-signature": right, **json_type})
    assert r.status_code == 206, r.text
    assert EVENT_KEY  # the right key is what every other test used

